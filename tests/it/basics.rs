//! Requests, parallelism, shutdown and drop.

use std::future::Future;
use std::sync::{Arc, Mutex};

use bincrew::{RunError, ShutdownError};
use futures::task::noop_waker_ref;
use misbehave::{Request, Response};

use crate::support::{misbehave, process_alive, start_misbehave, text};

#[test]
fn echo_round_trip_and_build_info() {
    let worker = start_misbehave();
    assert_eq!(
        worker
            .run_blocking(Request::Echo("hi".into()))
            .expect("answer"),
        text("hi")
    );
    let info = worker.build_info();
    assert_eq!(info.package, "misbehave");
    assert_eq!(info.version.to_string(), "0.1.0");
    // Stamped by bincrew-build: 20 hex digits.
    let id = info.build_id.as_deref().expect("misbehave is stamped");
    assert!(
        id.len() == 20 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(worker.name(), "misbehave");
    let pid = worker.run_blocking(Request::Pid).expect("answer");
    assert_eq!(pid, Response::Number(u64::from(worker.id())));
    worker.shutdown_blocking().expect("clean shutdown");
}

#[test]
fn a_later_request_is_answered_while_an_earlier_one_waits() {
    let worker = start_misbehave();
    let mut first = worker.run(Request::WaitFor("gate".into()));
    let second = worker.run(Request::Echo("second".into()));
    assert_eq!(second.wait().expect("answer"), text("second"));
    // The first is still in flight: polling it finds nothing yet.
    let mut cx = std::task::Context::from_waker(noop_waker_ref());
    assert!(std::pin::Pin::new(&mut first).poll(&mut cx).is_pending());
    worker
        .run_blocking(Request::Release("gate".into()))
        .expect("release");
    assert_eq!(
        futures::executor::block_on(first).expect("answer"),
        text("gate")
    );
}

#[test]
fn many_requests_in_flight_finish_in_the_order_the_worker_finishes_them() {
    const N: usize = 12;
    let worker = Arc::new(
        misbehave()
            .parallelism(N + 2)
            .start_blocking()
            .expect("starts"),
    );
    let finished = Arc::new(Mutex::new(Vec::new()));
    let waiters: Vec<_> = (0..N)
        .map(|i| {
            let reply = worker.run(Request::WaitFor(format!("k{i}")));
            let finished = finished.clone();
            std::thread::spawn(move || {
                let answer = reply.wait().expect("answer");
                finished.lock().expect("lock").push(answer);
            })
        })
        .collect();
    // Release them in reverse order, each only once the previous one has been answered.
    for i in (0..N).rev() {
        worker
            .run_blocking(Request::Release(format!("k{i}")))
            .expect("release");
        crate::support::eventually("the released request is answered", || {
            finished.lock().expect("lock").len() == N - i
        });
    }
    for waiter in waiters {
        waiter.join().expect("waiter");
    }
    let expected: Vec<Response> = (0..N).rev().map(|i| text(&format!("k{i}"))).collect();
    assert_eq!(*finished.lock().expect("lock"), expected);
}

#[test]
fn shutdown_answers_the_requests_in_flight_then_exits() {
    let worker = start_misbehave();
    let pid = worker.id();
    let in_flight: Vec<_> = (0..4)
        .map(|i| {
            worker.run(Request::Sleep {
                ms: 200,
                reply: format!("late {i}"),
            })
        })
        .collect();
    worker.shutdown_blocking().expect("clean shutdown");
    for (i, reply) in in_flight.into_iter().enumerate() {
        assert_eq!(reply.wait().expect("drained"), text(&format!("late {i}")));
    }
    assert!(!process_alive(pid), "the worker exited");
    // No new requests, and a second shutdown is fine.
    let err = worker
        .run_blocking(Request::Echo("too late".into()))
        .expect_err("shut down");
    assert!(matches!(err, RunError::ShutDown { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "worker `misbehave` is shut down and takes no new requests"
    );
    worker.shutdown_blocking().expect("second shutdown");
    assert_eq!(worker.crash_error(), None);
}

#[test]
fn shutdown_kills_a_worker_that_does_not_finish_within_the_grace_period() {
    let worker = misbehave()
        .shutdown_grace(std::time::Duration::from_millis(200))
        .start_blocking()
        .expect("starts");
    let pid = worker.id();
    let hung = worker.run(Request::Hang);
    let err = worker.shutdown_blocking().expect_err("killed");
    assert!(matches!(err, ShutdownError::Killed { .. }), "{err:?}");
    assert!(err.to_string().contains("was killed"), "{err}");
    assert!(!process_alive(pid));
    assert!(hung.wait().is_err());
}

#[test]
fn dropping_a_worker_kills_and_reaps_it_and_fails_its_requests() {
    let worker = start_misbehave();
    let pid = worker.id();
    let hung = worker.run(Request::Hang);
    assert!(process_alive(pid));
    drop(worker);
    // Killed without waiting, then reaped: not even a zombie is left.
    crate::support::eventually("the worker is reaped", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    let err = hung.wait().expect_err("dropped");
    assert!(matches!(err, RunError::ShutDown { .. }), "{err:?}");
}

#[test]
fn a_dropped_reply_does_not_disturb_the_others() {
    let worker = start_misbehave();
    drop(worker.run(Request::Sleep {
        ms: 50,
        reply: "dropped".into(),
    }));
    assert_eq!(
        worker
            .run_blocking(Request::Echo("kept".into()))
            .expect("answer"),
        text("kept")
    );
    worker.shutdown_blocking().expect("clean shutdown");
}
