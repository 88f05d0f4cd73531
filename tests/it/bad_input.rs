//! Peers that break the protocol: each gives its typed error, never a hang or a panic.

use bincrew::{RunError, StartError, Worker};
use misbehave::{Request, Response};

use crate::support::{init, misbehave};

#[test]
fn garbage_after_the_handshake_kills_the_worker_with_a_protocol_report() {
    // Frames placed in shared memory that does not hold them, too.
    for kind in ["garbage", "truncated", "region-unsent", "region-past-end"] {
        let worker = misbehave()
            .env("MISBEHAVE_FAKE", kind)
            .start_blocking()
            .expect("the handshake itself is correct");
        let err = worker
            .run_blocking(Request::Echo(String::new()))
            .expect_err("no answer");
        let RunError::Crashed(report) = &err else {
            panic!("{kind}: {err:?}")
        };
        let reason = report.killed_by_app.as_deref().expect("killed by the app");
        assert!(
            reason.starts_with("it broke the protocol: it sent a message that does not decode"),
            "{kind}: {reason}"
        );
        assert!(
            err.to_string()
                .contains("was killed by the app: it broke the protocol"),
            "{err}"
        );
        // What is wrong with the frame, as bincrew found it.
        let why = match kind {
            "region-unsent" => Some("a frame in shared memory it never sent"),
            "region-past-end" => {
                Some("a frame of 1048576 bytes at 0 in shared memory of 4096 bytes")
            }
            _ => None,
        };
        if let Some(why) = why {
            assert!(reason.ends_with(why), "{kind}: {reason}");
        }
    }
}

#[test]
fn a_truncated_hello_is_rejected() {
    let err = misbehave()
        .env("MISBEHAVE_TRUNCATED_HELLO", "1")
        .start_blocking()
        .expect_err("rejected");
    match &err {
        StartError::Handshake { reason, .. } => {
            assert!(reason.starts_with("its hello has"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_program_that_prints_garbage_and_exits_is_not_a_worker() {
    init();
    let err = Worker::<Request, Response>::builder("anything")
        .exe("/bin/sh")
        .arg("-c")
        .arg("head -c 3000 /dev/urandom >&2; exit 3")
        .forward_stderr(false)
        .start_blocking()
        .expect_err("not a worker");
    match &err {
        StartError::NotAWorker {
            outcome, stderr, ..
        } => {
            assert_eq!(outcome, "exited with exit code 3");
            assert!(!stderr.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_worker_process_that_runs_app_code_refuses_to_start_workers() {
    // Started as a worker, it skips serving and runs `selfspawn`, whose start must refuse
    // instead of starting a copy of itself.
    let err = misbehave()
        .env("MISBEHAVE_SKIP_SERVE", "1")
        .arg("selfspawn")
        .start_blocking()
        .expect_err("never serves");
    match &err {
        StartError::ExitedBeforeHandshake { exit, stderr, .. } => {
            assert_eq!(exit.code, Some(1));
            assert!(
                stderr.contains("start failed: this process was started as worker `misbehave` (BINCREW_WORKER=misbehave) but does not serve it"),
                "{stderr}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_message_naming_a_channel_it_did_not_send_is_a_protocol_error_not_a_panic() {
    // ipc-channel 0.23 panics decoding such a message; the reader must not die with it.
    init();
    let worker = Worker::<u32, bincrew::IpcSender<u32>>::builder("stream")
        .exe(crate::support::worker_bin("misbehave"))
        .compat(bincrew::Compat::SameVersion)
        .forward_stderr(false)
        .env("MISBEHAVE_FAKE", "bad-index")
        .start_blocking()
        .expect("the handshake itself is correct");
    let err = worker.run_blocking(7).expect_err("no answer");
    let RunError::Crashed(report) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        report.killed_by_app.as_deref(),
        Some("it broke the protocol: it sent a message that names a channel it did not send")
    );

    // A `ready=` line that does not hold the channels: refused at once, not at the timeout.
    let err = misbehave()
        .env("MISBEHAVE_FAKE", "broken-ready")
        .connect_timeout(std::time::Duration::from_secs(60))
        .start_blocking()
        .expect_err("rejected");
    match &err {
        StartError::Handshake { reason, .. } => {
            assert!(
                reason.contains("`ready=` line does not hold its channels"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }

    let err = misbehave()
        .env("MISBEHAVE_FAKE", "bad-ready")
        .start_blocking()
        .expect_err("rejected");
    match &err {
        StartError::Handshake { reason, .. } => {
            assert!(
                reason.contains("names a channel it did not send"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}
