//! Timeouts, cancellation, pools, the fault matrix, orphans, upgrades and resource hygiene.

use std::sync::Arc;
use std::time::Duration;

use bincrew::{RunError, RunOptions, WorkerCrashError, WorkerPool};
use misbehave::{Request, Response};

use crate::support::{eventually, misbehave, process_alive, start_misbehave, text, worker_bin};

#[test]
fn a_request_past_its_timeout_fails_and_its_handler_sees_the_cancellation() {
    let worker = start_misbehave();
    let err = worker
        .run_with(
            Request::Busy { ms: 30_000 },
            RunOptions::new().timeout(Duration::from_millis(100)),
        )
        .wait()
        .expect_err("timed out");
    assert!(matches!(err, RunError::TimedOut { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "worker `misbehave` did not answer within 100ms"
    );
    eventually("the handler gave up", || {
        worker.run_blocking(Request::CancelledCount).ok() == Some(Response::Number(1))
    });
    assert!(worker.is_running());
}

#[test]
fn dropping_a_reply_cancels_its_request() {
    let worker = start_misbehave();
    let busy = worker.run(Request::Busy { ms: 30_000 });
    // Sent by the next request's wait, then dropped while it runs.
    assert_eq!(
        worker
            .run_blocking(Request::Echo("x".into()))
            .expect("answer"),
        text("x")
    );
    drop(busy);
    eventually("the handler saw the cancellation", || {
        worker.run_blocking(Request::CancelledCount).ok() == Some(Response::Number(1))
    });
    // A reply dropped before it was sent is never sent at all.
    drop(worker.run(Request::Exit(9)));
    assert_eq!(
        worker
            .run_blocking(Request::Echo("y".into()))
            .expect("answer"),
        text("y")
    );
    assert!(worker.is_running());
}

#[test]
fn a_handler_that_ignores_a_timeout_gets_its_worker_killed_when_asked() {
    let worker = misbehave()
        .kill_after_timeout(Duration::from_millis(100))
        .start_blocking()
        .expect("starts");
    let pending = worker.run(Request::WaitFor("never".into()));
    let err = worker
        .run_with(
            Request::Hang,
            RunOptions::new().timeout(Duration::from_millis(100)),
        )
        .wait()
        .expect_err("timed out");
    assert!(matches!(err, RunError::TimedOut { .. }), "{err:?}");
    let report = match pending.wait() {
        Err(RunError::Crashed(report)) => report,
        other => panic!("expected the worker to be killed, got {other:?}"),
    };
    let reason = report.killed_by_app.as_deref().expect("killed by the app");
    assert!(
        reason.contains("timed out after 100ms and its handler did not give it up"),
        "{reason}"
    );
    assert_eq!(report.signal_name(), Some("SIGKILL"));
    assert!(
        report
            .to_string()
            .contains("was killed by the app: request"),
        "{report}"
    );
}

#[test]
fn a_handler_that_gives_up_in_time_keeps_its_worker() {
    let worker = misbehave()
        .kill_after_timeout(Duration::from_secs(5))
        .start_blocking()
        .expect("starts");
    let err = worker
        .run_with(
            Request::Busy { ms: 30_000 },
            RunOptions::new().timeout(Duration::from_millis(50)),
        )
        .wait()
        .expect_err("timed out");
    assert!(matches!(err, RunError::TimedOut { .. }));
    eventually("the handler gave up", || {
        worker.run_blocking(Request::CancelledCount).ok() == Some(Response::Number(1))
    });
    assert!(worker.crash_error().is_none());
}

#[test]
fn the_app_can_kill_a_worker_and_every_request_in_flight_says_why() {
    let worker = start_misbehave();
    let pending: Vec<_> = (0..3)
        .map(|i| worker.run(Request::WaitFor(format!("k{i}"))))
        .collect();
    let pending: Vec<_> = pending
        .into_iter()
        .map(|reply| std::thread::spawn(move || reply.wait()))
        .collect();
    eventually("the requests are in flight", || worker.in_flight() == 3);
    assert!(worker.is_running());
    worker.kill("the app no longer needs it");
    for waiter in pending {
        match waiter.join().expect("thread") {
            Err(RunError::Crashed(report)) => {
                assert_eq!(
                    report.killed_by_app.as_deref(),
                    Some("the app no longer needs it")
                );
                assert_eq!(report.signal_name(), Some("SIGKILL"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(!worker.is_running());
    assert_eq!(worker.in_flight(), 0);
}

fn pool(size: usize) -> WorkerPool<Request, Response> {
    crate::support::init();
    WorkerPool::from_builder(misbehave().parallelism(8))
        .size(size)
        .max_restarts(100, Duration::from_secs(60))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .start_blocking()
        .expect("pool starts")
}

#[test]
fn a_pool_sends_each_request_to_the_least_loaded_worker() {
    let pool = pool(2);
    let pids = pool.pids();
    assert_eq!(pids.len(), 2);
    let busy = pool.run(Request::WaitFor("held".into()));
    let busy = std::thread::spawn(move || busy.wait());
    // The idle worker answers everything else.
    let answered: Vec<Response> = (0..5)
        .map(|_| pool.run_blocking(Request::Pid).expect("answer"))
        .collect();
    let idle = answered[0].clone();
    assert!(answered.iter().all(|a| *a == idle), "{answered:?}");
    let Response::Number(idle) = idle else {
        panic!("{idle:?}")
    };
    assert!(pids.contains(&(idle as u32)));
    drop(pool);
    assert!(busy.join().expect("thread").is_err());
}

/// How a fault shows in a crash report.
fn check(fault: &str, report: &WorkerCrashError) {
    match fault {
        "panic" => assert_eq!(report.panic_message.as_deref(), Some("boom")),
        "abort" => assert_eq!(report.signal_name(), Some("SIGABRT")),
        "segfault" => assert_eq!(report.signal_name(), Some("SIGSEGV")),
        "stack overflow" => {
            assert!(
                matches!(report.signal_name(), Some("SIGSEGV" | "SIGABRT")),
                "{report:?}"
            );
            assert!(report.stderr_tail.contains("overflowed its stack"));
        }
        "exit" => assert_eq!(report.code(), Some(3)),
        "kill" => assert_eq!(report.signal_name(), Some("SIGKILL")),
        "hang" => {
            assert_eq!(report.signal_name(), Some("SIGKILL"));
            assert!(report
                .killed_by_app
                .as_deref()
                .unwrap_or_default()
                .contains("timed out"));
        }
        "huge allocation" => {
            assert_eq!(report.signal_name(), Some("SIGABRT"));
            assert!(
                report.stderr_tail.contains("memory allocation"),
                "{}",
                report.stderr_tail
            );
        }
        other => panic!("unknown fault {other}"),
    }
}

/// Every fault, with none, one and many requests in flight: each pending request fails with the
/// crash report, and the pool recovers.
#[test]
fn fault_matrix() {
    crate::support::init();
    let faults = [
        "panic",
        "abort",
        "segfault",
        "stack overflow",
        "exit",
        "kill",
        "hang",
        "huge allocation",
    ];
    let pool = WorkerPool::from_builder(
        misbehave()
            .parallelism(16)
            .kill_after_timeout(Duration::from_millis(50)),
    )
    .size(1)
    .max_restarts(1000, Duration::from_secs(60))
    .backoff(Duration::from_millis(1), Duration::from_millis(10))
    .start_blocking()
    .expect("pool starts");
    for fault in faults {
        for in_flight in [0usize, 1, 6] {
            // A worker that is up and answering.
            eventually("the pool answers", || {
                pool.run_blocking(Request::Echo(String::new())).is_ok()
            });
            let pid = pool.pids()[0];
            let pending: Vec<_> = (0..in_flight)
                .map(|i| pool.run(Request::WaitFor(format!("never {i}"))))
                .collect();
            let pending: Vec<_> = pending
                .into_iter()
                .map(|reply| std::thread::spawn(move || reply.wait()))
                .collect();
            // Every pending request is on the worker before the fault.
            assert_eq!(
                pool.run_blocking(Request::Pid).expect("answer"),
                Response::Number(u64::from(pid))
            );
            let faulted = match fault {
                "panic" => pool.run(Request::Panic("boom".into())).wait(),
                "abort" => pool.run(Request::Abort).wait(),
                "segfault" => pool.run(Request::Segfault).wait(),
                "stack overflow" => pool.run(Request::StackOverflow).wait(),
                "exit" => pool.run(Request::Exit(3)).wait(),
                "huge allocation" => pool.run(Request::Allocate(1 << 46)).wait(),
                "kill" => {
                    std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status()
                        .expect("kill");
                    Err(RunError::ShutDown {
                        worker: String::new(),
                    })
                }
                "hang" => pool
                    .run_with(
                        Request::Hang,
                        RunOptions::new().timeout(Duration::from_millis(50)),
                    )
                    .wait(),
                _ => unreachable!(),
            };
            match (fault, &faulted) {
                ("kill", _) => {}
                ("hang", Err(RunError::TimedOut { .. })) => {}
                (_, Err(RunError::Crashed(report))) => check(fault, report),
                _ => panic!("{fault}: unexpected {faulted:?}"),
            }
            for waiter in pending {
                match waiter.join().expect("thread") {
                    Err(RunError::Crashed(report)) => check(fault, &report),
                    other => panic!("{fault} with {in_flight} in flight: unexpected {other:?}"),
                }
            }
            eventually("the crash is replaced", || {
                pool.pids().first().is_some_and(|p| *p != pid)
            });
            assert_eq!(
                pool.run_blocking(Request::Echo("up".into()))
                    .expect("answer"),
                text("up")
            );
        }
    }
    assert!(pool.restart_count() >= faults.len() * 3);
    pool.shutdown_blocking().expect("clean shutdown");
}

#[test]
fn a_pool_that_keeps_crashing_fails_instead_of_looping() {
    crate::support::init();
    let pool = WorkerPool::from_builder(misbehave())
        .size(1)
        .max_restarts(2, Duration::from_secs(60))
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .start_blocking()
        .expect("pool starts");
    for _ in 0..3 {
        eventually("a worker is up", || {
            !pool.pids().is_empty() || pool.failure().is_some()
        });
        let _ = pool.run_blocking(Request::Exit(4));
    }
    eventually("the pool fails", || pool.failure().is_some());
    assert_eq!(pool.restart_count(), 2);
    let err = pool
        .run_blocking(Request::Echo(String::new()))
        .expect_err("failed");
    assert!(matches!(err, RunError::PoolFailed { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.starts_with("worker pool `misbehave` failed: its workers needed more than 2 restarts within 60s; the last crash: worker `misbehave`"),
        "{shown}"
    );
    assert!(shown.contains("exited with exit code 4"), "{shown}");
}

#[test]
fn a_retryable_request_runs_again_on_another_worker() {
    let pool = pool(2);
    let marker = std::env::temp_dir().join(format!("bincrew-crash-once-{}", std::process::id()));
    let _ = std::fs::remove_dir(&marker);
    let answer = pool
        .run_retryable(Request::CrashOnce(marker.clone()), RunOptions::new())
        .wait();
    assert_eq!(answer.expect("retried"), text("survived"));
    // Not retryable: the crash is the answer.
    let _ = std::fs::remove_dir(&marker);
    let err = pool
        .run_blocking(Request::CrashOnce(marker.clone()))
        .expect_err("crashed");
    assert!(
        matches!(err, RunError::Crashed(ref r) if r.signal_name() == Some("SIGSEGV")),
        "{err:?}"
    );
    let _ = std::fs::remove_dir(&marker);
}

#[test]
fn pool_shutdown_drains_every_worker() {
    let pool = Arc::new(pool(2));
    let replies: Vec<_> = (0..6)
        .map(|i| {
            pool.run(Request::Sleep {
                ms: 100,
                reply: format!("r{i}"),
            })
        })
        .collect();
    let pids = pool.pids();
    pool.shutdown_blocking().expect("clean shutdown");
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.wait().expect("drained"), text(&format!("r{i}")));
    }
    for pid in pids {
        assert!(!process_alive(pid));
    }
    let err = pool
        .run_blocking(Request::Echo(String::new()))
        .expect_err("shut down");
    assert!(matches!(err, RunError::ShutDown { .. }), "{err:?}");
}

/// A waker whose first wake blocks the thread that calls it until `release`. That thread is
/// the one that read the answer of the future it belongs to, holding its worker's read turn:
/// meanwhile every later answer of that worker waits in its channel, unread.
#[derive(Default)]
struct StallingWaker {
    entered: std::sync::atomic::AtomicBool,
    released: std::sync::Mutex<bool>,
    release: std::sync::Condvar,
}

impl StallingWaker {
    fn release(&self) {
        *self.released.lock().expect("lock") = true;
        self.release.notify_all();
    }
}

impl std::task::Wake for StallingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.entered
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut released = self.released.lock().expect("lock");
        while !*released {
            released = self.release.wait(released).expect("lock");
        }
    }
}

/// Requests on a pool's only worker whose answers stay unread: the worker answers `stalled`,
/// and whoever reads that answer stalls in its waker, holding the read turn; `held` and
/// `release` are answered after it, and their answers wait in the channel.
struct Unread {
    stalled: bincrew::Reply<Response>,
    waker: Arc<StallingWaker>,
    first_release: std::thread::JoinHandle<Result<Response, RunError>>,
    held: bincrew::Reply<Response>,
    release: bincrew::Reply<Response>,
}

impl Unread {
    /// Four requests, all to the pool's current process (the pool has one worker).
    fn make(pool: &WorkerPool<Request, Response>) -> Self {
        use std::future::Future;
        let waker = Arc::new(StallingWaker::default());
        let mut stalled = pool.run(Request::WaitFor("a".into()));
        let polled = std::pin::Pin::new(&mut stalled).poll(&mut std::task::Context::from_waker(
            &std::task::Waker::from(waker.clone()),
        ));
        assert!(polled.is_pending());
        // Sent and waited for on a thread of its own, which may be the one that stalls.
        let first_release = pool.run(Request::Release("a".into()));
        let first_release = std::thread::spawn(move || first_release.wait());
        eventually("a thread reading the worker's channel stalls", || {
            waker.entered.load(std::sync::atomic::Ordering::SeqCst)
        });
        // Sent by the replacement's shutdown request (`End` follows them), answered, unread.
        let held = pool.run(Request::WaitFor("b".into()));
        let release = pool.run(Request::Release("b".into()));
        Unread {
            stalled,
            waker,
            first_release,
            held,
            release,
        }
    }

    /// Lets the stalled thread go on, and checks that every request was answered.
    fn check_answered(self) {
        self.waker.release();
        assert_eq!(self.held.wait().expect("answered"), text("b"));
        assert_eq!(self.release.wait().expect("answered"), text("b"));
        assert_eq!(
            self.first_release
                .join()
                .expect("thread")
                .expect("answered"),
            text("a")
        );
        assert_eq!(self.stalled.wait().expect("answered"), text("a"));
    }
}

/// Kills the pool's worker `pid` and waits until the supervisor has restarted its slot: by
/// then it has looked at the workers it keeps draining, after the kill.
fn crash_and_restart(pool: &WorkerPool<Request, Response>, pid: u32) {
    // SAFETY: a signal to a worker process of this test.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    eventually("the slot is restarted", || {
        pool.restart_count() == 1 && pool.stats().workers == 1
    });
}

#[test]
fn a_retired_worker_is_kept_until_its_last_answers_are_read_not_just_until_it_exits() {
    let pool = pool(1);
    let old = pool.pids()[0];
    let unread = Unread::make(&pool);
    pool.roll_blocking().expect("rolls");
    // The retired worker answered everything and exited; its last answers are not read yet.
    eventually("the retired worker exits", || !process_alive(old));
    // The supervisor looks at the retiring workers again when another worker exits.
    let new = pool.pids()[0];
    assert_ne!(new, old);
    crash_and_restart(&pool, new);
    // Forgetting the retired worker on its exit alone failed these as shut down.
    unread.check_answered();
    assert_eq!(pool.stats().crashes, 1);
    pool.shutdown_blocking().expect("clean shutdown");
}

#[test]
fn a_crashed_worker_lets_its_replaced_process_finish_its_requests() {
    crate::support::init();
    // Recycled after the four requests of `Unread`, which all go to the first process.
    let pool = WorkerPool::from_builder(misbehave().recycle_after_requests(4))
        .size(1)
        .max_restarts(100, Duration::from_secs(60))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .start_blocking()
        .expect("pool starts");
    let old = pool.pids()[0];
    let unread = Unread::make(&pool);
    eventually("the worker is recycled", || pool.stats().recycles == 1);
    eventually("the replaced process exits", || !process_alive(old));
    // The worker's current process crashes while the replaced one still drains (its last
    // answers unread).
    let new = pool.pids()[0];
    assert_ne!(new, old);
    crash_and_restart(&pool, new);
    // Dropping the crashed worker killed its replaced process and failed these as shut down.
    unread.check_answered();
    assert_eq!(pool.stats().crashes, 1);
    pool.shutdown_blocking().expect("clean shutdown");
}

#[test]
fn a_worker_stuck_in_a_handler_exits_when_its_app_is_killed() {
    crate::support::kill_app_and_see_its_worker_exit(&["hang"]);
}

#[test]
fn a_self_spawned_worker_is_the_running_build_even_after_the_file_was_replaced() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("bincrew-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let app_path = dir.join("app");
    std::fs::copy(worker_bin("misbehave"), &app_path).expect("copy");
    let mut app = std::process::Command::new(&app_path)
        .arg("upgrade-check")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("runs");
    // The upgrade: another binary (hasher 0.2.0) takes the app's place on disk.
    let staged = dir.join("app.new");
    std::fs::copy(worker_bin("hasher"), &staged).expect("copy");
    std::fs::rename(&staged, &app_path).expect("replace");
    app.stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write");
    let out = app.wait_with_output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(stdout.contains("self-spawn: same build\n"), "{stdout}");
    assert!(
        stdout.contains("from disk: worker `hasher` is binary `hasher` 0.2.0"),
        "{stdout}"
    );
    assert!(stdout.contains("requires same version"), "{stdout}");
}

#[test]
fn no_descriptor_thread_or_process_leaks_across_starts_crashes_and_restarts() {
    let out = std::process::Command::new(worker_bin("misbehave"))
        .args(["soak", "30", "20000"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.ends_with("no leaks\n"), "{stdout}");
}

/// The full soak: `cargo test --release --test it soak -- --ignored --nocapture`.
#[test]
#[ignore = "a soak run: a thousand crash cycles and a million requests"]
fn soak() {
    let out = std::process::Command::new(worker_bin("misbehave"))
        .args(["soak", "1000", "1000000"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.ends_with("no leaks\n"),
        "{stdout}"
    );
}
