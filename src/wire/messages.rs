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
use serde::{Deserialize, Deserializer, Serialize};

/// The worker's second message, sent right after a hello with `Status::Ready`: the sending ends
/// of the two channels the worker reads. It keeps no copy of either, so it sees them close when
/// the app goes away.
#[derive(Serialize, Deserialize)]
pub(crate) struct Ready {
    /// An `IpcSender<FramedRef<[(u64, Job<I>)]>>`: requests, in the order they were made.
    pub(crate) requests: OpaqueIpcSender,
    /// An `IpcSender<[(u64, Control)]>`: what must reach the worker even when its request queue
    /// is full and every handler is busy.
    pub(crate) control: OpaqueIpcSender,
}

/// One item of the request channel, keyed by its request id.
#[derive(Serialize, Deserialize)]
pub(crate) enum Job<I> {
    /// Run this request.
    Run(I),
    /// No request follows: sent after a shutdown, behind every request made before it.
    End,
}

/// What the request channel carries, as sent: a frame of `(id, job)` pairs.
pub(crate) type RequestBatch<'a, I> = crate::wire::transport::FramedRef<'a, [(u64, Job<I>)]>;

/// One item of the control channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Control {
    /// The app gave up on request `id`: drop it if queued, signal its handler if running.
    Cancel(u64),
    /// Take no requests after the [`Job::End`] that follows, answer those in flight, exit with
    /// code 0.
    Shutdown,
}

/// One answer.
#[derive(Serialize, Deserialize)]
pub(crate) enum Answer<O> {
    /// The response to request `id`.
    Done { id: u64, response: O },
    /// The response to request `id` could not be encoded.
    EncodeFailed { id: u64, reason: String },
    /// Request `id` was cancelled before it started, and dropped.
    Cancelled { id: u64 },
}

impl<O> Answer<O> {
    pub(crate) fn id(&self) -> u64 {
        match self {
            Answer::Done { id, .. }
            | Answer::EncodeFailed { id, .. }
            | Answer::Cancelled { id } => *id,
        }
    }
}

/// Worker to app, in a frame (`Framed<ToApp<O>>`).
#[derive(Serialize, Deserialize)]
pub(crate) enum ToApp<O> {
    /// Answers, in the order they were finished.
    Answers(Vec<Answer<O>>),
    /// The worker panicked and is about to exit: nothing it sends after this is trusted.
    Panicked {
        message: String,
        location: Option<String>,
    },
}

/// The sending side of [`ToApp`]: same variants, same order, same encoding.
#[derive(Serialize)]
pub(crate) enum ToAppRef<'a, O> {
    Answers(&'a [Answer<O>]),
    Panicked {
        message: &'a str,
        location: Option<&'a str>,
    },
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

/// `ipc-channel` types a channel by a type that is both `Serialize` and `Deserialize`; the
/// borrowed twins are only ever sent, so decoding them is an error.
macro_rules! send_only {
    ($ty:ident) => {
        impl<'de, 'a, T> Deserialize<'de> for $ty<'a, T> {
            fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                Err(serde::de::Error::custom(concat!(
                    stringify!($ty),
                    " is only sent, never received"
                )))
            }
        }
    };
}
send_only!(ToAppRef);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_twins_encode_like_the_owned_messages() {
        let jobs = vec![(1u64, Job::Run("a".to_owned())), (u64::MAX, Job::End)];
        let bytes = postcard::to_stdvec(jobs.as_slice()).expect("encodes");
        let back: Vec<(u64, Job<String>)> = postcard::from_bytes(&bytes).expect("decodes");
        assert!(matches!(
            back.as_slice(),
            [(1, Job::Run(request)), (u64::MAX, Job::End)] if request == "a"
        ));

        let answers = vec![
            Answer::Done {
                id: 3,
                response: 9u32,
            },
            Answer::EncodeFailed {
                id: 4,
                reason: "no".into(),
            },
        ];
        let bytes = postcard::to_stdvec(&ToAppRef::Answers(&answers)).expect("encodes");
        match postcard::from_bytes::<ToApp<u32>>(&bytes).expect("decodes") {
            ToApp::Answers(back) => {
                assert_eq!(back.iter().map(Answer::id).collect::<Vec<_>>(), [3, 4])
            }
            _ => panic!("wrong variant"),
        }
        let panicked: ToAppRef<'_, u32> = ToAppRef::Panicked {
            message: "boom",
            location: Some("x.rs:1:2"),
        };
        let bytes = postcard::to_stdvec(&panicked).expect("encodes");
        match postcard::from_bytes::<ToApp<u32>>(&bytes).expect("decodes") {
            ToApp::Panicked { message, location } => {
                assert_eq!(message, "boom");
                assert_eq!(location.as_deref(), Some("x.rs:1:2"));
            }
            _ => panic!("wrong variant"),
        }
    }
}
