//! How a worker sends its answers back: pipelined answers share messages, and an answer held
//! back for that never waits for a slow handler.

use std::time::Duration;

use bincrew::RunOptions;
use misbehave::{Request, Response};

use crate::support::{eventually, misbehave, text};

/// Requests sent together to a worker with one handler thread at a time.
const PIPELINED: usize = 200;

#[test]
fn pipelined_answers_share_messages() {
    let worker = misbehave().parallelism(1).start_blocking().expect("starts");
    let replies: Vec<_> = (0..PIPELINED)
        .map(|i| worker.run(Request::Echo(format!("echo {i}"))))
        .collect();
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.wait().expect("answer"), text(&format!("echo {i}")));
    }
    // Read by the next handler: every message sent before this request ran.
    let messages = match worker.run_blocking(Request::AnswerMessages) {
        Ok(Response::Number(n)) => n,
        other => panic!("unexpected answer: {other:?}"),
    };
    // The app sends them in messages of 16 (its default `max_batch`), and a message of
    // answers carries up to 16 too: about one message of answers per message of requests.
    // Sent one by one (each as its handler ends, unless another thread was sending), they took
    // between 80 and 200 messages; the margin left above 13 is for a busy machine, where the
    // hold bound may send a few batches early.
    assert!(
        messages <= PIPELINED as u64 / 4,
        "{PIPELINED} pipelined answers took {messages} messages"
    );
    worker.shutdown_blocking().expect("clean shutdown");
}

#[test]
fn a_held_answer_does_not_wait_for_a_slow_handler() {
    let worker = misbehave().parallelism(1).start_blocking().expect("starts");
    // Sent in one message: the worker's only handler thread runs the fast request, then the
    // slow one, which runs until it is cancelled. The fast one's answer may be held back while
    // the next request runs, but not for longer than the worker's hold bound: it arrives well
    // within the (generous) timeout, while the slow request still runs.
    let fast = worker.run_with(
        Request::Echo("fast".into()),
        RunOptions::new().timeout(Duration::from_secs(20)),
    );
    let slow = worker.run(Request::Busy { ms: 600_000 });
    assert_eq!(fast.wait().expect("answered in time"), text("fast"));
    assert_eq!(worker.in_flight(), 1, "the slow request still runs");
    // The cancellation reaches the worker while its only handler is busy.
    drop(slow);
    eventually("the slow request saw its cancellation", || {
        worker.run_blocking(Request::CancelledCount).ok() == Some(Response::Number(1))
    });
    worker.shutdown_blocking().expect("clean shutdown");
}

#[test]
fn shutdown_sends_every_answer_of_a_pipelined_batch() {
    let worker = misbehave().parallelism(1).start_blocking().expect("starts");
    let replies: Vec<_> = (0..PIPELINED)
        .map(|i| worker.run(Request::Echo(format!("echo {i}"))))
        .collect();
    // The shutdown follows every request: the worker answers them all before it exits.
    worker.shutdown_blocking().expect("clean shutdown");
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.wait().expect("answer"), text(&format!("echo {i}")));
    }
}
