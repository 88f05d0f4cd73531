//! A self-spawned worker: the app's own executable, started again in worker mode.
//!
//! ```sh
//! cargo run --example self_spawn
//! ```
//!
//! `main` first calls `bincrew::init!()` and `bincrew::run_worker(..)`. In the app that call
//! returns at once; in a process the app started as worker `stats` it serves requests and never
//! returns, so the rest of `main` only ever runs in the app. The example keeps several requests
//! in flight on one worker, checks every answer, and shuts the worker down cleanly.

use bincrew::{RequestArgs, Worker};
use futures::future::join_all;
use serde::{Deserialize, Serialize};

/// The worker's name: the app starts the worker by it, and the worker serves it.
const STATS: &str = "stats";

/// What the app asks: statistics about a text.
#[derive(Debug, Serialize, Deserialize)]
struct Text {
    body: String,
}

/// What the worker answers.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Stats {
    words: usize,
    longest: String,
    /// The process that did the work, to show that it is not the app.
    pid: u32,
}

/// The handler. It runs in the worker process, never in the app: code here may crash without
/// taking the app down. Handlers can be `async` (as here) or plain functions
/// (`bincrew::run_worker_blocking`).
async fn stats(args: RequestArgs<Text>) -> Stats {
    let body = args.request.body;
    let longest = body
        .split_whitespace()
        .fold("", |longest, word| {
            if word.len() > longest.len() {
                word
            } else {
                longest
            }
        })
        .to_owned();
    Stats {
        words: body.split_whitespace().count(),
        longest,
        pid: std::process::id(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Records this executable's package, version and build id for the handshake. First thing in
    // `main`, in the app and in its workers alike.
    bincrew::init!();
    // In a worker process: serves `stats` and never returns. In the app: returns at once.
    bincrew::run_worker(STATS, stats);

    // From here on, this is the app. Any executor will do; this one is `futures`' simplest.
    futures::executor::block_on(app())
}

async fn app() -> Result<(), Box<dyn std::error::Error>> {
    // Starts this very executable again as worker `stats` (on Linux from /proc/self/exe, so it
    // is the same build even if the file on disk was replaced) and completes the handshake.
    let worker = Worker::<Text, Stats>::start(STATS).await?;
    println!("worker `{STATS}` started: pid {}", worker.id());
    assert_ne!(
        worker.id(),
        std::process::id(),
        "the worker is another process"
    );

    let texts = [
        "the quick brown fox jumps over the lazy dog",
        "a worker process cannot take the app down",
        "several requests in flight at once",
        "",
    ];
    // `run` queues a request and returns its reply, a future. Calling it several times before
    // awaiting keeps all of them in flight: they go out together when the first reply is polled,
    // and the worker runs them on as many threads as it has.
    let replies: Vec<_> = texts
        .iter()
        .map(|body| {
            worker.run(Text {
                body: (*body).to_owned(),
            })
        })
        .collect();
    // Each reply is a `Result`: `Err(RunError)` if the worker crashed, was shut down, or the
    // request timed out or could not be encoded or decoded.
    for (body, result) in texts.iter().zip(join_all(replies).await) {
        let stats = result?;
        println!(
            "{:>2} words, longest {:?}, counted by pid {}: {body:?}",
            stats.words, stats.longest, stats.pid
        );
        assert_eq!(stats.words, body.split_whitespace().count());
        assert_eq!(stats.pid, worker.id());
    }

    // Outside async code, `Worker::start_blocking`, `run_blocking` (or `run(..).wait()`) and
    // `shutdown_blocking` do the same on the calling thread.

    // A graceful shutdown: the worker finishes what is in flight and exits with code 0. `Err`
    // would mean it crashed while draining or had to be killed. (Dropping a `Worker` without
    // shutting it down kills the process instead; either way no process is left behind.)
    worker.shutdown().await?;
    assert!(!worker.is_running());
    println!("worker `{STATS}` shut down cleanly");
    Ok(())
}
