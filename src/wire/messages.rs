//! The messages after the hello, encoded by `ipc-channel`. Changing them means bumping
//! [`PROTOCOL`](crate::build::PROTOCOL).
//!
//! The connection the worker opened carries worker-to-app messages: the hello (raw bytes), then
//! [`Ready`], then [`ToApp`] in frames (see `transport.rs`). [`Ready`] hands the app the sending
//! ends of two channels the worker created: requests (`[(u64, Job<I>)]` in frames), which the
//! worker reads only while its queue has room, and control (`[(u64, Control)]`), which it always
//! reads, so a cancellation or a shutdown overtakes queued requests.
//!
//! Requests and responses travel in batches: whoever sends takes everything queued at that moment
//! (up to a cap), so one message carries many when many are in flight. Batches are sent from
//! slices the sender keeps, so a batch that could not go out can be queued again.

use ipc_channel::ipc::OpaqueIpcSender;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::wire::codec;
use crate::wire::transport::{
    close_unclaimed_channels, encode_failed, encoded_len, quietly_or_why, Body, Emit, FramedRef,
    Parse,
};

/// The worker's second message, sent right after a hello with `Status::Ready`: the sending ends
/// of the two channels the worker reads. It keeps no copy of either, so it sees them close when
/// the app goes away.
pub(crate) struct Ready {
    /// An `IpcSender<FramedRef<[(u64, Job<I>)]>>`: requests, in the order they were made.
    pub(crate) requests: OpaqueIpcSender,
    /// An `IpcSender<[(u64, Control)]>`: what must reach the worker even when its request queue
    /// is full and every handler is busy.
    pub(crate) control: OpaqueIpcSender,
}

/// One item of the request channel, keyed by its request id.
pub(crate) enum Job<I> {
    /// Run this request.
    Run(I),
    /// No request follows: sent after a shutdown, behind every request made before it.
    End,
    /// Received only: the request did not decode (why, in words). It is answered with
    /// [`Answer::DecodeFailed`] and never run.
    Undecodable(String),
}

/// What the request channel carries, as sent: a frame of `(id, job)` pairs.
pub(crate) type RequestBatch<'a, I> = FramedRef<'a, [(u64, Job<I>)]>;

/// One item of the control channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// The app gave up on request `id`: drop it if queued, signal its handler if running.
    Cancel(u64),
    /// Take no requests after the [`Job::End`] that follows, answer those in flight, exit with
    /// code 0.
    Shutdown,
}

// `Ready` and `Control` are encoded as serde's derive would (a struct as its fields in order,
// an enum as its variant index and contents), by hand: bincrew does not make serde build its
// derive macros for an app that does not use them.

impl Serialize for Ready {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.requests, &self.control).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Ready {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (requests, control) = <(OpaqueIpcSender, OpaqueIpcSender)>::deserialize(deserializer)?;
        Ok(Ready { requests, control })
    }
}

const CONTROL_VARIANTS: &[&str] = &["Cancel", "Shutdown"];

impl Serialize for Control {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Control::Cancel(id) => serializer.serialize_newtype_variant("Control", 0, "Cancel", id),
            Control::Shutdown => serializer.serialize_unit_variant("Control", 1, "Shutdown"),
        }
    }
}

impl<'de> Deserialize<'de> for Control {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ControlVisitor;

        impl<'de> serde::de::Visitor<'de> for ControlVisitor {
            type Value = Control;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a control message")
            }

            fn visit_enum<A: serde::de::EnumAccess<'de>>(
                self,
                data: A,
            ) -> Result<Control, A::Error> {
                use serde::de::{Error, Unexpected, VariantAccess};
                let (index, variant): (u32, _) = data.variant()?;
                match index {
                    0 => variant.newtype_variant().map(Control::Cancel),
                    1 => variant.unit_variant().map(|()| Control::Shutdown),
                    n => Err(A::Error::invalid_value(
                        Unexpected::Unsigned(n.into()),
                        &"variant 0 (Cancel) or 1 (Shutdown)",
                    )),
                }
            }
        }

        deserializer.deserialize_enum("Control", CONTROL_VARIANTS, ControlVisitor)
    }
}

/// One answer.
pub(crate) enum Answer<O> {
    /// The response to request `id`.
    Done { id: u64, response: O },
    /// The worker could not encode the response to request `id`.
    EncodeFailed { id: u64, reason: String },
    /// Request `id` was cancelled before it started, and dropped.
    Cancelled { id: u64 },
    /// The worker could not decode request `id`, and did not run it.
    DecodeFailed { id: u64, reason: String },
    /// Received only: the app could not decode the response to request `id`.
    Undecodable { id: u64, reason: String },
}

impl<O> Answer<O> {
    pub(crate) fn id(&self) -> u64 {
        match self {
            Answer::Done { id, .. }
            | Answer::EncodeFailed { id, .. }
            | Answer::Cancelled { id }
            | Answer::DecodeFailed { id, .. }
            | Answer::Undecodable { id, .. } => *id,
        }
    }
}

/// Worker to app, in a frame (`Framed<ToApp<O>>`).
pub(crate) enum ToApp<O> {
    /// Answers, in the order they were finished.
    Answers(Vec<Answer<O>>),
    /// The worker panicked and is about to exit: nothing it sends after this is trusted.
    Panicked {
        message: String,
        location: Option<String>,
    },
}

/// The sending side of [`ToApp`].
pub(crate) enum ToAppRef<'a, O> {
    Answers(&'a [Answer<O>]),
    Panicked {
        message: &'a str,
        location: Option<&'a str>,
    },
}

// ----- Frame bodies -----
//
// A body starts with a flags byte; bit 0 says that the sender left channels in the message
// that no item claims (an item that failed to encode carried them), so the receiver closes them.
// Then, for the requests, items until the end:
//
//     id: u64 LE, tag: u8, and for `RUN` a payload: len: u32 LE, then len bytes
//
// and for the answers a kind byte (`ANSWERS` or `PANICKED`), then items as above where every
// tag has a payload (empty for `CANCELLED`). Payloads are postcard: the request or response
// value, or a `String` reason. Each is decoded on its own, so a value that does not decode fails
// its own request only; a body whose structure is broken fails the whole message.

const UNCLAIMED: u8 = 1;

const RUN: u8 = 0;
const END: u8 = 1;

const ANSWERS: u8 = 0;
const PANICKED: u8 = 1;

const DONE: u8 = 0;
const ENCODE_FAILED: u8 = 1;
const CANCELLED: u8 = 2;
const DECODE_FAILED: u8 = 3;

/// Appends postcard's encoding to a `Vec` it does not own, so a failure leaves what was
/// written before it in place.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Writes a payload (length, then `value`); `Err` leaves `out` as it was.
fn write_payload<T: Serialize + ?Sized + 'static>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), String> {
    let start = out.len();
    // A panic while encoding (its `Serialize`, or `ipc-channel` out of descriptors for the
    // shared memory inside) fails this value alone: it may happen on a writer thread, which
    // must go on, and in a worker it is no handler's panic.
    match quietly_or_why(|| write_raw(out, value)) {
        Ok(written) => written.map_err(|e| match e {
            Some(e) => codec::encode_error(&e, value),
            None => "its encoding is 4 GiB or more".to_owned(),
        }),
        Err(panic) => {
            out.truncate(start);
            // `ipc-channel` panics on shared memory inside when no descriptor is left: say so.
            Err(if crate::os::spare_descriptors(1) {
                format!("encoding it panicked: {panic}")
            } else {
                format!(
                    "encoding it panicked ({}): {panic}",
                    super::transport::NO_SHARING
                )
            })
        }
    }
}

/// [`write_payload`] for bincrew's own values, which always encode.
fn write_own<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), String> {
    write_raw(out, value).map_err(|e| match e {
        Some(e) => codec::describe(&e),
        None => "its encoding is 4 GiB or more".to_owned(),
    })
}

/// `Err(None)`: too large for the length field.
fn write_raw<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), Option<postcard::Error>> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    codec::clear();
    let written = postcard::serialize_with_flavor(value, Append(out))
        .map_err(Some)
        .and_then(|()| u32::try_from(out.len() - start - 4).map_err(|_| None));
    match written {
        Ok(len) => {
            out[start..start + 4].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Reads a body.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "a frame ends inside an item ({n} bytes wanted at byte {} of {})",
                self.at,
                self.bytes.len()
            ));
        };
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut le = [0; 8];
        le.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(le))
    }

    fn payload(&mut self) -> Result<&'a [u8], String> {
        let mut le = [0; 4];
        le.copy_from_slice(self.take(4)?);
        self.take(u32::from_le_bytes(le) as usize)
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

/// Decodes one payload: all of it, or `Err` with the reason and a hint.
fn read_payload<T: DeserializeOwned + 'static>(payload: &[u8]) -> Result<T, String> {
    codec::clear();
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!(
            "{} of its {} bytes were left over after decoding{}",
            rest.len(),
            payload.len(),
            codec::LEFT_OVER_HINT
        )),
        Err(e) => Err(codec::decode_error::<T>(&e, payload)),
    }
}

impl<I: Serialize + 'static> Body for [(u64, Job<I>)] {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let flags = out.len();
        out.push(0);
        for (id, job) in self {
            match job {
                Job::Run(request) => {
                    let start = out.len();
                    out.extend_from_slice(&id.to_le_bytes());
                    out.push(RUN);
                    if let Err(reason) = write_payload(out, request) {
                        out.truncate(start);
                        out[flags] |= UNCLAIMED;
                        encode_failed(*id, reason);
                    }
                }
                Job::End => {
                    out.extend_from_slice(&id.to_le_bytes());
                    out.push(END);
                }
                Job::Undecodable(_) => {}
            }
        }
        Ok(())
    }

    fn direct_len(&self) -> Option<usize> {
        if !crate::wire::shape::traceable::<I>() {
            return None;
        }
        direct_lens(|lens| {
            let mut len = 1;
            for (_, job) in self {
                match job {
                    Job::Run(request) => len += item_len(lens, encoded_len(request)?)?,
                    Job::End => len += 9,
                    Job::Undecodable(_) => {}
                }
            }
            Some(len)
        })
    }

    fn emit<E: Emit>(&self, out: &mut E) -> Result<(), E::Error> {
        let mut lens = take_lens();
        out.value(&0u8)?;
        for (id, job) in self {
            match job {
                Job::Run(request) => {
                    out.value(&id.to_le_bytes())?;
                    out.value(&RUN)?;
                    out.value(&lens.next().unwrap_or(0).to_le_bytes())?;
                    out.value(request)?;
                }
                Job::End => {
                    out.value(&id.to_le_bytes())?;
                    out.value(&END)?;
                }
                Job::Undecodable(_) => {}
            }
        }
        Ok(())
    }
}

thread_local! {
    /// The payload lengths [`Body::direct_len`] found, for [`Body::emit`] to write.
    static LENS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `measure` with an empty list of payload lengths to fill, kept for [`take_lens`].
///
/// `None` also when an item's `Serialize` panics: then the body is written item by item
/// ([`write_payload`]), where that item fails alone. (Measured within
/// [`send_guarded`](super::transport::send_guarded), which keeps a worker's panic hook quiet.)
fn direct_lens(measure: impl FnOnce(&mut Vec<u32>) -> Option<usize>) -> Option<usize> {
    let mut lens = LENS.with(|l| std::mem::take(&mut *l.borrow_mut()));
    lens.clear();
    let len = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| measure(&mut lens)))
        .ok()
        .flatten();
    LENS.with(|l| *l.borrow_mut() = lens);
    len
}

/// The payload lengths measured last, in order.
fn take_lens() -> std::vec::IntoIter<u32> {
    LENS.with(|l| std::mem::take(&mut *l.borrow_mut()))
        .into_iter()
}

/// An item's length (id, tag, payload length, payload), noting the payload's length.
fn item_len(lens: &mut Vec<u32>, payload: usize) -> Option<usize> {
    lens.push(u32::try_from(payload).ok()?);
    Some(8 + 1 + 4 + payload)
}

impl<I: DeserializeOwned + 'static> Parse for Vec<(u64, Job<I>)> {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut reader = Reader { bytes, at: 0 };
        let mut unclaimed = reader.u8()? & UNCLAIMED != 0;
        let mut items = Vec::new();
        while !reader.done() {
            let id = reader.u64()?;
            let job = match reader.u8()? {
                RUN => match read_payload(reader.payload()?) {
                    Ok(request) => Job::Run(request),
                    Err(reason) => {
                        unclaimed = true;
                        Job::Undecodable(reason)
                    }
                },
                END => Job::End,
                other => return Err(format!("a request of unknown kind {other}")),
            };
            items.push((id, job));
        }
        if unclaimed {
            close_unclaimed_channels();
        }
        Ok(items)
    }
}

impl<O: Serialize + 'static> Body for ToAppRef<'_, O> {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let flags = out.len();
        out.push(0);
        match self {
            ToAppRef::Panicked { message, location } => {
                out.push(PANICKED);
                write_own(out, &(message, location))
            }
            ToAppRef::Answers(answers) => {
                out.push(ANSWERS);
                for answer in answers.iter() {
                    out.extend_from_slice(&answer.id().to_le_bytes());
                    let tag = out.len();
                    let written = match answer {
                        Answer::Done { response, .. } => {
                            out.push(DONE);
                            write_payload(out, response)
                        }
                        Answer::EncodeFailed { reason, .. } => {
                            out.push(ENCODE_FAILED);
                            write_own(out, reason)
                        }
                        Answer::Cancelled { .. } => {
                            out.push(CANCELLED);
                            write_own(out, &())
                        }
                        Answer::DecodeFailed { reason, .. }
                        | Answer::Undecodable { reason, .. } => {
                            out.push(DECODE_FAILED);
                            write_own(out, reason)
                        }
                    };
                    if let Err(reason) = written {
                        // The response does not encode: that request fails, the others stand.
                        out.truncate(tag);
                        out[flags] |= UNCLAIMED;
                        out.push(ENCODE_FAILED);
                        write_own(out, &reason)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn direct_len(&self) -> Option<usize> {
        let ToAppRef::Answers(answers) = self else {
            return None;
        };
        if !crate::wire::shape::traceable::<O>() {
            return None;
        }
        direct_lens(|lens| {
            let mut len = 2;
            for answer in answers.iter() {
                let payload = match answer {
                    Answer::Done { response, .. } => encoded_len(response)?,
                    Answer::Cancelled { .. } => 0,
                    Answer::EncodeFailed { reason, .. }
                    | Answer::DecodeFailed { reason, .. }
                    | Answer::Undecodable { reason, .. } => encoded_len(reason)?,
                };
                len += item_len(lens, payload)?;
            }
            Some(len)
        })
    }

    fn emit<E: Emit>(&self, out: &mut E) -> Result<(), E::Error> {
        let ToAppRef::Answers(answers) = self else {
            return Ok(());
        };
        let mut lens = take_lens();
        out.value(&0u8)?;
        out.value(&ANSWERS)?;
        for answer in answers.iter() {
            out.value(&answer.id().to_le_bytes())?;
            let tag = match answer {
                Answer::Done { .. } => DONE,
                Answer::EncodeFailed { .. } => ENCODE_FAILED,
                Answer::Cancelled { .. } => CANCELLED,
                Answer::DecodeFailed { .. } | Answer::Undecodable { .. } => DECODE_FAILED,
            };
            out.value(&tag)?;
            out.value(&lens.next().unwrap_or(0).to_le_bytes())?;
            match answer {
                Answer::Done { response, .. } => out.value(response)?,
                Answer::Cancelled { .. } => {}
                Answer::EncodeFailed { reason, .. }
                | Answer::DecodeFailed { reason, .. }
                | Answer::Undecodable { reason, .. } => out.value(reason)?,
            }
        }
        Ok(())
    }
}

impl<O: DeserializeOwned + 'static> Parse for ToApp<O> {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut reader = Reader { bytes, at: 0 };
        let mut unclaimed = reader.u8()? & UNCLAIMED != 0;
        let message = match reader.u8()? {
            PANICKED => {
                let (message, location) = read_payload(reader.payload()?)
                    .map_err(|e| format!("a panic report that does not decode: {e}"))?;
                ToApp::Panicked { message, location }
            }
            ANSWERS => {
                let mut answers = Vec::new();
                while !reader.done() {
                    let id = reader.u64()?;
                    let tag = reader.u8()?;
                    let payload = reader.payload()?;
                    let reason = || {
                        read_payload::<String>(payload)
                            .map_err(|e| format!("an answer whose reason does not decode: {e}"))
                    };
                    answers.push(match tag {
                        DONE => match read_payload(payload) {
                            Ok(response) => Answer::Done { id, response },
                            Err(reason) => {
                                unclaimed = true;
                                Answer::Undecodable { id, reason }
                            }
                        },
                        ENCODE_FAILED => Answer::EncodeFailed {
                            id,
                            reason: reason()?,
                        },
                        CANCELLED => Answer::Cancelled { id },
                        DECODE_FAILED => Answer::DecodeFailed {
                            id,
                            reason: reason()?,
                        },
                        other => return Err(format!("an answer of unknown kind {other}")),
                    });
                }
                ToApp::Answers(answers)
            }
            other => return Err(format!("a message of unknown kind {other}")),
        };
        if unclaimed {
            close_unclaimed_channels();
        }
        Ok(message)
    }
}

/// Receives one message, turning a panic while decoding it into an error.
///
/// `ipc-channel` 0.23 panics ("index out of bounds") instead of failing when a message names a
/// channel that did not come with it (its source marks this with a FIXME; found by fuzzing, see
/// `fuzz/README.md`). A peer's garbage must never take down the thread that reads it.
pub(crate) fn recv_guarded<T>(
    receiver: &ipc_channel::ipc::IpcReceiver<T>,
) -> Result<T, ipc_channel::IpcError>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| receiver.recv())).unwrap_or_else(
        |_| {
            Err(ipc_channel::IpcError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "it sent a message that names a channel it did not send",
            )))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body<B: Body + ?Sized>(b: &B) -> Vec<u8> {
        let mut out = Vec::new();
        b.write(&mut out).expect("writes");
        out
    }

    #[test]
    fn requests_round_trip_item_by_item() {
        let jobs = vec![(1u64, Job::Run("a".to_owned())), (u64::MAX, Job::End)];
        let back = Vec::<(u64, Job<String>)>::parse(&body(jobs.as_slice())).expect("parses");
        assert!(matches!(
            back.as_slice(),
            [(1, Job::Run(request)), (u64::MAX, Job::End)] if request == "a"
        ));
        // Read as another type, the item fails alone.
        let back = Vec::<(u64, Job<u8>)>::parse(&body(jobs.as_slice())).expect("parses");
        assert!(matches!(
            back.as_slice(),
            [(1, Job::Undecodable(_)), (u64::MAX, Job::End)]
        ));
        assert!(Vec::<(u64, Job<String>)>::parse(&body(jobs.as_slice())[..12]).is_err());
    }

    #[test]
    fn answers_round_trip_item_by_item() {
        let answers = vec![
            Answer::Done {
                id: 3,
                response: 9u32,
            },
            Answer::EncodeFailed {
                id: 4,
                reason: "no".into(),
            },
            Answer::Cancelled { id: 5 },
            Answer::DecodeFailed {
                id: 6,
                reason: "bad".into(),
            },
        ];
        match ToApp::<u32>::parse(&body(&ToAppRef::Answers(&answers))).expect("parses") {
            ToApp::Answers(back) => {
                assert_eq!(
                    back.iter().map(Answer::id).collect::<Vec<_>>(),
                    [3, 4, 5, 6]
                );
                assert!(matches!(back[0], Answer::Done { response: 9, .. }));
                assert!(matches!(&back[3], Answer::DecodeFailed { reason, .. } if reason == "bad"));
            }
            _ => panic!("wrong variant"),
        }
        let panicked: ToAppRef<'_, u32> = ToAppRef::Panicked {
            message: "boom",
            location: Some("x.rs:1:2"),
        };
        match ToApp::<u32>::parse(&body(&panicked)).expect("parses") {
            ToApp::Panicked { message, location } => {
                assert_eq!(message, "boom");
                assert_eq!(location.as_deref(), Some("x.rs:1:2"));
            }
            _ => panic!("wrong variant"),
        }
    }

    /// What `FramedRef` sends: the kind, then the body as a byte string.
    fn buffered<B: Body + ?Sized>(b: &B) -> Vec<u8> {
        let body = body(b);
        let mut out = vec![0u8];
        let mut len = body.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn frames_written_straight_into_the_message_are_the_buffered_bytes() {
        let _ = crate::wire::shape::of::<String>();
        let _ = crate::wire::shape::of::<u32>();
        let jobs = vec![
            (1u64, Job::Run("a".to_owned())),
            (2, Job::Run("x".repeat(300))),
            (u64::MAX, Job::End),
        ];
        assert!(jobs.as_slice().direct_len().is_some());
        let direct = postcard::to_stdvec(&FramedRef(jobs.as_slice(), None)).expect("encodes");
        assert_eq!(direct, buffered(jobs.as_slice()));

        let answers = vec![
            Answer::Done {
                id: 3,
                response: 9u32,
            },
            Answer::EncodeFailed {
                id: 4,
                reason: "no".repeat(100),
            },
            Answer::Cancelled { id: 5 },
            Answer::DecodeFailed {
                id: 6,
                reason: "bad".into(),
            },
        ];
        let message = ToAppRef::Answers(&answers);
        assert!(message.direct_len().is_some());
        let direct = postcard::to_stdvec(&FramedRef(&message, None)).expect("encodes");
        assert_eq!(direct, buffered(&message));
    }

    #[test]
    fn control_and_ready_encode_as_serde_derives_them() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        enum Derived {
            Cancel(u64),
            Shutdown,
        }
        for (control, derived) in [
            (Control::Cancel(300), Derived::Cancel(300)),
            (Control::Shutdown, Derived::Shutdown),
        ] {
            let bytes = postcard::to_stdvec(&control).expect("encodes");
            assert_eq!(bytes, postcard::to_stdvec(&derived).expect("encodes"));
            assert_eq!(
                postcard::from_bytes::<Control>(&bytes).expect("decodes"),
                control
            );
        }
        assert!(postcard::from_bytes::<Control>(&[2]).is_err());
    }
}
