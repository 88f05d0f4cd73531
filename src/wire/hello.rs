//! The worker's first message: a format of bincrew's own that no dependency upgrade can change.
//!
//! It is the first thing a worker sends on the one-shot connection, so the app can read it, and
//! report a clear mismatch, even when the two sides were built against different versions of
//! bincrew or `ipc-channel` (whose serialization changed from bincode to postcard in 0.23).
//!
//! Layout: the bytes of [`MAGIC`], then UTF-8 lines `key=value\n`, with `\` and newlines in values
//! escaped as `\\` and `\n`. Unknown keys are ignored, so fields can be added without a new magic.
//!
//! From protocol 4 a worker that serves sends its `Ready` in the same message ([`Greeting`]): a
//! last line `ready=` whose value is the encoding of `Ready` (the indices of the two channels the
//! message carries). An app of any version reads that line as an unknown key.

use std::fmt;

use semver::Version;
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::build::BuildInfo;

/// The first bytes of every hello, and the marker that identifies an executable as a bincrew
/// worker (see `process::looks_like_worker`).
pub(crate) const MAGIC: &[u8] = b"bincrew-worker-hello/1\n";

/// The last line of a hello that carries `Ready` (after a newline, as every line starts).
const READY_LINE: &[u8] = b"\nready=";

/// The worker's first message: the bytes of its hello and, when it serves, its `Ready` (see the
/// module's docs). A first message without `Ready` (a hello that reports a failure, or one from
/// a worker of protocol 3 or older, which sends `Ready` as a message of its own) decodes with
/// `ready: None`.
///
/// It is serialized as a tuple of `u8` (then `Ready`): postcard writes a tuple without a length
/// and a `u8` as one byte, so a greeting without `Ready` is its bytes and nothing else, whatever
/// they are. Decoding reads bytes until the input ends (or a `ready=` line).
pub(crate) struct Greeting {
    pub(crate) hello: Vec<u8>,
    pub(crate) ready: Option<crate::wire::messages::Ready>,
    /// Received only: why what follows a `ready=` line is not a `Ready` (only a broken worker
    /// writes that line without one).
    pub(crate) ready_error: Option<String>,
}

impl Greeting {
    /// A first message of these bytes alone: a hello without `Ready`, or what the app sends to
    /// its own one-shot server to end a wait.
    pub(crate) fn bare(bytes: Vec<u8>) -> Greeting {
        Greeting {
            hello: bytes,
            ready: None,
            ready_error: None,
        }
    }
}

impl Serialize for Greeting {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let line = &READY_LINE[1..];
        let len = self.hello.len() + self.ready.as_ref().map_or(0, |_| line.len() + 1);
        let mut tuple = serializer.serialize_tuple(len)?;
        for byte in &self.hello {
            tuple.serialize_element(byte)?;
        }
        if let Some(ready) = &self.ready {
            for byte in line {
                tuple.serialize_element(byte)?;
            }
            tuple.serialize_element(ready)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Greeting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GreetingVisitor;
        impl<'de> Visitor<'de> for GreetingVisitor {
            type Value = Greeting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hello")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Greeting, A::Error> {
                let mut hello = Vec::new();
                // The end of the input shows up as an error from the decoder: it ends the bytes.
                while let Ok(Some(byte)) = seq.next_element::<u8>() {
                    hello.push(byte);
                    if hello.ends_with(READY_LINE) {
                        // Values escape newlines, so only a line of its own starts this way.
                        let (ready, ready_error) = match seq.next_element() {
                            Ok(Some(ready)) => (Some(ready), None),
                            Ok(None) => (None, Some("the line is empty".to_owned())),
                            Err(e) => (None, Some(e.to_string())),
                        };
                        return Ok(Greeting {
                            hello,
                            ready,
                            ready_error,
                        });
                    }
                }
                Ok(Greeting {
                    hello,
                    ready: None,
                    ready_error: None,
                })
            }
        }
        deserializer.deserialize_tuple(usize::MAX, GreetingVisitor)
    }
}

/// Whether the worker process can serve the requested worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// It serves it; `Ready` follows (in the same message, from protocol 4).
    Ready,
    /// It serves no worker by that name; it exits after the hello.
    UnknownWorker,
    /// It never called `init!()`, so it has no identity; it exits after the hello.
    NotInitialized,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::UnknownWorker => "unknown-worker",
            Status::NotInitialized => "not-initialized",
        }
    }
}

/// The decoded hello.
#[derive(Clone, Debug)]
pub(crate) struct Hello {
    pub(crate) token: String,
    pub(crate) status: Status,
    /// The worker name the process was started as.
    pub(crate) worker: String,
    /// The worker names the process serves.
    pub(crate) served: Vec<String>,
    pub(crate) build: Option<BuildInfo>,
    pub(crate) request_type: String,
    pub(crate) response_type: String,
    /// The shapes of the request and response types (`wire::shape`, text form); `None` when
    /// the worker could not trace the type (or is older than shapes).
    pub(crate) request_shape: Option<String>,
    pub(crate) response_shape: Option<String>,
    /// The process serves through `run_worker`, one name per call.
    pub(crate) single: bool,
}

impl Hello {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let mut put = |key: &str, value: &str| {
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            for ch in value.chars() {
                match ch {
                    '\\' => out.extend_from_slice(b"\\\\"),
                    '\n' => out.extend_from_slice(b"\\n"),
                    ch => out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
            out.push(b'\n');
        };
        put("token", &self.token);
        put("status", self.status.as_str());
        put("worker", &self.worker);
        put("served", &self.served.join(","));
        put("request-type", &self.request_type);
        put("response-type", &self.response_type);
        put("request-shape", self.request_shape.as_deref().unwrap_or(""));
        put(
            "response-shape",
            self.response_shape.as_deref().unwrap_or(""),
        );
        if self.single {
            put("single", "1");
        }
        if let Some(b) = &self.build {
            put("package", &b.package);
            put("version", &b.version.to_string());
            put("build-id", b.build_id.as_deref().unwrap_or(""));
            put("target", &b.target);
            put("bincrew", &b.bincrew_version);
            put("protocol", &b.protocol.to_string());
            put("wire", &b.wire);
            put("exe-id", b.exe_id.as_deref().unwrap_or(""));
            put("apps", &b.apps.join(","));
        }
        out
    }

    /// Decodes a hello; `Err` says what is wrong with it, for the error the user sees.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Hello, String> {
        let Some(body) = bytes.strip_prefix(MAGIC) else {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned();
            return Err(format!(
                "its first message is not a bincrew hello (starts with {shown:?})"
            ));
        };
        let body = std::str::from_utf8(body).map_err(|_| "its hello is not UTF-8".to_owned())?;
        let mut fields = std::collections::HashMap::new();
        for line in body.lines() {
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("its hello has a malformed line {line:?}"));
            };
            fields.insert(key, unescape(value));
        }
        let get = |key: &str| {
            fields
                .get(key)
                .cloned()
                .ok_or_else(|| format!("its hello has no `{key}`"))
        };
        let status = match get("status")?.as_str() {
            "ready" => Status::Ready,
            "unknown-worker" => Status::UnknownWorker,
            "not-initialized" => Status::NotInitialized,
            other => return Err(format!("its hello has an unknown status {other:?}")),
        };
        let build = match fields.get("package") {
            None => None,
            Some(package) => {
                let version = get("version")?;
                let protocol = get("protocol")?;
                Some(BuildInfo {
                    package: package.clone(),
                    version: Version::parse(&version).map_err(|e| {
                        format!("its hello has an invalid version {version:?}: {e}")
                    })?,
                    build_id: get("build-id").ok().filter(|s| !s.is_empty()),
                    target: get("target")?,
                    bincrew_version: get("bincrew")?,
                    protocol: protocol
                        .parse()
                        .map_err(|_| format!("its hello has an invalid protocol {protocol:?}"))?,
                    wire: get("wire")?,
                    exe_id: get("exe-id").ok().filter(|s| !s.is_empty()),
                    workers: Vec::new(),
                    apps: get("apps")
                        .unwrap_or_default()
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    manifest_dir: None,
                })
            }
        };
        let served = get("served")?;
        Ok(Hello {
            token: get("token")?,
            status,
            worker: get("worker")?,
            served: served
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            build,
            request_type: get("request-type")?,
            response_type: get("response-type")?,
            request_shape: get("request-shape").ok().filter(|s| !s.is_empty()),
            response_shape: get("response-shape").ok().filter(|s| !s.is_empty()),
            single: get("single").is_ok_and(|s| s == "1"),
        })
    }
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(ch) = chars.next() {
        if ch == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Hello {
        Hello {
            token: "t0k\\en\nx".into(),
            status: Status::Ready,
            worker: "w".into(),
            served: vec!["a".into(), "b".into()],
            build: Some(BuildInfo {
                package: "pkg".into(),
                version: Version::new(1, 2, 3),
                build_id: Some("abc".into()),
                target: "x86_64-unknown-linux-gnu".into(),
                bincrew_version: "0.1.0".into(),
                protocol: 1,
                wire: "ipc-channel-0.23".into(),
                exe_id: None,
                workers: Vec::new(),
                apps: vec!["app".into()],
                manifest_dir: None,
            }),
            request_type: "a::Req".into(),
            response_type: "a::Rsp".into(),
            request_shape: Some("#0;sReq{a:u8}".into()),
            response_shape: None,
            single: true,
        }
    }

    #[test]
    fn hello_round_trips() {
        let hello = sample();
        let back = Hello::decode(&hello.encode()).expect("decodes");
        assert_eq!(back.token, hello.token);
        assert_eq!(back.served, hello.served);
        assert_eq!(back.build, hello.build);
        assert_eq!(back.status, Status::Ready);
        assert_eq!(back.request_shape, hello.request_shape);
        assert_eq!(back.response_shape, None);
        assert!(back.single);
    }

    #[test]
    fn bare_bytes_are_sent_verbatim() {
        let bytes = postcard::to_stdvec(&Greeting::bare(b"abc\0\xff".to_vec())).expect("encodes");
        assert_eq!(bytes, b"abc\0\xff");
        let back: Greeting = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back.hello, b"abc\0\xff");
        assert!(back.ready.is_none() && back.ready_error.is_none());
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        let err = Hello::decode(b"HTTP/1.1 200 OK").expect_err("garbage");
        assert!(err.contains("not a bincrew hello"), "{err}");
        let mut truncated = sample().encode();
        truncated.truncate(MAGIC.len() + 10);
        assert!(Hello::decode(&truncated).is_err());
    }

    #[test]
    fn a_greeting_carries_ready_in_a_line_any_hello_reader_ignores() {
        use crate::wire::messages::Ready;
        let (requests, _requests_rx) = ipc_channel::ipc::channel::<u8>().expect("channel");
        let (control, _control_rx) = ipc_channel::ipc::channel::<u8>().expect("channel");
        let hello = sample().encode();
        let (tx, rx) = ipc_channel::ipc::channel::<Greeting>().expect("channel");
        tx.send(Greeting {
            hello: hello.clone(),
            ready: Some(Ready {
                requests: requests.to_opaque(),
                control: control.to_opaque(),
            }),
            ready_error: None,
        })
        .expect("sent");
        let got = rx.recv().expect("received");
        assert!(got.ready.is_some(), "Ready came with the hello");
        assert!(got.hello.starts_with(&hello) && got.hello.ends_with(b"\nready="));
        let back = Hello::decode(&got.hello).expect("decodes");
        assert_eq!((back.token, back.build), (sample().token, sample().build));

        // A hello alone (a failure, or an older worker): no `Ready`, and the same hello.
        tx.send(Greeting {
            hello: hello.clone(),
            ready: None,
            ready_error: None,
        })
        .expect("sent");
        let got = rx.recv().expect("received");
        assert!(got.ready.is_none() && got.ready_error.is_none());
        assert_eq!(got.hello, hello);

        // A `ready=` line with no `Ready` after it: a broken worker, said so.
        let mut cut = hello.clone();
        cut.extend_from_slice(b"ready=");
        tx.send(Greeting {
            hello: cut,
            ready: None,
            ready_error: None,
        })
        .expect("sent");
        let got = rx.recv().expect("received");
        assert!(got.ready.is_none() && got.ready_error.is_some());
    }
}
