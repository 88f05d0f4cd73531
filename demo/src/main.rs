//! A tour of bincrew: a self-spawned worker, a dedicated worker binary, crashes the app survives,
//! and graceful shutdown.
//!
//! Run it from the workspace root with `cargo run -p bincrew-demo`.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Instant;

use bincrew::{IpcReceiver, IpcSender, RequestArgs, RunError, Worker, WorkerCrashError};
use futures::future::join_all;
use misbehave::Request;
use serde::{Deserialize, Serialize};

type Error = Box<dyn std::error::Error>;

/// The self-spawned worker's name.
const PRIMES: &str = "primes";

/// Count the primes below `below`, reporting how many numbers were checked as it goes.
#[derive(Debug, Serialize, Deserialize)]
struct PrimesRequest {
    below: u64,
    progress: IpcSender<u64>,
}

/// The handler of the `primes` worker; it runs in the worker process, never in the app.
fn count_primes(args: RequestArgs<PrimesRequest>) -> u64 {
    let PrimesRequest { below, progress } = args.request;
    let step = (below / 4).max(1);
    let mut count = 0;
    for n in 0..below {
        if is_prime(n) {
            count += 1;
        }
        if (n + 1).is_multiple_of(step) && n + 1 < below {
            // The app may have stopped listening; the count goes on.
            let _ = progress.send(n + 1);
        }
    }
    count
}

/// Trial division: slow on purpose, so that the work is worth a worker.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let mut d = 5;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

fn main() -> Result<(), Error> {
    bincrew::init!();
    // In a process this app started as worker `primes`, this serves requests and never returns.
    bincrew::Workers::new()
        .blocking_worker(PRIMES, count_primes)
        .run();

    let started = Instant::now();
    futures::executor::block_on(demo())?;
    println!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn demo() -> Result<(), Error> {
    println!("== self-spawned worker `{PRIMES}`: counting primes in parallel");
    // The default policy, Compat::SameBuild, accepts it: it is this very executable.
    let primes = Worker::<PrimesRequest, u64>::start(PRIMES).await?;
    println!("started pid {} ({})", primes.id(), primes.build_info());
    let mut listeners = Vec::new();
    let mut replies = Vec::new();
    for (task, below) in [1_000_000u64, 2_000_000, 3_000_000, 4_000_000]
        .into_iter()
        .enumerate()
    {
        let (progress, events) = bincrew::channel::<u64>()?;
        let label = format!("primes[{task}]");
        listeners.push(listen(events, move |checked| {
            format!("{label}: checked {checked} of {below}")
        }));
        // Sent now, awaited together below: the worker runs as many at once as it has threads.
        replies.push(primes.run(PrimesRequest { below, progress }));
    }
    let results = join_all(replies).await;
    // Progress travels on channels of its own: let it all print before the results.
    join_listeners(listeners);
    for (task, result) in results.into_iter().enumerate() {
        match result {
            Ok(count) => println!("primes[{task}]: {count} primes"),
            Err(e) => println!("primes[{task}]: failed: {e}"),
        }
    }

    println!(
        "\n== dedicated worker binary `{}`: hashing src/",
        hasher::WORKER
    );
    // Found by the locator: beside the demo when deployed, else in the cargo target dir, built
    // first by cargo when it is missing or stale. The policy defaults to the requirement the demo
    // declares in its Cargo.toml (`hasher = "^0.2"`), checked at build time by bincrew-build.
    let hasher = Worker::<hasher::HashRequest, hasher::HashResponse>::builder(hasher::WORKER)
        .binary("hasher")
        .cargo_build(true)
        .start()
        .await?;
    println!("started pid {} ({})", hasher.id(), hasher.build_info());
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src");
    let files = files_under(&src)?;
    let mut listeners = Vec::new();
    let mut replies = Vec::new();
    for path in &files {
        let (progress, events) = bincrew::channel::<u64>()?;
        let label = display_path(path);
        listeners.push(listen(events, move |read| {
            format!("{label}: read {read} bytes")
        }));
        replies.push(hasher.run(hasher::HashRequest::File {
            path: path.clone(),
            progress: Some(progress),
        }));
    }
    let results = join_all(replies).await;
    join_listeners(listeners);
    for (path, result) in files.iter().zip(results) {
        let path = display_path(path);
        match result {
            Ok(Ok(digest)) => println!("{path}: {} bytes, fnv1a {:016x}", digest.len, digest.fnv1a),
            Ok(Err(reason)) => println!("{path}: the worker could not hash it: {reason}"),
            Err(e) => println!("{path}: failed: {e}"),
        }
    }

    println!(
        "\n== `{}` worker: a segfault with requests in flight",
        misbehave::WORKER
    );
    let crashing = start_misbehave().await?;
    println!("started pid {}", crashing.id());
    // Its stderr is not forwarded, but its end is kept for the crash report.
    let said = "misbehave: about to write through a null pointer".to_owned();
    crashing.run(Request::Stderr(said)).await?;
    let in_flight = vec![
        crashing.run(Request::WaitFor("never-released".into())),
        crashing.run(Request::Sleep {
            ms: 30_000,
            reply: "too late".into(),
        }),
        crashing.run(Request::Segfault),
    ];
    let results = join_all(in_flight).await;
    for (request, result) in ["WaitFor", "Sleep", "Segfault"].iter().zip(&results) {
        match result {
            Ok(response) => println!("{request}: answered {response:?}?"),
            Err(RunError::Crashed(report)) => println!("{request}: failed: {report}"),
            Err(e) => println!("{request}: failed otherwise: {e}"),
        }
    }
    if let Some(Err(RunError::Crashed(report))) = results.last() {
        print_report(report);
    }
    match crashing.run(Request::Echo("still there?".into())).await {
        Ok(response) => println!("a later request: answered {response:?}?"),
        Err(e) => println!("a later request fails at once: {e}"),
    }

    println!("\n== a fresh `{}` worker: a panic", misbehave::WORKER);
    let panicking = start_misbehave().await?;
    println!("started pid {}", panicking.id());
    match panicking
        .run(Request::Panic(
            "the parser reached a state it cannot handle".into(),
        ))
        .await
    {
        Ok(response) => println!("Panic: answered {response:?}?"),
        Err(RunError::Crashed(report)) => {
            println!("Panic: failed: {report}");
            print_report(&report);
        }
        Err(e) => println!("Panic: failed otherwise: {e}"),
    }

    println!(
        "\n== a third `{}` worker: the app runs on",
        misbehave::WORKER
    );
    let healthy = start_misbehave().await?;
    println!("started pid {}", healthy.id());
    match healthy
        .run(Request::Echo("hello after two crashes".into()))
        .await
    {
        Ok(response) => println!("Echo: answered {response:?}"),
        Err(e) => println!("Echo: failed: {e}"),
    }

    println!("\n== shutdown");
    report_shutdown(PRIMES, primes.shutdown().await);
    report_shutdown(hasher::WORKER, hasher.shutdown().await);
    report_shutdown("misbehave (third)", healthy.shutdown().await);
    // A worker that crashed cannot shut down cleanly; its shutdown returns the crash report.
    report_shutdown("misbehave (segfaulted)", crashing.shutdown().await);
    report_shutdown("misbehave (panicked)", panicking.shutdown().await);
    Ok(())
}

async fn start_misbehave(
) -> Result<Worker<misbehave::Request, misbehave::Response>, bincrew::StartError> {
    // Stamped by bincrew-build in the same workspace build as this demo, so the default policy
    // (the declared `misbehave = "^0.1"`, or SameBuild) holds.
    Worker::builder(misbehave::WORKER)
        .binary("misbehave")
        .cargo_build(true)
        .forward_stderr(false)
        // Enough handler threads for every request the demo keeps in flight, whatever the machine.
        .parallelism(4)
        .start()
        .await
}

fn print_report(report: &WorkerCrashError) {
    let ended = match (report.signal_name(), report.code(), report.exit) {
        (Some(signal), _, _) => format!("signal {signal}"),
        (None, Some(code), _) => format!("exit code {code}"),
        (None, None, Some(exit)) => exit.to_string(),
        (None, None, None) => "unknown".to_owned(),
    };
    println!(
        "  crash report: worker `{}`, pid {}",
        report.worker, report.pid
    );
    println!("    ended by: {ended}");
    if let Some(message) = &report.panic_message {
        println!("    panic: {message}");
    }
    if let Some(location) = &report.panic_location {
        println!("    at: {location}");
    }
    let lines: Vec<&str> = report
        .stderr_tail
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let plural = if lines.len() == 1 { "" } else { "s" };
    println!("    stderr tail: {} line{plural}", lines.len());
    // The first lines say what happened, the last how it ended; a backtrace may sit between.
    if lines.len() > 4 {
        for line in &lines[..2] {
            println!("      | {line}");
        }
        println!("      | ... {} more lines ...", lines.len() - 3);
        println!("      | {}", lines[lines.len() - 1]);
    } else {
        for line in &lines {
            println!("      | {line}");
        }
    }
}

fn report_shutdown(what: &str, outcome: Result<(), bincrew::ShutdownError>) {
    match outcome {
        Ok(()) => println!("{what}: exited cleanly"),
        Err(e) => println!("{what}: {e}"),
    }
}

/// Prints every value received on `events` until the worker drops its sender, on a thread of its
/// own because `IpcReceiver::recv` blocks.
fn listen(
    events: IpcReceiver<u64>,
    line: impl Fn(u64) -> String + Send + 'static,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while let Ok(value) = events.recv() {
            println!("  progress {}", line(value));
        }
    })
}

fn join_listeners(listeners: Vec<thread::JoinHandle<()>>) {
    for listener in listeners {
        let _ = listener.join();
    }
}

/// The regular files under `dir`, sorted.
fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

fn display_path(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}
