//! A frozen, flooding, panicking or garbage-writing worker never holds an app thread.
//!
//! Each test that could hang if the app waited on a worker runs under a watchdog: a generous
//! bound that fails the test instead of hanging it, never an assertion on how fast it went.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use bincrew::{Reply, RunError, RunOptions, ShutdownError, Worker, WorkerPool};
use misbehave::{Request, Response};

use crate::support::{eventually, init, misbehave, process_alive, start_misbehave, worker_bin};

/// Runs `f` on a thread of its own and fails the test if it has not returned within a minute:
/// the app thread was held.
fn watchdog<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(value) => value,
        Err(_) => panic!("held for a minute: {what}"),
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: a signal to a worker process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// Stops a worker process with SIGSTOP and waits until it is stopped.
fn stop(pid: u32) {
    signal(pid, libc::SIGSTOP);
    eventually("the worker is stopped", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("T")
        })
    });
}

/// Polls a reply once: sends its request (without waiting), and tells whether it is done.
fn poll_once<O>(reply: &mut Reply<O>) -> Poll<Result<O, RunError>> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    Pin::new(reply).poll(&mut cx)
}

/// Sends requests to a stopped worker until its socket is full, and keeps their replies.
fn flood(worker: &Worker<Request, Response>, n: usize) -> Vec<Reply<Response>> {
    let mut replies: Vec<_> = (0..n)
        .map(|i| worker.run(Request::Echo(format!("{i:01024}"))))
        .collect();
    for reply in &mut replies {
        if let Poll::Ready(result) = poll_once(reply) {
            panic!("a request to a stopped worker ended: {result:?}");
        }
    }
    replies
}

fn big_request() -> Request {
    Request::Echo("x".repeat(8 << 20))
}

#[test]
fn a_timeout_fires_on_time_while_a_stopped_worker_holds_the_channel() {
    let worker = start_misbehave();
    stop(worker.id());
    let worker = std::sync::Arc::new(worker);
    let flooded = flood(&worker, 2000);
    let w = worker.clone();
    let result = watchdog("Reply::wait with a 1 s timeout", move || {
        w.run_with(
            big_request(),
            RunOptions::new().timeout(Duration::from_secs(1)),
        )
        .wait()
    });
    assert!(
        matches!(result, Err(RunError::TimedOut { .. })),
        "{result:?}"
    );
    // A blocking call without a timeout reads the channel for the others; one with a timeout
    // still returns when its own time is up.
    let w = worker.clone();
    let reading = thread::spawn(move || w.run_blocking(Request::Echo("no timeout".into())));
    let w = worker.clone();
    let result = watchdog("a timeout while another thread reads", move || {
        w.run_with(
            Request::Echo("timeout".into()),
            RunOptions::new().timeout(Duration::from_millis(300)),
        )
        .wait()
    });
    assert!(
        matches!(result, Err(RunError::TimedOut { .. })),
        "{result:?}"
    );
    let pid = worker.id();
    drop(flooded);
    // Killing the worker ends the blocking call that had no timeout.
    worker.kill("the test is over");
    let ended = watchdog("the reading thread", move || reading.join());
    assert!(matches!(ended, Ok(Err(RunError::Crashed(_)))), "{ended:?}");
    drop(worker);
    eventually("the worker is gone", || !process_alive(pid));
}

#[test]
fn an_executor_thread_is_never_held_by_a_stopped_worker() {
    let worker = start_misbehave();
    stop(worker.id());
    let flooded = flood(&worker, 2000);
    let worker = std::sync::Arc::new(worker);
    let w = worker.clone();
    let result = watchdog("a current-thread runtime", move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            tokio::time::timeout(Duration::from_secs(1), w.run(big_request())).await
        })
    });
    assert!(result.is_err(), "the future completed: {result:?}");
    drop(flooded);
}

#[test]
fn one_stopped_worker_never_delays_another_workers_timeouts() {
    let frozen = start_misbehave();
    let healthy = start_misbehave();
    stop(frozen.id());
    let flooded = flood(&frozen, 2000);
    // Timeouts on the stopped worker: each sends a cancellation, which cannot get through.
    let replies: Vec<_> = (0..200)
        .map(|i| {
            frozen.run_with(
                Request::Echo(format!("{i}")),
                RunOptions::new().timeout(Duration::from_millis(50)),
            )
        })
        .collect();
    for reply in replies {
        let result = watchdog("a timeout on the stopped worker", move || reply.wait());
        assert!(
            matches!(result, Err(RunError::TimedOut { .. })),
            "{result:?}"
        );
    }
    // The healthy worker answers after 3 s; its 300 ms timeout must fire first.
    let result = watchdog("a timeout on the healthy worker", move || {
        healthy
            .run_with(
                Request::Sleep {
                    ms: 3000,
                    reply: "late".into(),
                },
                RunOptions::new().timeout(Duration::from_millis(300)),
            )
            .wait()
    });
    assert!(
        matches!(result, Err(RunError::TimedOut { .. })),
        "{result:?}"
    );
    drop(flooded);
}

#[test]
fn shutdown_of_a_stopped_worker_kills_it_after_the_grace_period() {
    let worker = misbehave()
        .shutdown_grace(Duration::from_secs(1))
        .start_blocking()
        .expect("starts");
    stop(worker.id());
    let flooded = flood(&worker, 2000);
    let pid = worker.id();
    let result = watchdog("shutdown_blocking", move || {
        let result = worker.shutdown_blocking();
        drop(flooded);
        result
    });
    assert!(
        matches!(result, Err(ShutdownError::Killed { .. })),
        "{result:?}"
    );
    eventually("the worker is gone", || !process_alive(pid));
}

#[test]
fn dropping_a_stopped_worker_returns_at_once_and_the_process_goes() {
    let worker = start_misbehave();
    let pid = worker.id();
    stop(pid);
    let flooded = flood(&worker, 2000);
    let results = watchdog("dropping the worker", move || {
        drop(worker);
        flooded
            .into_iter()
            .map(|reply| reply.wait())
            .collect::<Vec<_>>()
    });
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(RunError::ShutDown { .. }))));
    eventually("the worker is gone", || !process_alive(pid));
}

#[test]
fn after_a_panic_starts_nothing_is_answered_ok() {
    let worker = misbehave()
        .env("MISBEHAVE_SLOW_PANIC", "1")
        .start_blocking()
        .expect("starts");
    let waiting: Vec<_> = (0..6)
        .map(|_| worker.run(Request::WaitFor("never".into())))
        .collect();
    let panic = worker.run(Request::Panic("boom".into()));
    let results = watchdog("the requests of a panicking worker", move || {
        let mut results: Vec<_> = waiting.into_iter().map(Reply::wait).collect();
        results.push(panic.wait());
        results
    });
    // The waiting handlers finished while the panic was reported: their answers are not trusted.
    for result in results {
        match result {
            Err(RunError::Crashed(report)) => {
                assert_eq!(report.panic_message.as_deref(), Some("boom"))
            }
            other => panic!("answered after the panic began: {other:?}"),
        }
    }
}

#[test]
fn a_message_header_claiming_a_terabyte_kills_the_worker_not_the_app() {
    let worker = misbehave()
        .env("MISBEHAVE_FAKE", "huge-header")
        .start_blocking()
        .expect("the handshake itself is correct");
    let result = watchdog(
        "a request to a worker that writes a bad header",
        move || worker.run_blocking(Request::Echo(String::new())),
    );
    let Err(RunError::Crashed(report)) = &result else {
        panic!("{result:?}")
    };
    let reason = report.killed_by_app.as_deref().unwrap_or_default();
    assert!(
        reason.contains("claims 1099511627776 bytes, over the limit"),
        "{reason}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_flooded_worker_stops_reading_and_stays_small() {
    let worker = misbehave().parallelism(2).start_blocking().expect("starts");
    let pid = worker.id();
    // Every handler blocked.
    let mut blocked: Vec<_> = (0..2)
        .map(|_| worker.run(Request::WaitFor("hold".into())))
        .collect();
    for reply in &mut blocked {
        assert!(poll_once(reply).is_pending());
    }
    thread::sleep(Duration::from_millis(200));
    let idle = rss_kib(pid);
    let flooded = flood(&worker, 1_000_000);
    let mut peak = 0;
    for _ in 0..40 {
        thread::sleep(Duration::from_millis(50));
        peak = peak.max(rss_kib(pid));
    }
    assert!(
        peak.saturating_sub(idle) < 64 * 1024,
        "the worker grew from {idle} KiB to {peak} KiB"
    );
    drop(worker);
    drop(flooded);
    drop(blocked);
}

#[test]
fn a_limit_on_pending_requests_fails_further_requests_at_once() {
    let worker = misbehave()
        .max_pending(100)
        .start_blocking()
        .expect("starts");
    stop(worker.id());
    let mut replies = Vec::new();
    let overloaded = loop {
        assert!(replies.len() < 100_000, "never overloaded");
        let mut reply = worker.run(Request::Echo(format!("{:01024}", replies.len())));
        match poll_once(&mut reply) {
            Poll::Pending => replies.push(reply),
            Poll::Ready(result) => break result,
        }
    };
    match overloaded {
        Err(RunError::Overloaded { limit: 100, .. }) => {}
        other => panic!("{other:?}"),
    }
    drop(worker);
}

#[test]
fn a_cancellation_reaches_a_worker_whose_handlers_are_busy_and_queue_full() {
    let worker = misbehave().parallelism(1).start_blocking().expect("starts");
    let mut busy = worker.run(Request::Busy { ms: 120_000 });
    assert!(poll_once(&mut busy).is_pending());
    thread::sleep(Duration::from_millis(100));
    // More than the worker queues: the rest waits in the app.
    let queued = flood(&worker, 3000);
    drop(busy);
    let worker = std::sync::Arc::new(worker);
    let w = worker.clone();
    let cancelled = watchdog(
        "the queued requests, once the busy one gave up",
        move || {
            for reply in queued {
                assert!(reply.wait().is_ok());
            }
            w.run_blocking(Request::CancelledCount)
        },
    );
    assert_eq!(cancelled.expect("answered"), Response::Number(1));
}

#[test]
fn pool_shutdown_and_drop_end_every_waiting_request() {
    for by_drop in [false, true] {
        init();
        let pool = WorkerPool::<Request, Response>::from_builder(
            Worker::builder(misbehave::WORKER)
                .exe(worker_bin("misbehave"))
                .compat(bincrew::Compat::SameVersion)
                .forward_stderr(false),
        )
        .size(1)
        .backoff(Duration::from_secs(600), Duration::from_secs(600))
        .start_blocking()
        .expect("starts");
        let _ = pool.run_blocking(Request::Exit(3));
        eventually("no worker is up", || pool.pids().is_empty());
        // Made while no worker is up: they wait for one, as a future and blocking.
        let (awaited, waited) = (
            pool.run(Request::Echo("a".into())),
            pool.run(Request::Echo("b".into())),
        );
        let awaited = thread::spawn(move || futures::executor::block_on(awaited));
        let waited = thread::spawn(move || waited.wait());
        thread::sleep(Duration::from_millis(200));
        if by_drop {
            drop(pool);
        } else {
            pool.shutdown_blocking().expect("shuts down");
        }
        for waiting in [awaited, waited] {
            let result = watchdog("a request waiting for a pool worker", move || {
                waiting.join().expect("joins")
            });
            assert!(
                matches!(result, Err(RunError::ShutDown { .. })),
                "by_drop {by_drop}: {result:?}"
            );
        }
    }
}

#[test]
fn answered_requests_with_timeouts_leave_nothing_behind() {
    // In an app process of its own, so that other tests do not move its memory.
    let out = std::process::Command::new(worker_bin("misbehave"))
        .args(["timer-residue", "1000000"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let growth: u64 = stdout
        .trim()
        .strip_prefix("rss-growth-kib ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"));
    assert!(growth < 2048, "the app grew by {growth} KiB");
}
