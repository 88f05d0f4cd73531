//! IPC channels and shared memory inside requests.

use bincrew::{Compat, IpcSharedMemory, Worker};
use hasher::{HashRequest, HashResponse};
use misbehave::{Request, Response};

use crate::support::{init, start_misbehave, worker_bin};

fn start_hasher() -> Worker<HashRequest, HashResponse> {
    init();
    Worker::builder(hasher::WORKER)
        .exe(worker_bin("hasher"))
        .compat(Compat::Semver(
            semver::VersionReq::parse("^0.2").expect("req"),
        ))
        .start_blocking()
        .expect("hasher starts")
}

#[test]
fn a_request_carries_a_progress_channel() {
    let worker = start_misbehave();
    let (progress, progress_rx) = bincrew::channel::<u32>().expect("channel");
    let reply = worker.run(Request::Progress {
        steps: 100,
        progress,
    });
    assert_eq!(reply.wait().expect("answer"), Response::Number(100));
    // The app kept no copy of the sender: the channel ends when the worker drops its copy.
    let mut steps = Vec::new();
    while let Ok(step) = progress_rx.recv() {
        steps.push(step);
    }
    assert_eq!(steps, (1..=100).collect::<Vec<_>>());
}

#[test]
fn a_request_carries_a_large_shared_memory_blob() {
    let worker = start_misbehave();
    let bytes: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = bytes.iter().map(|b| u64::from(*b)).sum();
    let blob = IpcSharedMemory::from_bytes(&bytes);
    let answer = worker
        .run_blocking(Request::Checksum(blob))
        .expect("answer");
    assert_eq!(answer, Response::Text(format!("{} {sum}", bytes.len())));
}

#[test]
fn a_shared_buffer_written_in_place_goes_to_the_worker_and_back() {
    let worker = start_misbehave();
    let mut buffer = bincrew::SharedBuffer::zeroed(8 * 1024 * 1024);
    for (i, byte) in buffer.iter_mut().enumerate() {
        *byte = (i % 200) as u8;
    }
    let answer = worker
        .run_blocking(Request::Increment(buffer))
        .expect("answer");
    let Response::Buffer(buffer) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(buffer.len(), 8 * 1024 * 1024);
    assert!(buffer
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (i % 200) as u8 + 1));
}

#[test]
fn the_dedicated_hasher_hashes_a_blob_and_a_file_with_progress() {
    let worker = start_hasher();
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
    let digest = worker
        .run_blocking(HashRequest::Blob(IpcSharedMemory::from_bytes(&bytes)))
        .expect("answer")
        .expect("hashed");
    assert_eq!(digest, hasher::digest(&bytes));

    let path = std::env::temp_dir().join(format!("bincrew-hash-{}", std::process::id()));
    std::fs::write(&path, &bytes).expect("write");
    let (progress, progress_rx) = bincrew::channel::<u64>().expect("channel");
    let digest = worker
        .run_blocking(HashRequest::File {
            path: path.clone(),
            progress: Some(progress),
        })
        .expect("answer")
        .expect("hashed");
    let _ = std::fs::remove_file(&path);
    assert_eq!(digest, hasher::digest(&bytes));
    let mut last = 0;
    while let Ok(read) = progress_rx.recv() {
        assert!(read > last);
        last = read;
    }
    assert_eq!(last, bytes.len() as u64);

    let missing = worker
        .run_blocking(HashRequest::File {
            path: "/nonexistent/file".into(),
            progress: None,
        })
        .expect("answer");
    assert!(missing
        .expect_err("missing")
        .starts_with("cannot open /nonexistent/file"));
    worker.shutdown_blocking().expect("clean shutdown");
}
