//! Writes the seed corpora: a few messages per target, into `corpus/<target>/seed-*`.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seeds
//!
//! bincrew's message types are crate-private, so this encodes twins with the same serde layout
//! (same variant order, same field order; postcard is not self-describing, so that is all that
//! matters) and checks every seed against the real decoder through the fuzz entry points before
//! writing it: a seed meant to decode must decode, a seed meant to be refused must be refused
//! (with an error: a panic stops the generator).
//!
//! Channel and shared-memory handles are written as their `usize` index: shared memory as
//! `usize::MAX` (the empty region, which needs no side table), channels never in a seed (a
//! message decoded without OS channels attached cannot hold one; see README.md, findings).
//!
//! Frames (`transport::Framed<T>`) are written both ways:
//! - inline, `(0u8, bytes)`: the postcard encoding of `T` as a postcard byte string; these decode;
//! - spilled, `(1u8, shared-memory index)`: the fuzz input never has shared memory attached, so a
//!   spilled frame is either an index into an empty table or `usize::MAX`, the empty region (no
//!   `T` decodes from zero bytes); these must be refused with an error, and are seeds so that the
//!   fuzzer starts from the spilled path too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bincrew::__private::fuzz;
use bincrew_fuzz::{Job, Mode, Outcome, Output};
use serde::Serialize;

/// `hello::MAGIC`.
const MAGIC: &[u8] = b"bincrew-worker-hello/1\n";
/// The index that decodes as an empty `IpcSharedMemory`.
const EMPTY_SHM: usize = usize::MAX;

/// Twins of bincrew's wire types (`src/wire/messages.rs`, `src/wire/transport.rs`).
mod wire {
    use serde::{Serialize, Serializer};

    /// Twin of `messages::Job<I>`: one item of the request channel, keyed by its request id.
    pub enum Job<I> {
        Run(I),
        End,
    }

    /// Twin of `messages::Control`: one item of the control channel (unframed).
    #[derive(Serialize)]
    pub enum Control {
        Cancel(u64),
        Shutdown,
    }

    /// Twin of `messages::Answer<O>`.
    pub enum Answer<O> {
        Done { id: u64, response: O },
        EncodeFailed { id: u64, reason: String },
        Cancelled { id: u64 },
        DecodeFailed { id: u64, reason: String },
    }

    /// Twin of `messages::ToApp<O>`.
    pub enum ToApp<O> {
        Answers(Vec<Answer<O>>),
        Panicked {
            message: String,
            location: Option<String>,
        },
    }

    /// A frame's body as `messages.rs` writes it: a flags byte, then items, each an id (u64 LE),
    /// a tag and, where the tag has one, a payload (u32 LE length, then postcard).
    pub trait Body {
        fn body(&self) -> Vec<u8>;
    }

    fn payload<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
        let bytes = postcard::to_stdvec(value).expect("encodes");
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }

    impl<I: Serialize> Body for Vec<(u64, Job<I>)> {
        fn body(&self) -> Vec<u8> {
            let mut out = vec![0];
            for (id, job) in self {
                out.extend_from_slice(&id.to_le_bytes());
                match job {
                    Job::Run(request) => {
                        out.push(0);
                        payload(&mut out, request);
                    }
                    Job::End => out.push(1),
                }
            }
            out
        }
    }

    impl<O: Serialize> Body for ToApp<O> {
        fn body(&self) -> Vec<u8> {
            let mut out = vec![0];
            match self {
                ToApp::Answers(answers) => {
                    out.push(0);
                    for answer in answers {
                        let (id, tag) = match answer {
                            Answer::Done { id, .. } => (id, 0),
                            Answer::EncodeFailed { id, .. } => (id, 1),
                            Answer::Cancelled { id } => (id, 2),
                            Answer::DecodeFailed { id, .. } => (id, 3),
                        };
                        out.extend_from_slice(&id.to_le_bytes());
                        out.push(tag);
                        match answer {
                            Answer::Done { response, .. } => payload(&mut out, response),
                            Answer::EncodeFailed { reason, .. }
                            | Answer::DecodeFailed { reason, .. } => payload(&mut out, reason),
                            Answer::Cancelled { .. } => payload(&mut out, &()),
                        }
                    }
                }
                ToApp::Panicked { message, location } => {
                    out.push(1);
                    payload(&mut out, &(message, location));
                }
            }
            out
        }
    }

    /// `transport::INLINE` and `transport::SPILLED`, a frame's kind.
    pub const INLINE: u8 = 0;
    pub const SPILLED: u8 = 1;

    /// A byte string (`transport::Bytes`): varint length, then the bytes.
    pub struct Bytes(pub Vec<u8>);

    impl Serialize for Bytes {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(&self.0)
        }
    }
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

fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encodes")
}

/// An inline frame holding `value`, as `FramedRef` sends it when it fits in one packet.
fn inline<T: wire::Body>(value: &T) -> Vec<u8> {
    encode(&(wire::INLINE, wire::Bytes(value.body())))
}

/// A spilled frame naming shared-memory region `index`.
fn spilled(index: usize) -> Vec<u8> {
    encode(&(wire::SPILLED, index))
}

/// A socket packet as `ipc-channel` 0.23 sends a message that fits in one fragment: the
/// fragment's size (header included) and the message's total data size, each a native `usize`,
/// then the data.
fn packet(fragment: usize, total: usize, data: &[u8]) -> Vec<u8> {
    let mut out = fragment.to_ne_bytes().to_vec();
    out.extend_from_slice(&total.to_ne_bytes());
    out.extend_from_slice(data);
    out
}

/// A well-formed single-fragment packet carrying `data`.
fn whole_packet(data: &[u8]) -> Vec<u8> {
    packet(2 * size_of::<usize>() + data.len(), data.len(), data)
}

struct Writer {
    root: PathBuf,
    written: usize,
}

impl Writer {
    /// Writes `bytes` as `corpus/<target>/seed-<name>` after checking that the real decoder
    /// gives the expected verdict (`as_expected`).
    fn seed(&mut self, target: &str, name: &str, bytes: &[u8], as_expected: bool) {
        assert!(
            as_expected,
            "seed {target}/{name} is not decoded as expected"
        );
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

    // greeting: a hello alone (a failure, or an older worker), and one with its `ready=` line cut
    // right after it (the app then reads `Ready` as a message of its own). A `Ready` after the
    // line would hit the known channel-index panic without channels, like the `ready` seeds.
    w.seed("greeting", "hello", &ready_hello, fuzz::greeting(&ready_hello));
    let mut cut = ready_hello.clone();
    cut.extend_from_slice(b"ready=");
    w.seed("greeting", "ready-line-cut", &cut, fuzz::greeting(&cut));

    // ready: a `Ready` holds two `OpaqueIpcSender`s (`requests`, then `control`: indexes into the
    // OS channels sent with it). Without OS channels no `Ready` decodes (every index panics, see
    // README.md), so the seeds are the two ways to fail cleanly: an empty message and a
    // truncated index.
    w.seed("ready", "empty", b"", !fuzz::ready(b""));
    w.seed("ready", "truncated-index", &[0x80], !fuzz::ready(&[0x80]));

    // requests: `Framed<Vec<(u64, Job<Job>)>>` (request id, then `Run(request)` or `End`).
    let batch = vec![
        (1u64, wire::Job::Run(job("fast", Mode::Fast))),
        (
            2,
            wire::Job::Run(job(
                "careful",
                Mode::Careful {
                    retries: 3,
                    timeout_ms: 250,
                },
            )),
        ),
        (3, wire::Job::End),
    ];
    let bytes = inline(&batch);
    w.seed("requests", "batch", &bytes, fuzz::requests::<Job>(&bytes));
    let bytes = inline(&vec![
        (
            u64::MAX,
            wire::Job::Run(job("custom", Mode::Custom("x=1".into()))),
        ),
        (7, wire::Job::Run(job("ratio", Mode::Ratio(0.25)))),
        (
            8,
            wire::Job::Run(job("flags", Mode::Flags([true, false, true]))),
        ),
    ]);
    w.seed("requests", "modes", &bytes, fuzz::requests::<Job>(&bytes));
    let bytes = inline(&vec![(9u64, wire::Job::<WireJob>::End)]);
    w.seed("requests", "end", &bytes, fuzz::requests::<Job>(&bytes));
    let bytes = inline(&Vec::<(u64, wire::Job<WireJob>)>::new());
    w.seed(
        "requests",
        "empty-batch",
        &bytes,
        fuzz::requests::<Job>(&bytes),
    );
    // Spilled: the empty region (no batch decodes from zero bytes) and a region not attached.
    let bytes = spilled(EMPTY_SHM);
    w.seed(
        "requests",
        "spilled-empty",
        &bytes,
        !fuzz::requests::<Job>(&bytes),
    );
    let bytes = spilled(0);
    w.seed(
        "requests",
        "spilled-missing",
        &bytes,
        !fuzz::requests::<Job>(&bytes),
    );

    // control: `Vec<(u64, Control)>`, unframed (key, then `Cancel(id)` or `Shutdown`).
    let bytes = encode(&vec![
        (0u64, wire::Control::Cancel(1)),
        (1, wire::Control::Cancel(u64::MAX)),
        (2, wire::Control::Shutdown),
    ]);
    w.seed("control", "batch", &bytes, fuzz::control(&bytes));
    let bytes = encode(&vec![(u64::MAX, wire::Control::Shutdown)]);
    w.seed("control", "shutdown", &bytes, fuzz::control(&bytes));
    let bytes = encode(&Vec::<(u64, wire::Control)>::new());
    w.seed("control", "empty-batch", &bytes, fuzz::control(&bytes));

    // answers: `Framed<ToApp<Output>>`.
    let answers = wire::ToApp::Answers(vec![
        wire::Answer::Done {
            id: 1,
            response: output(Outcome::Complete),
        },
        wire::Answer::Done {
            id: 2,
            response: output(Outcome::Partial { done: 3, of: 9 }),
        },
        wire::Answer::Cancelled { id: 3 },
        wire::Answer::EncodeFailed {
            id: 4,
            reason: "too big".into(),
        },
        wire::Answer::DecodeFailed {
            id: 5,
            reason: "7 is refused".into(),
        },
    ]);
    let answers_frame = inline(&answers);
    w.seed(
        "answers",
        "batch",
        &answers_frame,
        fuzz::answers::<Output>(&answers_frame),
    );
    let bytes = inline(&wire::ToApp::Answers(vec![
        wire::Answer::Done {
            id: 5,
            response: output(Outcome::Failed("disk full".into())),
        },
        wire::Answer::Done {
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
    let bytes = inline(&wire::ToApp::<WireOutput>::Panicked {
        message: "index out of bounds".into(),
        location: Some("src/main.rs:10:5".into()),
    });
    w.seed(
        "answers",
        "panicked",
        &bytes,
        fuzz::answers::<Output>(&bytes),
    );
    let bytes = spilled(EMPTY_SHM);
    w.seed(
        "answers",
        "spilled-empty",
        &bytes,
        !fuzz::answers::<Output>(&bytes),
    );
    let bytes = spilled(0);
    w.seed(
        "answers",
        "spilled-missing",
        &bytes,
        !fuzz::answers::<Output>(&bytes),
    );

    // packet: what the app checks before `ipc-channel` reads a packet from a worker (here one
    // with no descriptors). Accepted: the end of the channel (an empty packet) and whole
    // single-fragment messages; refused: each way a header can lie.
    let fits = [
        ("end", Vec::new()),
        ("answers", whole_packet(&answers_frame)),
        ("spilled", whole_packet(&spilled(0))),
        ("no-data", whole_packet(b"")),
    ];
    for (name, bytes) in fits {
        w.seed("packet", name, &bytes, fuzz::packet(&bytes).is_ok());
    }
    let header = 2 * size_of::<usize>();
    let refused = [
        // Shorter than its header.
        ("short", vec![0x18, 0, 0, 0]),
        // The fragment size is not the packet's size.
        ("wrong-size", packet(header + 100, 4, b"\x00\x02\x01\x00")),
        // A total smaller than the data the packet holds.
        (
            "total-too-small",
            packet(header + 4, 3, b"\x00\x02\x01\x00"),
        ),
        // A total far over the limit: `ipc-channel` would reserve it.
        (
            "total-huge",
            packet(header + 4, 1 << 40, b"\x00\x02\x01\x00"),
        ),
        // A message in fragments (a total over the data it holds): bincrew never sends one.
        ("fragments", packet(header + 4, 4096, b"\x00\x02\x01\x00")),
    ];
    for (name, bytes) in refused {
        w.seed("packet", name, &bytes, fuzz::packet(&bytes).is_err());
    }
    // Checked, not written: a well-formed packet larger than one fragment can be (the socket's
    // send buffer, about 208 KiB) is refused. It would be the only way to reach that branch, but a
    // seed that big would raise libFuzzer's `-max_len` (4096 by default) for the whole run.
    let oversized = whole_packet(&vec![0u8; 1 << 20]);
    let refusal = fuzz::packet(&oversized).expect_err("a 1 MiB packet is refused");
    assert!(
        refusal.contains("more than a channel carries at once"),
        "{refusal}"
    );

    eprintln!(
        "wrote {} seeds under {}",
        w.written,
        w.root.join("corpus").display()
    );
}
