//! Containment: memory and CPU limits, core dumps, the worker's process tree, recycling, and the
//! rolling replacement of a pool. Real worker processes; watchdog bounds only, no timing
//! assertions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bincrew::{
    Compat, LimitExceeded, MemoryMechanism, RollError, RunError, StartError, WorkerPool,
};
use misbehave::{Request, Response};

use crate::support::{
    eventually, misbehave, process_alive, start_misbehave, text, worker_bin, AppRun,
};

const MIB: u64 = 1 << 20;

/// The resident memory of a process, from `/proc/<pid>/statm`.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn crash_report(result: Result<Response, RunError>) -> Arc<bincrew::WorkerCrashError> {
    match result {
        Err(RunError::Crashed(report)) => report,
        other => panic!("expected a crash report, got {other:?}"),
    }
}

/// In an app process of its own (`misbehave memory-limit`), so that other tests do not move
/// the app's memory: a worker allocating without end under a 256 MiB limit is stopped, the report
/// names the limit and the mechanism, the app's resident memory is unchanged and it goes on.
#[test]
fn a_256_mib_limit_stops_a_worker_that_allocates_without_end_and_the_app_is_unchanged() {
    let run = AppRun::of("memory-limit");
    let (stdout, line) = (&run.stdout, |key: &str| run.value(key));
    let mechanism = line("mechanism ");
    assert!(
        mechanism == "Some(Cgroup)" || mechanism == "Some(Watch)",
        "{stdout}"
    );
    let mechanism = mechanism.trim_start_matches("Some(").trim_end_matches(')');
    assert_eq!(
        line("limit "),
        format!(
            "Some(Memory {{ limit: {}, mechanism: {mechanism} }})",
            256 * MIB
        ),
        "{stdout}"
    );
    let report = line("report ");
    assert!(
        report.contains("exceeded its memory limit of 256 MiB (enforced by")
            && report.contains("SIGKILL"),
        "{report}"
    );
    let before: u64 = line("app-rss-before ").parse().expect("a number");
    let after: u64 = line("app-rss-after ").parse().expect("a number");
    eprintln!("memory limit ({mechanism}): the app's resident memory {before} bytes before, {after} after");
    assert!(
        after < before + 16 * MIB,
        "the app grew from {before} to {after} bytes"
    );
    assert_eq!(line("a new worker answers "), "Ok(Text(\"ok\"))");
}

/// The memory of what a handler started counts: a worker whose child holds 200 MiB is stopped
/// by a 128 MiB limit (the watcher adds the descendants' resident memory; a cgroup holds the
/// whole tree), and the child goes with it.
#[test]
fn a_memory_limit_counts_the_processes_a_handler_started() {
    let worker = misbehave()
        .memory_limit(128 * MIB)
        .start_blocking()
        .expect("starts");
    let mechanism = worker.memory_mechanism().expect("a mechanism");
    let mut hogs = Vec::new();
    let report = loop {
        // The hog answers once it holds its memory; the watcher may take a moment to see it.
        match worker.run_blocking(Request::ChildHog(200)) {
            Ok(Response::Number(pid)) => hogs.push(u32::try_from(pid).expect("a pid")),
            other => break crash_report(other),
        }
        assert!(hogs.len() < 3, "not stopped with {} hogs", hogs.len());
    };
    assert_eq!(
        report.limit,
        Some(LimitExceeded::Memory {
            limit: 128 * MIB,
            mechanism
        })
    );
    for pid in hogs {
        eventually("the hog goes with its worker", || !process_alive(pid));
    }
}

#[test]
fn rlimit_data_turns_a_runaway_allocation_into_rusts_allocation_failure_named_as_the_limit() {
    let worker = misbehave()
        .memory_limit(256 * MIB)
        .memory_mechanism(MemoryMechanism::DataLimit)
        .start_blocking()
        .expect("starts");
    assert_eq!(worker.memory_mechanism(), Some(MemoryMechanism::DataLimit));
    assert_eq!(
        worker
            .run_blocking(Request::Echo("fine".into()))
            .expect("ok"),
        text("fine")
    );
    let report = crash_report(worker.run_blocking(Request::AllocateForever));
    assert_eq!(
        report.limit,
        Some(LimitExceeded::Memory {
            limit: 256 * MIB,
            mechanism: MemoryMechanism::DataLimit
        })
    );
    assert_eq!(report.signal_name(), Some("SIGABRT"));
    assert!(
        report.stderr_tail.contains("memory allocation of"),
        "{}",
        report.stderr_tail
    );
    assert!(
        report
            .to_string()
            .contains("exceeded its memory limit of 256 MiB (enforced by RLIMIT_DATA)"),
        "{report}"
    );
    eventually("the limit kill is counted", || {
        worker.stats().limit_kills == 1
    });
}

#[test]
fn a_limit_that_cannot_be_applied_fails_the_start_unless_it_is_best_effort() {
    let missing = std::env::temp_dir().join("bincrew-no-such-cgroup");
    let err = misbehave()
        .memory_limit(64 * MIB)
        .memory_mechanism(MemoryMechanism::Cgroup)
        .cgroup(&missing)
        .start_blocking()
        .expect_err("no such cgroup");
    match &err {
        StartError::Limit { limit, reason, .. } => {
            assert_eq!(*limit, "memory limit");
            assert!(reason.contains("is not a cgroup v2 directory"), "{reason}");
        }
        other => panic!("expected StartError::Limit, got {other:?}"),
    }
    assert!(
        err.to_string().contains("limits_best_effort(true)"),
        "{err}"
    );
    // Best effort: the next best mechanism, and the worker serves.
    let worker = misbehave()
        .memory_limit(64 * MIB)
        .memory_mechanism(MemoryMechanism::Cgroup)
        .cgroup(&missing)
        .limits_best_effort(true)
        .start_blocking()
        .expect("starts without a cgroup");
    assert_eq!(worker.memory_mechanism(), Some(MemoryMechanism::Watch));
    assert_eq!(
        worker.run_blocking(Request::Echo("x".into())).expect("ok"),
        text("x")
    );
}

#[test]
fn a_handler_over_its_cpu_limit_ends_its_worker_with_a_report_naming_the_request() {
    let worker = misbehave()
        .cpu_limit_per_request(Duration::from_millis(200))
        .start_blocking()
        .expect("starts");
    // Waiting is not CPU time, and the limit is per request, not for the worker's life: five
    // requests of up to 120 ms of CPU each (600 ms in all) pass.
    assert_eq!(
        worker
            .run_blocking(Request::Sleep {
                ms: 400,
                reply: "slept".into()
            })
            .expect("a sleep uses no CPU"),
        text("slept")
    );
    for _ in 0..5 {
        assert_eq!(
            worker.run_blocking(Request::Burn { ms: 120 }).expect("ok"),
            text("burnt")
        );
    }
    let bystander = worker.run(Request::WaitFor("never".into()));
    let report = crash_report(worker.run_blocking(Request::Spin));
    match &report.limit {
        Some(LimitExceeded::Cpu { limit, request }) => {
            assert_eq!(*limit, Duration::from_millis(200));
            assert!(request.is_some(), "the request is named");
        }
        other => panic!("expected the CPU limit, got {other:?}"),
    }
    assert_eq!(report.code(), Some(152));
    assert!(
        report
            .to_string()
            .contains("exceeded its CPU limit of 200ms per request (request "),
        "{report}"
    );
    // The other requests in flight fail with the same report.
    assert_eq!(crash_report(bystander.wait()), report);
}

#[test]
fn a_request_that_hit_a_limit_is_not_retried_and_limit_kills_count_toward_the_restart_limit() {
    let pool = WorkerPool::from_builder(misbehave().memory_limit(128 * MIB))
        .size(1)
        .max_restarts(1, Duration::from_secs(60))
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .start_blocking()
        .expect("starts");
    let report = match pool
        .run_retryable(Request::AllocateForever, bincrew::RunOptions::new())
        .wait()
    {
        Err(RunError::Crashed(report)) => report,
        other => panic!("expected the limit's crash report, got {other:?}"),
    };
    assert!(
        matches!(report.limit, Some(LimitExceeded::Memory { limit, .. }) if limit == 128 * MIB),
        "{report:?}"
    );
    // The restart is counted: one more limit kill is past `max_restarts(1, ..)`.
    eventually("the worker is restarted", || pool.stats().workers == 1);
    // Not run again: one crash, one limit kill (a retry would have crashed the replacement).
    let stats = pool.stats();
    assert_eq!((stats.crashes, stats.limit_kills), (1, 1), "tried once");
    assert_eq!(pool.stats().restarts, 1);
    let _ = pool.run_blocking(Request::AllocateForever);
    eventually("the pool fails", || pool.failure().is_some());
    assert!(
        matches!(
            pool.run_blocking(Request::Pid),
            Err(RunError::PoolFailed { .. })
        ),
        "a limit kill counts toward the restart intensity"
    );
}

#[test]
fn what_a_handler_started_dies_with_its_worker_killed_or_crashed() {
    for crash in [false, true] {
        let worker = start_misbehave();
        let grandchild = match worker.run_blocking(Request::Grandchild).expect("started") {
            Response::Number(pid) => u32::try_from(pid).expect("a pid"),
            other => panic!("unexpected {other:?}"),
        };
        assert!(process_alive(grandchild));
        if crash {
            let _ = worker.run_blocking(Request::Segfault);
        } else {
            worker.kill("test");
        }
        eventually("the grandchild goes with its worker", || {
            !process_alive(grandchild)
        });
    }
}

#[test]
fn workers_start_with_core_dumps_off_unless_asked() {
    let run = AppRun::of("core-limits");
    let (stdout, value) = (&run.stdout, |key: &str| run.value(key));
    let app = value("app ");
    assert_eq!(value("default "), "0", "{stdout}");
    assert_eq!(value("allowed "), app, "{stdout}");
    if app == "0" {
        eprintln!(
            "note: this environment's hard core limit is 0, so `core_dumps(true)` shows 0 too"
        );
    }
}

/// Recycling after 100 requests: 10,000 requests that each leak 64 KiB (625 MiB in all) are all
/// answered, while the worker's resident memory stays flat.
#[test]
fn recycling_after_100_requests_serves_10000_leaky_requests_with_a_flat_worker_rss() {
    let worker = misbehave()
        .recycle_after_requests(100)
        .start_blocking()
        .expect("starts");
    let baseline = rss(worker.id());
    let mut highest = baseline;
    let mut pids = std::collections::HashSet::new();
    for round in 0..200 {
        let replies: Vec<_> = (0..50)
            .map(|_| worker.run(Request::Leak(64 << 10)))
            .collect();
        for reply in replies {
            match reply.wait() {
                Ok(Response::Number(_)) => {}
                other => panic!("request failed in round {round}: {other:?}"),
            }
        }
        pids.insert(worker.id());
        highest = highest.max(rss(worker.id()));
    }
    let stats = worker.stats();
    eprintln!(
        "recycling: {} processes, {} recycles; worker resident memory {baseline} bytes at the start, {highest} at most",
        pids.len(),
        stats.recycles
    );
    assert_eq!(stats.requests, 10_000);
    assert_eq!(stats.crashes, 0);
    assert!(stats.recycles >= 10, "{stats:?}");
    assert!(pids.len() >= 10, "{} processes", pids.len());
    // Without recycling one process would hold 625 MiB.
    assert!(
        highest < baseline + 128 * MIB,
        "the worker grew from {baseline} to {highest} bytes"
    );
    worker.shutdown_blocking().expect("a clean shutdown");
}

#[test]
fn a_worker_past_its_memory_threshold_is_recycled_between_requests() {
    let worker = misbehave()
        .recycle_above_memory(64 * MIB)
        .start_blocking()
        .expect("starts");
    let first = worker.id();
    let mut leaked_on_one = 0;
    for _ in 0..2000 {
        match worker.run_blocking(Request::Leak(MIB)).expect("answered") {
            Response::Number(n) => leaked_on_one = leaked_on_one.max(n),
            other => panic!("unexpected {other:?}"),
        }
        if worker.stats().recycles >= 2 {
            break;
        }
        // Room for the 100 ms between reads of the worker's memory.
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(worker.stats().recycles >= 2, "{:?}", worker.stats());
    assert_ne!(worker.id(), first);
    assert!(
        leaked_on_one < 1024 * MIB,
        "one process leaked {leaked_on_one} bytes"
    );
    eventually("the first process exits", || !process_alive(first));
}

#[test]
fn each_worker_of_a_pool_is_recycled_on_its_own_and_no_restart_is_counted() {
    let pool = WorkerPool::from_builder(misbehave().recycle_after_requests(50))
        .size(2)
        .start_blocking()
        .expect("starts");
    for _ in 0..20 {
        let replies: Vec<_> = (0..50)
            .map(|i| pool.run(Request::Echo(format!("{i}"))))
            .collect();
        for (i, reply) in replies.into_iter().enumerate() {
            assert_eq!(reply.wait().expect("answered"), text(&format!("{i}")));
        }
    }
    let stats = pool.stats();
    assert_eq!(stats.requests, 1000);
    assert!(stats.recycles >= 2, "{stats:?}");
    assert_eq!((stats.restarts, stats.crashes), (0, 0), "{stats:?}");
    assert_eq!(pool.restart_count(), 0);
    pool.shutdown_blocking().expect("a clean shutdown");
}

#[test]
fn a_replaced_process_that_does_not_drain_within_its_timeout_is_killed() {
    let worker = misbehave()
        .recycle_after_requests(1)
        .recycle_drain_timeout(Duration::from_millis(200))
        .start_blocking()
        .expect("starts");
    let first = worker.id();
    // Its first request makes it due; the request never ends.
    let stuck = worker.run(Request::WaitFor("never".into()));
    let report = crash_report(stuck.wait());
    assert_eq!(report.pid, first);
    let reason = report.killed_by_app.as_deref().unwrap_or_default();
    assert!(reason.contains("drain timeout of 200ms"), "{report}");
    // The worker goes on with its replacement; a drained-out process is a crash, not the
    // worker's end.
    assert!(worker.is_running());
    assert_ne!(worker.id(), first);
    assert_eq!(
        worker
            .run_blocking(Request::Echo("on".into()))
            .expect("served"),
        text("on")
    );
    eventually("the drained-out process is counted as a crash", || {
        worker.stats().crashes == 1
    });
}

/// Runs requests from `threads` threads until stopped; counts answers and failures.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(pool: &Arc<WorkerPool<Request, Response>>, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|i| {
                let (pool, stop) = (pool.clone(), stop.clone());
                let (answered, failed) = (answered.clone(), failed.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // Now and then a long request, in flight while workers are replaced.
                        let request = if answered.load(Ordering::Relaxed) % 50 == 0 {
                            Request::Sleep {
                                ms: 100,
                                reply: format!("{i}"),
                            }
                        } else {
                            Request::Echo(format!("{i}"))
                        };
                        match pool.run_blocking(request) {
                            Ok(answer) if answer == text(&format!("{i}")) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                eprintln!("a request failed: {other:?}");
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            answered,
            failed,
            threads,
        }
    }

    /// Stops the load; (answered, failed).
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("a load thread");
        }
        (
            self.answered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn a_rolling_replacement_under_steady_load_fails_no_request() {
    for size in [1, 2] {
        let pool = Arc::new(
            WorkerPool::from_builder(misbehave())
                .size(size)
                .start_blocking()
                .expect("starts"),
        );
        let before: Vec<u32> = pool.pids();
        let load = Load::start(&pool, 3);
        eventually("the load is under way", || {
            load.answered.load(Ordering::Relaxed) > 100
        });
        let answered_before = load.answered.load(Ordering::Relaxed);
        pool.roll_blocking().expect("the roll completes");
        let answered_during = load.answered.load(Ordering::Relaxed) - answered_before;
        // Once more, the async way.
        futures::executor::block_on(pool.roll()).expect("the second roll completes");
        eventually("requests flow after the rolls", || {
            load.answered.load(Ordering::Relaxed) > answered_before + answered_during + 100
        });
        let (answered, failed) = load.stop();
        assert_eq!(failed, 0, "{answered} answered");
        let after = pool.pids();
        assert_eq!(after.len(), size);
        assert!(
            after.iter().all(|pid| !before.contains(pid)),
            "{before:?} {after:?}"
        );
        for pid in before {
            eventually("a replaced worker drains and exits", || !process_alive(pid));
        }
        let stats = pool.stats();
        assert_eq!(
            (stats.rolls, stats.rolled),
            (2, 2 * size as u64),
            "{stats:?}"
        );
        assert_eq!((stats.restarts, stats.crashes), (0, 0), "{stats:?}");
        assert_eq!(stats.workers, size);
        pool.shutdown_blocking().expect("a clean shutdown");
    }
}

#[test]
fn a_roll_to_a_mismatched_worker_stops_and_the_old_workers_keep_serving() {
    let pool = Arc::new(
        WorkerPool::from_builder(misbehave())
            .size(2)
            .start_blocking()
            .expect("starts"),
    );
    let before = pool.pids();
    let load = Load::start(&pool, 2);
    let mismatched = misbehave().compat(Compat::Semver(
        bincrew::semver::VersionReq::parse(">=99").expect("req"),
    ));
    let err = pool
        .roll_to_blocking(mismatched)
        .expect_err("the replacement's handshake fails");
    match &err {
        RollError::Start {
            replaced,
            workers,
            source,
            ..
        } => {
            assert_eq!((*replaced, *workers), (0, 2));
            assert!(
                matches!(**source, StartError::VersionMismatch(_)),
                "{source:?}"
            );
        }
        other => panic!("expected RollError::Start, got {other:?}"),
    }
    assert!(
        err.to_string().contains("stopped after 0 of 2 workers"),
        "{err}"
    );
    eventually("requests flow after the failed roll", || {
        load.answered.load(Ordering::Relaxed) > 200
    });
    let (_, failed) = load.stop();
    assert_eq!(failed, 0);
    assert_eq!(pool.pids(), before, "the old workers serve");
    assert_eq!(pool.stats().rolls, 0);
    // The pool's own builder is unchanged: a plain roll succeeds.
    pool.roll_blocking()
        .expect("a roll with the pool's builder");
}

/// A new binary deployed where the pool finds its worker: the roll starts from the new file,
/// and a file that is not the worker stops it with the old workers serving.
#[test]
fn a_roll_starts_workers_from_the_binary_deployed_since() {
    let dir = std::env::temp_dir().join(format!("bincrew-roll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let exe = dir.join("worker");
    let deploy = |from: &std::path::Path| {
        let staged = dir.join("staged");
        std::fs::copy(from, &staged).expect("copy");
        std::fs::rename(&staged, &exe).expect("rename");
    };
    deploy(&worker_bin("misbehave"));
    let pool = WorkerPool::from_builder(misbehave().exe(&exe))
        .size(2)
        .start_blocking()
        .expect("starts");
    let before = pool.pids();
    deploy(&worker_bin("hasher"));
    let err = pool
        .roll_blocking()
        .expect_err("hasher serves no misbehave");
    assert!(
        matches!(&err, RollError::Start { source, .. }
            if matches!(**source, StartError::UnknownWorker { .. })),
        "{err:?}"
    );
    assert_eq!(pool.pids(), before);
    assert_eq!(
        pool.run_blocking(Request::Echo("still".into()))
            .expect("served"),
        text("still")
    );
    deploy(&worker_bin("misbehave"));
    pool.roll_blocking().expect("the roll completes");
    assert!(pool.pids().iter().all(|pid| !before.contains(pid)));
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
}
