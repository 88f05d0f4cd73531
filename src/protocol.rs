//! The messages after the hello, encoded by `ipc-channel`. Changing them means bumping
//! [`PROTOCOL`](crate::build::PROTOCOL).
//!
//! The connection the worker opened carries worker-to-app messages: the hello (raw bytes), then
//! [`Ready`], then [`ToApp`]. [`Ready`] hands the app the sending end of a channel the worker
//! created for app-to-worker messages (`Vec<Item<I>>`); the worker keeps no copy of it, so the worker sees the
//! channel close when the app goes away.
//!
//! Requests and responses travel in batches: whoever sends takes everything queued at that moment
//! (up to a cap), so one message carries many when many are in flight. Each owned message type
//! has a borrowed twin (`…Ref`) that encodes identically, so a batch is sent from a slice the
//! sender keeps.

use ipc_channel::ipc::OpaqueIpcSender;
use serde::{Deserialize, Deserializer, Serialize};

/// The worker's second message, sent right after a hello with `Status::Ready`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Ready {
    /// An `IpcSender<Vec<Item<I>>>`.
    pub(crate) requests: OpaqueIpcSender,
}

/// One item of an app-to-worker message, which is a `Vec<Item<I>>`.
#[derive(Serialize, Deserialize)]
pub(crate) enum Item<I> {
    /// Run this request.
    Request { id: u64, request: I },
    /// The app gave up on request `id`: drop it if queued, signal its handler if running.
    Cancel(u64),
    /// Take no more requests, answer those in flight, exit with code 0.
    Shutdown,
}

/// The sending side of an app-to-worker message: a slice encodes like the `Vec`.
#[derive(Serialize)]
#[serde(transparent)]
pub(crate) struct ItemsRef<'a, I>(pub(crate) &'a [Item<I>]);

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

/// Worker to app.
#[derive(Serialize, Deserialize)]
pub(crate) enum ToApp<O> {
    /// Answers, in the order they were finished.
    Answers(Vec<Answer<O>>),
    /// The worker panicked and is about to exit.
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
send_only!(ItemsRef);
send_only!(ToAppRef);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_twins_encode_like_the_owned_messages() {
        let items = vec![
            Item::Request {
                id: 1,
                request: "a".to_owned(),
            },
            Item::Cancel(1),
            Item::Shutdown,
        ];
        let bytes = postcard::to_stdvec(&ItemsRef(&items)).expect("encodes");
        let back: Vec<Item<String>> = postcard::from_bytes(&bytes).expect("decodes");
        assert!(matches!(
            back.as_slice(),
            [Item::Request { id: 1, request }, Item::Cancel(1), Item::Shutdown] if request == "a"
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
