//! A pool of workers with per-request timeouts: a request that takes too long times out, a
//! request that crashes its worker fails with a crash report, and the pool serves on.
//!
//! ```sh
//! cargo run --example pool
//! ```

use std::time::{Duration, Instant};

use bincrew::{RequestArgs, RunError, RunOptions, WorkerPool};
use futures::future::join_all;
use serde::{Deserialize, Serialize};

const TASKS: &str = "tasks";

/// What the workers do.
#[derive(Debug, Serialize, Deserialize)]
enum Task {
    /// Quick work.
    Square(u64),
    /// Work that takes longer than the app will wait.
    Slow { ms: u64 },
    /// Work that kills its worker, as a bug in native code would.
    Abort,
}

/// The handler, in a worker process.
fn run_task(args: RequestArgs<Task>) -> u64 {
    match args.request {
        Task::Square(n) => n * n,
        Task::Slow { ms } => {
            let end = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < end {
                // When the app gives up on a request (its timeout passed, or its reply was
                // dropped), the worker is told: a long handler should look now and then and
                // return early. What it returns then is thrown away.
                if args.is_cancelled() {
                    return 0;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            ms
        }
        // Ends the process with SIGABRT, past any panic handler: nothing reaches the app but
        // the process's end.
        Task::Abort => std::process::abort(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    bincrew::init!();
    // The pool's workers are this executable, started again (see the `self_spawn` example).
    bincrew::run_worker_blocking(TASKS, run_task);

    // Any executor works; this example runs on a Tokio runtime.
    tokio::runtime::Runtime::new()?.block_on(app())
}

async fn app() -> Result<(), Box<dyn std::error::Error>> {
    let pool = WorkerPool::<Task, u64>::builder(TASKS)
        .size(2)
        // At most 5 restarts a minute (the default); past that the pool fails rather than
        // crash-loop, and its requests fail with `RunError::PoolFailed`.
        .max_restarts(5, Duration::from_secs(60))
        .configure(|worker| {
            // A worker whose handler ignores a timed-out request for a second more is killed
            // (and replaced): a stuck handler cannot hold a worker for ever.
            worker.kill_after_timeout(Duration::from_secs(1))
        })
        .start()
        .await?;
    println!("pool `{TASKS}` started: pids {:?}", pool.pids());

    // A timeout for each request. Generous for real work, so that a busy machine does not fail
    // it; short for the slow task, which is meant to time out.
    let patient = RunOptions::new().timeout(Duration::from_secs(60));
    let impatient = RunOptions::new().timeout(Duration::from_millis(200));

    // Requests go to the least-loaded worker.
    let squares = join_all((1..=6).map(|n| pool.run_with(Task::Square(n), patient.clone()))).await;
    for (n, result) in (1..=6).zip(squares) {
        assert_eq!(result?, n * n);
    }
    println!("6 squares: answered");

    // A request that outlives its timeout fails with `RunError::TimedOut`; the worker is told
    // to give it up, and keeps serving.
    match pool
        .run_with(Task::Slow { ms: 60_000 }, impatient.clone())
        .await
    {
        Err(e @ RunError::TimedOut { .. }) => println!("slow task: {e}"),
        other => panic!("the slow task should time out, not end in {other:?}"),
    }

    // A request whose worker dies fails with `RunError::Crashed` and a report: the exit code or
    // signal, a panic's message and location, the end of the worker's stderr. Other requests
    // in flight on that worker fail with the same report (unless sent with `run_retryable`, for
    // handlers safe to run twice: those run again on another worker).
    match pool.run_with(Task::Abort, patient.clone()).await {
        Err(RunError::Crashed(report)) => {
            println!("abort: {report}");
            #[cfg(unix)]
            assert_eq!(report.signal_name(), Some("SIGABRT"));
        }
        other => panic!("the abort should crash its worker, not end in {other:?}"),
    }

    // The pool serves on: the other worker answers at once, and a supervisor thread replaces
    // the dead one after a short backoff. (A request made while no worker is up waits for a
    // replacement.)
    let squares = join_all((7..=12).map(|n| pool.run_with(Task::Square(n), patient.clone()))).await;
    for (n, result) in (7..=12).zip(squares) {
        assert_eq!(result?, n * n);
    }
    println!("6 more squares after the crash: answered");

    // Only to show it: wait until the replacement is up. An app need not.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.restart_count() < 1 || pool.pids().len() < 2 {
        assert!(Instant::now() < deadline, "no replacement worker started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "restarts: {}, pids now {:?}",
        pool.restart_count(),
        pool.pids()
    );
    assert!(pool.failure().is_none());

    // Every worker drains what it has in flight and exits.
    pool.shutdown().await?;
    println!("pool `{TASKS}` shut down cleanly");
    Ok(())
}
