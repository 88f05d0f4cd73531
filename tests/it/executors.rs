//! The futures work on any executor, and `Worker` is shared across threads.

use std::sync::Arc;

use bincrew::{Reply, RunError, Worker};
use futures::future::join_all;
use misbehave::{Request, Response};

use crate::support::{misbehave, text};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send_static<T: Send + 'static>() {}

#[test]
fn worker_is_send_and_sync_and_replies_are_send_and_static() {
    assert_send_sync::<Worker<Request, Response>>();
    assert_send_static::<Reply<Response>>();
    assert_send_static::<RunError>();
}

async fn echo_many(worker: &Worker<Request, Response>, n: usize) {
    let replies: Vec<_> = (0..n)
        .map(|i| worker.run(Request::Echo(format!("m{i}"))))
        .collect();
    let answers = join_all(replies).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.expect("answer"), text(&format!("m{i}")));
    }
}

#[test]
fn on_tokio_multi_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let worker = Arc::new(misbehave().start().await.expect("starts"));
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let worker = worker.clone();
                tokio::spawn(async move { worker.run(Request::Echo(format!("t{i}"))).await })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let answer = task.await.expect("task").expect("answer");
            assert_eq!(answer, text(&format!("t{i}")));
        }
        echo_many(&worker, 20).await;
        worker.shutdown().await.expect("clean shutdown");
    });
}

#[test]
fn on_async_io() {
    async_io::block_on(async {
        let worker = misbehave().start().await.expect("starts");
        echo_many(&worker, 50).await;
        worker.shutdown().await.expect("clean shutdown");
    });
}

#[test]
fn on_futures_executor() {
    futures::executor::block_on(async {
        let worker = misbehave().start().await.expect("starts");
        echo_many(&worker, 50).await;
        worker.shutdown().await.expect("clean shutdown");
    });
}

#[test]
fn from_many_threads_without_async() {
    let worker = Arc::new(misbehave().start_blocking().expect("starts"));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let worker = worker.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let answer = worker
                        .run_blocking(Request::Echo(format!("{t}-{i}")))
                        .expect("answer");
                    assert_eq!(answer, text(&format!("{t}-{i}")));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    worker.shutdown_blocking().expect("clean shutdown");
}
