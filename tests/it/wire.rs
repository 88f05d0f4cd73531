//! The wire contract: the handshake compares the shapes of the types, one bad value fails one
//! request, `Json` carries self-describing types, and tests serve self-spawned workers.

use std::time::Duration;

use bincrew::{Compat, Json, Reply, RequestArgs, RunError, StartError, TypeSide, Worker};
use serde::{Deserialize, Serialize};
use wirecheck::{
    picky_answer, Carrier, CarrierRequest, CarrierResponse, Doc, Extra, Loose, Picky, Tagged,
};

use crate::support::{eventually, init, worker_bin};

fn wirecheck<I: bincrew::IpcValue, O: bincrew::IpcValue>(name: &str) -> Worker<I, O> {
    init();
    Worker::<I, O>::builder(name)
        .exe(worker_bin("wirecheck"))
        .compat(Compat::SameVersion)
        .start_blocking()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn drift<I: bincrew::IpcValue>() -> StartError {
    init();
    Worker::<I, u64>::builder("job")
        .exe(worker_bin("wirecheck"))
        .compat(Compat::SameVersion)
        .start_blocking()
        .map(|_| ())
        .expect_err("the types differ")
}

#[test]
fn a_drifted_type_at_a_compatible_version_fails_the_start_naming_the_field() {
    // The app's copy of the type is older than the worker's: it lacks `level`.
    #[derive(Serialize, Deserialize)]
    struct Job {
        id: u64,
        text: String,
    }
    let err = drift::<Job>();
    let StartError::TypeMismatch {
        side,
        app_type,
        worker_type,
        difference,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*side, TypeSide::Request);
    assert!(app_type.ends_with("::Job"), "{app_type}");
    assert_eq!(worker_type, "wirecheck::Job");
    assert_eq!(
        difference,
        "field `level` of `Job` is in the worker's type, not in the app's"
    );
    assert!(
        err.to_string()
            .starts_with("worker `job` does not take the app's request type"),
        "{err}"
    );

    // Newer than the worker's: `level` became a `u64`.
    #[derive(Serialize, Deserialize)]
    struct NewerJob {
        id: u64,
        text: String,
        level: u64,
    }
    let err = drift::<NewerJob>();
    let StartError::TypeMismatch { difference, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        difference,
        "it is `u64` in the app and `u32` in the worker (at `NewerJob.level`)"
    );

    // The same shape under another name is the same type on the wire.
    #[derive(Serialize, Deserialize)]
    struct SameJob {
        id: u64,
        text: String,
        level: u32,
    }
    init();
    let worker = Worker::<SameJob, u64>::builder("job")
        .exe(worker_bin("wirecheck"))
        .compat(Compat::SameVersion)
        .start_blocking()
        .expect("same shape");
    let sum = worker
        .run_blocking(SameJob {
            id: 40,
            text: "x".into(),
            level: 2,
        })
        .expect("answered");
    assert_eq!(sum, 42);
}

#[test]
fn a_response_type_that_drifted_is_named_too() {
    init();
    let err = Worker::<wirecheck::Job, u32>::builder("job")
        .exe(worker_bin("wirecheck"))
        .compat(Compat::SameVersion)
        .start_blocking()
        .map(|_| ())
        .expect_err("u32 is not u64");
    let StartError::TypeMismatch {
        side, difference, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*side, TypeSide::Response);
    assert_eq!(difference, "it is `u32` in the app and `u64` in the worker");
}

/// Runs 16 requests in one batch, of which `bad` is the only one that fails, and returns its
/// error.
fn one_bad_in_sixteen(worker: &Worker<Picky, Picky>, bad: u32) -> RunError {
    let requests: Vec<u32> = (0..16)
        .map(|i| if i == 5 { bad } else { 100 + i })
        .collect();
    let replies: Vec<Reply<Picky>> = requests.iter().map(|&n| worker.run(Picky(n))).collect();
    let mut failure = None;
    for (n, reply) in requests.into_iter().zip(replies) {
        match reply.wait() {
            Ok(answer) => assert_eq!(answer, picky_answer(n), "request {n}"),
            Err(e) if n == bad => failure = Some(e),
            Err(e) => panic!("request {n} failed with the bad one: {e}"),
        }
    }
    failure.expect("the bad request failed")
}

#[test]
fn one_value_that_does_not_encode_or_decode_fails_its_own_request_only() {
    let worker = wirecheck::<Picky, Picky>("picky");
    let pid = worker.id();

    // The app cannot encode it: not sent.
    let err = one_bad_in_sixteen(&worker, 13);
    let RunError::RequestEncode {
        type_name, reason, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(type_name, "wirecheck::Picky");
    assert_eq!(reason, "13 is unlucky");
    assert_eq!(
        err.to_string(),
        "cannot encode a `wirecheck::Picky` request for worker `picky`: 13 is unlucky; it was not sent"
    );

    // The worker cannot decode it: not run.
    let err = one_bad_in_sixteen(&worker, 7);
    let RunError::RequestDecode { reason, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(reason, "7 is refused");
    assert!(
        err.to_string().contains(
            "cannot decode a `wirecheck::Picky` request: 7 is refused; it did not run it"
        ),
        "{err}"
    );

    // The worker cannot encode its response.
    let err = one_bad_in_sixteen(&worker, 1013);
    let RunError::ResponseEncode { reason, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(reason, "13 is unlucky");

    // The app cannot decode the response.
    let err = one_bad_in_sixteen(&worker, 1007);
    let RunError::ResponseDecode {
        type_name, reason, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(type_name, "wirecheck::Picky");
    assert_eq!(reason, "7 is refused");

    // A value whose `Serialize` panics fails alone too, on either side: the app's thread and
    // the worker go on.
    let err = one_bad_in_sixteen(&worker, 66);
    let RunError::RequestEncode { reason, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(reason, "encoding it panicked: 66 is cursed");
    let err = one_bad_in_sixteen(&worker, 1066);
    let RunError::ResponseEncode { reason, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(reason, "encoding it panicked: 66 is cursed");

    // The same process served it all.
    assert_eq!(worker.id(), pid);
    assert_eq!(worker.run_blocking(Picky(3)).expect("serves on"), Picky(3));
}

#[test]
fn channels_carried_by_an_item_that_failed_are_closed() {
    let worker = wirecheck::<CarrierRequest, CarrierResponse>("carrier");

    // To the worker: the request does not decode there, and the channel it carried is closed
    // (the app holds no other sender, so its receiver sees the channel end).
    let (tx, rx) = bincrew::channel::<u32>().expect("channel");
    let err = worker
        .run_blocking(CarrierRequest::Take(Carrier {
            value: Picky(7),
            channel: tx,
        }))
        .expect_err("7 does not decode");
    // (A type that carries IPC handles is not decoded a second time to recover the message
    // of its own error.)
    assert!(matches!(&err, RunError::RequestDecode { .. }), "{err}");
    match rx.try_recv_timeout(Duration::from_secs(30)) {
        Err(bincrew_try_recv) => assert!(
            format!("{bincrew_try_recv:?}").contains("Disconnected"),
            "the channel stayed open: {bincrew_try_recv:?}"
        ),
        Ok(n) => panic!("received {n}"),
    }

    // To the app: the response does not decode here, and the app closes its channel, which
    // the worker sees.
    let err = worker
        .run_blocking(CarrierRequest::Give(7))
        .expect_err("7 does not decode");
    assert!(matches!(err, RunError::ResponseDecode { .. }), "{err}");
    eventually("the worker sees the channel closed", || {
        matches!(
            worker.run_blocking(CarrierRequest::Closed),
            Ok(CarrierResponse::Closed(1))
        )
    });
    // And the worker serves on.
    assert!(matches!(
        worker.run_blocking(CarrierRequest::Give(8)),
        Ok(CarrierResponse::Carrier(Carrier {
            value: Picky(8),
            ..
        }))
    ));
}

fn docs() -> Vec<Doc> {
    vec![
        Doc {
            value: serde_json::json!({"a": [1, 2, {"b": null}], "c": "d"}),
            loose: Loose::Number(7),
            tagged: Tagged::Circle { r: 1.5 },
            extra: Extra {
                note: "flattened".into(),
            },
            maybe: None,
        },
        Doc {
            value: serde_json::Value::Null,
            loose: Loose::Text("seven".into()),
            tagged: Tagged::Square { side: 2.0 },
            extra: Extra {
                note: String::new(),
            },
            maybe: Some(3),
        },
    ]
}

#[test]
fn json_carries_self_describing_types() {
    let worker = wirecheck::<Json<Doc>, Json<Doc>>("json");
    for doc in docs() {
        let back = worker.run_blocking(Json(doc.clone())).expect("round trip");
        assert_eq!(back.0, doc);
    }
    let whole = worker.run_blocking(Json(docs()[1].clone())).expect("again");
    assert_eq!(whole.into_inner().maybe, Some(3));
}

#[test]
fn without_json_such_types_fail_with_a_hint() {
    let worker = wirecheck::<Doc, Doc>("plain-doc");
    let err = worker
        .run_blocking(docs().remove(0))
        .expect_err("flatten cannot be encoded");
    let RunError::RequestEncode { reason, .. } = &err else {
        panic!("{err}")
    };
    assert!(reason.contains("`bincrew::Json`"), "{reason}");
}

#[test]
fn self_spawned_in_a_test_doubles() {
    init();
    bincrew::run_worker_blocking("test-double", |args: RequestArgs<u32>| args.request * 2);

    let worker = Worker::<u32, u32>::builder("test-double")
        .in_test()
        .start_blocking()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(worker.run_blocking(21).expect("answered"), 42);
}

#[test]
fn self_spawned_in_a_test_triples_and_a_second_run_worker_is_explained() {
    init();
    bincrew::run_worker_blocking("test-triple", |args: RequestArgs<u32>| args.request * 3);
    bincrew::run_worker_blocking("test-args", |_: RequestArgs<()>| {
        std::env::args().skip(1).collect::<Vec<_>>()
    });

    let worker = Worker::<u32, u32>::builder("test-triple")
        .in_test()
        .start_blocking()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(worker.run_blocking(14).expect("answered"), 42);

    // A second `run_worker` call cannot serve in a worker process: the error says why.
    let err = Worker::<(), Vec<String>>::builder("test-args")
        .in_test()
        .start_blocking()
        .map(|_| ())
        .expect_err("the first run_worker call of this test serves test-triple");
    let StartError::UnknownWorker {
        available, hint, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(available, &["test-triple"]);
    assert!(hint.contains("bincrew::Workers"), "{hint}");
    assert!(
        err.to_string()
            .contains("each bincrew::run_worker call serves one name"),
        "{err}"
    );
}

#[test]
fn in_test_passes_the_test_filter_to_the_worker() {
    init();
    bincrew::run_worker_blocking("test-filter", |_: RequestArgs<()>| {
        std::env::args().skip(1).collect::<Vec<_>>()
    });
    let worker = Worker::<(), Vec<String>>::builder("test-filter")
        .in_test()
        .start_blocking()
        .unwrap_or_else(|e| panic!("{e}"));
    let args = worker.run_blocking(()).expect("answered");
    assert_eq!(
        args,
        [
            "--exact",
            "--test-threads=1",
            "-q",
            "wire::in_test_passes_the_test_filter_to_the_worker"
        ]
    );
}

#[test]
fn a_test_that_never_serves_its_worker_is_told_so() {
    init();
    // No run_worker for "test-unserved": in the worker process this test runs on into the
    // start below, which refuses (it is a worker process), and the test fails there.
    let err = Worker::<u32, u32>::builder("test-unserved")
        .in_test()
        .start_blocking()
        .map(|_| ())
        .expect_err("never served");
    if std::env::var_os("BINCREW_WORKER").is_some() {
        return;
    }
    let StartError::NotServed { worker, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(worker, "test-unserved");
    assert!(
        err.to_string()
            .contains("but its main never served it: it exited with"),
        "{err}"
    );
}

#[test]
fn in_test_from_a_thread_that_is_not_a_test_is_refused() {
    init();
    let err = std::thread::Builder::new()
        .name("main".into())
        .spawn(|| {
            Worker::<u32, u32>::builder("anything")
                .in_test()
                .start_blocking()
                .map(|_| ())
                .expect_err("not a test")
        })
        .expect("thread")
        .join()
        .expect("joined");
    assert!(matches!(err, StartError::NotATest { .. }), "{err}");
}

#[test]
fn in_a_pool_a_bad_value_restarts_nothing() {
    init();
    let pool = bincrew::WorkerPool::from_builder(
        Worker::<Picky, Picky>::builder("picky")
            .exe(worker_bin("wirecheck"))
            .compat(Compat::SameVersion),
    )
    .size(2)
    .max_restarts(1, Duration::from_secs(60))
    .start_blocking()
    .unwrap_or_else(|e| panic!("{e}"));
    let pids = pool.pids();
    for bad in [7, 13, 1007, 1013, 7, 13, 1007, 1013] {
        let err = pool
            .run_retryable(Picky(bad), bincrew::RunOptions::new())
            .wait()
            .expect_err("a bad value");
        assert!(!matches!(err, RunError::Crashed(_)), "{err}");
    }
    assert_eq!(pool.run_blocking(Picky(5)).expect("serves on"), Picky(5));
    assert_eq!(pool.restart_count(), 0);
    assert_eq!(pool.pids(), pids);
}

#[test]
fn async_handlers_run_in_a_tokio_runtime_when_asked() {
    let worker = wirecheck::<String, Result<String, String>>("tokio-io");
    let replies: Vec<_> = (0..8).map(|i| worker.run(format!("ping {i}"))).collect();
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.wait().expect("answered"), Ok(format!("PING {i}")));
    }
}

#[test]
fn a_request_that_does_not_decode_is_answered_before_a_shutdown_ends_the_worker() {
    for _ in 0..5 {
        let worker = wirecheck::<Picky, Picky>("picky");
        // Queued, then sent in one message with the shutdown's end marker behind it.
        let bad = worker.run(Picky(7));
        let good = worker.run(Picky(8));
        worker.shutdown_blocking().expect("clean exit");
        let bad = bad.wait();
        assert!(
            matches!(bad, Err(RunError::RequestDecode { .. })),
            "the bad request's own error: {bad:?}"
        );
        assert_eq!(good.wait().expect("answered"), Picky(8));
    }
}

/// A string of `len` letters that differs with `seed`.
fn letters(len: usize, seed: usize) -> String {
    (0..len)
        .map(|i| char::from(b'a' + ((i + seed) % 26) as u8))
        .collect()
}

fn echo_text(worker: &Worker<misbehave::Request, misbehave::Response>, text: &str) -> String {
    match worker.run_blocking(misbehave::Request::Echo(text.to_owned())) {
        Ok(misbehave::Response::Text(back)) => back,
        other => panic!("echo of {} bytes: {other:?}", text.len()),
    }
}

/// How many mappings of shared memory process `pid` has.
#[cfg(target_os = "linux")]
fn shared_mappings(pid: u64) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("the worker's maps");
    maps.lines()
        .filter(|line| line.contains("ipc-channel-shared-memory"))
        .count()
}

/// Large bodies cross in a region of shared memory each side keeps: whatever their sizes, one
/// after another or many at once, with IPC handles in their type or not, they arrive intact,
/// and a worker maps two regions (its own and the app's), no more.
#[cfg(target_os = "linux")]
#[test]
fn large_bodies_cross_in_a_region_each_side_keeps() {
    use crate::support::start_misbehave;
    // Strings: written straight into the region.
    let strings: Worker<String, String> = crate::support::misbehave_builder("echo-string")
        .start_blocking()
        .expect("starts");
    // Growing (a new region each time), past the largest region (new shared memory of its
    // own), and back down (the region kept).
    let sizes = [
        20 << 10,
        64 << 10,
        300 << 10,
        1 << 20,
        3 << 20,
        20 << 10,
        1 << 20,
    ];
    for (round, len) in sizes.into_iter().enumerate() {
        let sent = letters(len, round);
        let back = strings.run_blocking(sent.clone()).expect("echoed");
        assert!(back == sent, "{len} bytes came back changed");
    }
    assert_eq!(shared_mappings(u64::from(strings.id())), 2);

    // A type that may carry channels: encoded first, then copied into the region. Many in
    // flight: those that find a region busy go through the socket.
    let worker = start_misbehave();
    let pid = match worker.run_blocking(misbehave::Request::Pid) {
        Ok(misbehave::Response::Number(pid)) => pid,
        other => panic!("{other:?}"),
    };
    for round in 0..3 {
        let sent = letters(100 << 10, round);
        assert!(echo_text(&worker, &sent) == sent, "changed");
    }
    let replies: Vec<_> = (0..32)
        .map(|i| {
            let sent = letters(100 << 10, i);
            let reply = worker.run(misbehave::Request::Echo(sent.clone()));
            (sent, reply)
        })
        .collect();
    for (sent, reply) in replies {
        match futures::executor::block_on(reply) {
            Ok(misbehave::Response::Text(back)) => assert!(back == sent, "changed in flight"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(shared_mappings(pid), 2);
}

/// An answer placed in the region is held to the app's message limit like any other.
#[test]
fn an_answer_in_the_region_over_the_limit_kills_the_worker_with_the_reason() {
    let worker = crate::support::misbehave()
        .max_message_size(32 << 10)
        .start_blocking()
        .expect("starts");
    let within = letters(20 << 10, 0);
    assert!(echo_text(&worker, &within) == within);
    let err = worker
        .run_blocking(misbehave::Request::Echo(letters(40 << 10, 1)))
        .expect_err("over the limit");
    let RunError::Crashed(report) = &err else {
        panic!("{err:?}")
    };
    let reason = report.killed_by_app.as_deref().expect("killed by the app");
    assert!(reason.ends_with("over the limit of 32768"), "{reason}");
}

/// A worker with no descriptor left cannot put a large answer in shared memory (`ipc-channel`
/// panics where it creates or duplicates the memory's descriptor): that request fails with the
/// reason, and the worker serves the next one.
#[cfg(target_os = "linux")]
#[test]
fn a_large_answer_with_no_descriptor_left_fails_with_the_reason_and_the_worker_serves_on() {
    let worker = crate::support::misbehave()
        .start_blocking()
        .expect("starts");
    let err = worker
        .run_blocking(misbehave::Request::NoDescriptors(1 << 20))
        .expect_err("no shared memory for the answer");
    let RunError::ResponseEncode { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        reason.contains("no file descriptor or address space left"),
        "{reason}"
    );
    assert_eq!(
        worker
            .run_blocking(misbehave::Request::Echo("after".into()))
            .expect("served on"),
        misbehave::Response::Text("after".into())
    );
}

/// The same in the app: a request too large for the socket, sent when the app has no
/// descriptor left, fails with the reason (one that carries a channel too), and the next
/// request is served.
#[cfg(target_os = "linux")]
#[test]
fn a_large_request_with_no_descriptor_left_fails_with_the_reason_and_the_app_runs_on() {
    let run = crate::support::AppRun::of("no-descriptors");
    for key in ["large: ", "large-with-channel: "] {
        let large = run.value(key);
        assert!(
            large.contains("cannot encode")
                && large.contains("no file descriptor or address space left"),
            "{large}"
        );
    }
    // Without the channel of the failed message (its worker would refuse it as not sent).
    assert_eq!(run.value("after: "), "Text(\"after\")", "{}", run.stdout);
    assert!(run.out.status.success(), "{:?}", run.out);
}
