//! Every way the handshake can fail gives its own error, and never a hang.

use std::time::Duration;

use bincrew::{Compat, MismatchKind, StartError, Worker};
use misbehave::{Request, Response};
use semver::VersionReq;

use crate::support::{init, misbehave, worker_bin};

fn start_err(builder: bincrew::WorkerBuilder<Request, Response>) -> StartError {
    builder.start_blocking().expect_err("the start fails")
}

#[test]
fn an_unknown_worker_name_lists_what_the_binary_serves() {
    init();
    let err = Worker::<Request, Response>::builder("thumbnailer")
        .exe(worker_bin("misbehave"))
        .forward_stderr(false)
        .start_blocking()
        .expect_err("unknown");
    match &err {
        StartError::UnknownWorker {
            worker, available, ..
        } => {
            assert_eq!(worker, "thumbnailer");
            assert_eq!(available, &["misbehave", "echo-string"]);
        }
        other => panic!("{other:?}"),
    }
    let shown = err.to_string();
    assert!(
        shown
            .ends_with("does not serve worker `thumbnailer`; it serves `misbehave`, `echo-string`"),
        "{shown}"
    );
}

#[test]
fn a_semver_requirement_the_worker_does_not_meet_names_both_sides_and_the_fix() {
    let req = VersionReq::parse("^0.3").expect("req");
    let err = start_err(misbehave().compat(Compat::Semver(req)));
    let StartError::VersionMismatch(mismatch) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(mismatch.kind, MismatchKind::Requirement);
    assert_eq!(mismatch.peer.package, "misbehave");
    assert_eq!(mismatch.app.package, "bincrew");
    let id = mismatch.peer.build_id.as_deref().expect("stamped");
    assert_eq!(
        err.to_string(),
        format!(
            "worker `misbehave` is binary `misbehave` 0.1.0 (build {id}) at {}, but app `bincrew` 0.1.0 (no build id) \
             requires version ^0.3: the worker is too old for this app: redeploy a worker matching ^0.3",
            worker_bin("misbehave").display()
        )
    );
}

#[test]
fn a_newer_worker_than_the_requirement_says_to_update_the_app() {
    let req = VersionReq::parse("<0.1").expect("req");
    let err = start_err(misbehave().compat(Compat::Semver(req)));
    assert!(
        err.to_string()
            .contains("the worker is newer than this app supports: update the app"),
        "{err}"
    );
}

#[test]
fn same_version_fails_for_a_worker_of_another_version() {
    init();
    let err = Worker::<hasher::HashRequest, hasher::HashResponse>::builder(hasher::WORKER)
        .exe(worker_bin("hasher"))
        .compat(Compat::SameVersion)
        .start_blocking()
        .expect_err("0.2.0 is not 0.1.0");
    let StartError::VersionMismatch(mismatch) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(mismatch.kind, MismatchKind::Version);
    assert_eq!(mismatch.peer.version.to_string(), "0.2.0");
    let shown = err.to_string();
    assert!(shown.contains("binary `hasher` 0.2.0"), "{shown}");
    assert!(shown.contains("app `bincrew` 0.1.0"), "{shown}");
    assert!(shown.contains("the worker is newer than the app: update the app to 0.2.0, or redeploy the worker at version 0.1.0"), "{shown}");
}

#[test]
fn same_build_rejects_a_dedicated_binary_when_the_app_has_no_build_id() {
    init();
    let err = Worker::<Request, Response>::builder(misbehave::WORKER)
        .exe(worker_bin("misbehave"))
        .forward_stderr(false)
        .start_blocking()
        .expect_err("nothing shows one build");
    let StartError::VersionMismatch(mismatch) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(mismatch.kind, MismatchKind::Build);
    assert_eq!(mismatch.compat, Compat::SameBuild);
    assert!(
        err.to_string().contains(
            "requires same build: the app carries no build id: stamp the app with bincrew-build"
        ),
        "{err}"
    );
}

#[test]
fn mismatched_request_types_are_named() {
    init();
    let err = Worker::<String, u64>::builder(misbehave::WORKER)
        .exe(worker_bin("misbehave"))
        .compat(Compat::SameVersion)
        .forward_stderr(false)
        .start_blocking()
        .expect_err("types differ");
    match &err {
        StartError::TypeMismatch {
            side,
            app_type,
            worker_type,
            ..
        } => {
            assert_eq!(*side, bincrew::TypeSide::Request);
            assert_eq!(worker_type, "misbehave::Request");
            assert_eq!(app_type, "alloc::string::String");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_worker_that_exits_before_the_handshake_reports_its_status_and_stderr() {
    let err = start_err(misbehave().env("MISBEHAVE_EXIT_EARLY", "5"));
    match &err {
        StartError::ExitedBeforeHandshake { exit, stderr, .. } => {
            assert_eq!(exit.code, Some(5));
            assert!(stderr.contains("exiting before the handshake"), "{stderr}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("exited before the handshake with exit code 5; its stderr ends with: misbehave: exiting before the handshake, as asked"), "{err}");
}

#[test]
fn a_worker_that_never_connects_times_out_and_is_killed() {
    let err = start_err(
        misbehave()
            .env("MISBEHAVE_NEVER_CONNECT", "1")
            .connect_timeout(Duration::from_millis(300)),
    );
    match &err {
        StartError::Timeout {
            timeout, stderr, ..
        } => {
            assert_eq!(*timeout, Duration::from_millis(300));
            assert!(stderr.contains("never connecting"), "{stderr}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .contains("did not complete the handshake within 300ms and was killed"),
        "{err}"
    );
}

#[test]
fn a_wrong_token_is_rejected() {
    let err = start_err(misbehave().env("MISBEHAVE_WRONG_TOKEN", "1"));
    match &err {
        StartError::Handshake { reason, .. } => assert!(reason.contains("token"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_instead_of_a_hello_is_rejected() {
    let err = start_err(misbehave().env("MISBEHAVE_GARBAGE_HELLO", "1"));
    match &err {
        StartError::Handshake { reason, .. } => {
            assert!(reason.contains("not a bincrew hello"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_worker_without_init_is_told_to_call_it() {
    let err = start_err(misbehave().env("MISBEHAVE_NO_INIT", "1"));
    match &err {
        StartError::Handshake { reason, .. } => {
            assert!(
                reason.contains("does not call bincrew::init!()"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_executable_that_is_not_a_worker_and_exits_is_named_so() {
    init();
    let err = Worker::<Request, Response>::builder("anything")
        .exe("/bin/true")
        .start_blocking()
        .expect_err("not a worker");
    match &err {
        StartError::NotAWorker { outcome, .. } => assert_eq!(outcome, "exited with exit code 0"),
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("/bin/true is not a bincrew worker"),
        "{err}"
    );
}

#[test]
fn an_executable_that_is_not_a_worker_and_never_connects_is_named_so() {
    init();
    let err = Worker::<Request, Response>::builder("anything")
        .exe("/bin/sleep")
        .arg("30")
        .connect_timeout(Duration::from_millis(300))
        .start_blocking()
        .expect_err("not a worker");
    match &err {
        StartError::NotAWorker { outcome, .. } => {
            assert_eq!(outcome, "did not connect within 300ms")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_executable_is_a_spawn_error() {
    init();
    let err = Worker::<Request, Response>::builder("anything")
        .exe("/nonexistent/worker")
        .start_blocking()
        .expect_err("missing");
    assert!(matches!(err, StartError::Spawn { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot start worker `anything` from /nonexistent/worker"
    );
    assert!(std::error::Error::source(&err).is_some());
    // What `main` prints when it returns the error: the message and its cause, a few lines.
    let debug = format!("{err:?}");
    assert!(
        debug.starts_with(
            "cannot start worker `anything` from /nonexistent/worker\n\nCaused by:\n    "
        ),
        "{debug}"
    );
    assert!(debug.lines().count() <= 4, "{debug}");
}
