//! Writes the seed corpora: a few valid messages per target, into `corpus/<target>/seed-*`.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seeds
//!
//! bincrew's message types are crate-private, so this encodes twins with the same serde layout
//! (same variant order, same field order; postcard is not self-describing, so that is all that
//! matters) and checks every seed against the real decoder through the fuzz entry points before
//! writing it. Channel and shared-memory handles are written as their `usize` index: shared
//! memory as `usize::MAX` (the empty region, which needs no side table), channels never in a seed
//! (a message decoded without OS channels attached cannot hold one; see README.md, findings).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bincrew::__private::fuzz;
use bincrew_fuzz::{Job, Mode, Outcome, Output};
use serde::Serialize;

/// `hello::MAGIC`.
const MAGIC: &[u8] = b"bincrew-worker-hello/1\n";
/// The index that decodes as an empty `IpcSharedMemory`.
const EMPTY_SHM: usize = usize::MAX;

/// Twin of `protocol::Item<I>`.
#[derive(Serialize)]
enum Item<I> {
    Request { id: u64, request: I },
    Cancel(u64),
    Shutdown,
}

/// Twin of `protocol::Answer<O>`.
#[derive(Serialize)]
enum Answer<O> {
    Done { id: u64, response: O },
    EncodeFailed { id: u64, reason: String },
    Cancelled { id: u64 },
}

/// Twin of `protocol::ToApp<O>`.
#[derive(Serialize)]
enum ToApp<O> {
    Answers(Vec<Answer<O>>),
    Panicked {
        message: String,
        location: Option<String>,
    },
}

/// The layouts with plain indexes in place of the handles.
type WireJob = Job<usize, usize>;
type WireOutput = Output<usize, usize, usize>;

fn hello(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (key, value) in fields {
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.replace('\\', "\\\\").replace('\n', "\\n").as_bytes());
        out.push(b'\n');
    }
    out
}

fn job(name: &str, mode: Mode) -> WireJob {
    Job {
        name: name.into(),
        input: b"some input \x00\xff".to_vec(),
        mode,
        blob: EMPTY_SHM,
        progress: None,
        limits: (30, Some(1_000)),
        tags: vec!["a".into(), "bé".into()],
    }
}

fn output(outcome: Outcome<usize, usize>) -> WireOutput {
    Output {
        bytes: vec![1, 2, 3, 0xff],
        text: "done ✓".into(),
        outcome,
        blob: EMPTY_SHM,
        stats: BTreeMap::from([("lines".to_owned(), 42), ("errors".to_owned(), -1)]),
        first: Some('λ'),
        total: -170_141_183_460_469_231_731_687_303_715_884_105_728,
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encodes")
}

struct Writer {
    root: PathBuf,
    written: usize,
}

impl Writer {
    /// Writes `bytes` as `corpus/<target>/seed-<name>` after checking that the real decoder
    /// accepts it (`accepted`).
    fn seed(&mut self, target: &str, name: &str, bytes: &[u8], accepted: bool) {
        assert!(accepted, "seed {target}/{name} is rejected by the decoder");
        let dir = self.root.join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        self.written += 1;
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    let mut w = Writer { root, written: 0 };

    // hello: the three statuses, with and without build information, with escapes.
    let base = [
        ("token", "3f1c9a\\x\ny"),
        ("status", "ready"),
        ("worker", "hasher"),
        ("served", "hasher,words"),
        ("request-type", "hasher::Job"),
        ("response-type", "hasher::Digest"),
    ];
    let build = [
        ("package", "hasher"),
        ("version", "1.2.3-beta.1+build.5"),
        ("build-id", "abc123"),
        ("target", "x86_64-unknown-linux-gnu"),
        ("bincrew", "0.1.0"),
        ("protocol", "1"),
        ("wire", "ipc-channel-0.23"),
        ("exe-id", ""),
        ("apps", "app1,app2"),
    ];
    let full: Vec<_> = base.iter().chain(build.iter()).copied().collect();
    let ready_hello = hello(&full);
    w.seed(
        "hello",
        "ready-with-build",
        &ready_hello,
        fuzz::hello(&ready_hello),
    );
    let bytes = hello(&base);
    w.seed("hello", "ready-no-build", &bytes, fuzz::hello(&bytes));
    let mut unknown = base.to_vec();
    unknown[1].1 = "unknown-worker";
    unknown.push(("future-key", "ignored"));
    let bytes = hello(&unknown);
    w.seed("hello", "unknown-worker", &bytes, fuzz::hello(&bytes));
    let mut uninit = base.to_vec();
    uninit[1].1 = "not-initialized";
    uninit[3].1 = "";
    let bytes = hello(&uninit);
    w.seed("hello", "not-initialized", &bytes, fuzz::hello(&bytes));

    // raw: any bytes; a hello, binary, empty.
    w.seed("raw", "hello", &ready_hello, fuzz::raw(&ready_hello));
    let binary: Vec<u8> = (0..=255).collect();
    w.seed("raw", "binary", &binary, fuzz::raw(&binary));
    w.seed("raw", "empty", b"", fuzz::raw(b""));

    // ready: a `Ready` holds one `OpaqueIpcSender` (an index into the OS channels sent with it).
    // Without OS channels no `Ready` decodes (every index panics, see README.md), so the seeds
    // are the two ways to fail cleanly: an empty message and a truncated index.
    w.seed("ready", "empty", b"", !fuzz::ready(b""));
    w.seed("ready", "truncated-index", &[0x80], !fuzz::ready(&[0x80]));

    // requests: `Vec<Item<Job>>`.
    let bytes = encode(&vec![
        Item::Request {
            id: 1,
            request: job("fast", Mode::Fast),
        },
        Item::Request {
            id: 2,
            request: job(
                "careful",
                Mode::Careful {
                    retries: 3,
                    timeout_ms: 250,
                },
            ),
        },
        Item::Cancel(1),
    ]);
    w.seed("requests", "batch", &bytes, fuzz::requests::<Job>(&bytes));
    let bytes = encode(&vec![
        Item::Request {
            id: u64::MAX,
            request: job("custom", Mode::Custom("x=1".into())),
        },
        Item::Request {
            id: 7,
            request: job("ratio", Mode::Ratio(0.25)),
        },
        Item::Request {
            id: 8,
            request: job("flags", Mode::Flags([true, false, true])),
        },
    ]);
    w.seed("requests", "modes", &bytes, fuzz::requests::<Job>(&bytes));
    let bytes = encode(&vec![Item::<WireJob>::Shutdown]);
    w.seed(
        "requests",
        "shutdown",
        &bytes,
        fuzz::requests::<Job>(&bytes),
    );
    let bytes = encode(&Vec::<Item<WireJob>>::new());
    w.seed(
        "requests",
        "empty-batch",
        &bytes,
        fuzz::requests::<Job>(&bytes),
    );

    // answers: `ToApp<Output>`.
    let bytes = encode(&ToApp::Answers(vec![
        Answer::Done {
            id: 1,
            response: output(Outcome::Complete),
        },
        Answer::Done {
            id: 2,
            response: output(Outcome::Partial { done: 3, of: 9 }),
        },
        Answer::Cancelled { id: 3 },
        Answer::EncodeFailed {
            id: 4,
            reason: "too big".into(),
        },
    ]));
    w.seed("answers", "batch", &bytes, fuzz::answers::<Output>(&bytes));
    let bytes = encode(&ToApp::Answers(vec![
        Answer::Done {
            id: 5,
            response: output(Outcome::Failed("disk full".into())),
        },
        Answer::Done {
            id: 6,
            response: output(Outcome::Scores(vec![0.5, -1.0, f32::NAN])),
        },
    ]));
    w.seed(
        "answers",
        "outcomes",
        &bytes,
        fuzz::answers::<Output>(&bytes),
    );
    let bytes = encode(&ToApp::<WireOutput>::Panicked {
        message: "index out of bounds".into(),
        location: Some("src/main.rs:10:5".into()),
    });
    w.seed(
        "answers",
        "panicked",
        &bytes,
        fuzz::answers::<Output>(&bytes),
    );

    eprintln!(
        "wrote {} seeds under {}",
        w.written,
        w.root.join("corpus").display()
    );
}
