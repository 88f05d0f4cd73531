//! Every way a worker can die fails what is in flight with a report of how, and the app goes on.

use std::sync::Arc;

use bincrew::{RunError, ShutdownError, WorkerCrashError};
use misbehave::Request;

use crate::support::{start_misbehave, text};

/// Sends a request that stays in flight, then `crash`, and checks both fail with the same
/// report, later requests too, and a new worker starts fine.
fn crash_with(crash: Request) -> Arc<WorkerCrashError> {
    let worker = start_misbehave();
    let pending = worker.run(Request::WaitFor("never".into()));
    let crashing = worker.run(crash);
    let report = match crashing.wait() {
        Err(RunError::Crashed(report)) => report,
        other => panic!("expected a crash, got {other:?}"),
    };
    match pending.wait() {
        Err(RunError::Crashed(pending_report)) => assert_eq!(pending_report, report),
        other => panic!("expected the pending request to fail, got {other:?}"),
    }
    match worker.run_blocking(Request::Echo("after".into())) {
        Err(RunError::Crashed(later)) => assert_eq!(later, report),
        other => panic!("expected later requests to fail at once, got {other:?}"),
    }
    assert_eq!(worker.crash_error(), Some(report.clone()));
    assert_eq!(report.pid, worker.id());
    assert_eq!(report.worker, "misbehave");
    match worker.shutdown_blocking() {
        Err(ShutdownError::Crashed(r)) => assert_eq!(r, report),
        other => panic!("expected shutdown to report the crash, got {other:?}"),
    }
    // The app is unaffected and can start a new worker.
    let fresh = start_misbehave();
    assert_eq!(
        fresh
            .run_blocking(Request::Echo("fresh".into()))
            .expect("answer"),
        text("fresh")
    );
    report
}

#[test]
fn panic_reports_its_message_and_location() {
    let report = crash_with(Request::Panic("boom 42".into()));
    assert_eq!(report.panic_message.as_deref(), Some("boom 42"));
    let location = report.panic_location.as_deref().expect("location");
    assert!(location.contains("main.rs"), "{location}");
    assert_eq!(report.code(), Some(101));
    assert!(
        report.stderr_tail.contains("boom 42"),
        "{}",
        report.stderr_tail
    );
    let shown = RunError::Crashed(report.clone()).to_string();
    assert!(shown.starts_with("worker `misbehave` (pid "), "{shown}");
    assert!(shown.contains("panicked: boom 42 (at "), "{shown}");
}

#[test]
fn abort_reports_sigabrt() {
    let report = crash_with(Request::Abort);
    assert_eq!(report.signal_name(), Some("SIGABRT"));
    assert_eq!(report.code(), None);
    assert_eq!(report.panic_message, None);
    assert!(
        report
            .to_string()
            .contains("was killed by signal 6 (SIGABRT)"),
        "{report}"
    );
}

#[test]
fn segfault_reports_sigsegv() {
    let report = crash_with(Request::Segfault);
    assert_eq!(report.signal_name(), Some("SIGSEGV"));
    assert!(report.to_string().contains("(SIGSEGV)"), "{report}");
}

#[test]
fn stack_overflow_reports_the_signal_and_rusts_message() {
    let report = crash_with(Request::StackOverflow);
    assert!(
        matches!(report.signal_name(), Some("SIGSEGV" | "SIGABRT")),
        "{report:?}"
    );
    assert!(
        report.stderr_tail.contains("has overflowed its stack"),
        "{}",
        report.stderr_tail
    );
}

#[test]
fn exit_reports_the_code_and_the_end_of_stderr() {
    let worker = start_misbehave();
    worker
        .run_blocking(Request::Stderr("last words before exit".into()))
        .expect("answer");
    let report = match worker.run_blocking(Request::Exit(7)) {
        Err(RunError::Crashed(report)) => report,
        other => panic!("expected a crash, got {other:?}"),
    };
    assert_eq!(report.code(), Some(7));
    assert_eq!(report.signal(), None);
    assert!(report.stderr_tail.contains("last words before exit"));
    assert_eq!(
        report.to_string(),
        format!(
            "worker `misbehave` (pid {}) exited with exit code 7; its stderr ends with: last words before exit",
            report.pid
        )
    );
    // The same through the shared checks.
    assert_eq!(crash_with(Request::Exit(3)).code(), Some(3));
}

#[test]
fn a_worker_killed_from_outside_reports_sigkill() {
    let worker = start_misbehave();
    let pending = worker.run(Request::WaitFor("never".into()));
    let status = std::process::Command::new("kill")
        .args(["-9", &worker.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    match pending.wait() {
        Err(RunError::Crashed(report)) => {
            assert_eq!(report.signal_name(), Some("SIGKILL"));
            assert!(report
                .to_string()
                .contains("was killed by signal 9 (SIGKILL)"));
        }
        other => panic!("expected a crash, got {other:?}"),
    }
}

#[test]
fn a_crash_with_nothing_in_flight_is_reported_to_the_next_request() {
    let worker = start_misbehave();
    let pid = worker.id();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill runs");
    crate::support::eventually("the crash is noticed", || worker.crash_error().is_some());
    let err = worker
        .run_blocking(Request::Echo("x".into()))
        .expect_err("crashed");
    assert!(
        matches!(err, RunError::Crashed(ref r) if r.signal_name() == Some("SIGKILL")),
        "{err:?}"
    );
}
