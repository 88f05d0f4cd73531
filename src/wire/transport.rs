//! What bincrew adds around `ipc-channel`'s sockets so that a frozen or broken worker cannot
//! hold or abort the app.
//!
//! `ipc-channel` 0.23 gives no access to a channel's socket, its `send` only blocks, and its
//! `recv` trusts the sizes a peer declares. On Linux bincrew finds the descriptor of each of its
//! own channel ends (from the `Debug` form of `ipc-channel`'s handle, checked against the socket
//! itself: its type and the process at the other end) and then:
//!
//! - makes the app's sending ends non-blocking, so a send either goes out whole or fails with
//!   `WouldBlock` having sent nothing ([`Sent::WouldBlock`]), and a writer thread waits for room
//!   with [`wait_writable`];
//! - reads each message itself ([`PacketReader`]) and checks it before anything is decoded: the
//!   header of its first fragment (declared sizes), and the descriptors it carries (their kind
//!   and size), so a message that would make `ipc-channel` allocate without bound, wait for ever
//!   or panic is refused;
//! - waits for a message with a deadline ([`wait_readable`]).
//!
//! Where the descriptor cannot be found (another platform, or another `ipc-channel` whose `Debug`
//! form differs), [`Socket::find`] returns `None` and the callers fall back: every send goes
//! through a writer thread, and messages are read unchecked.
//!
//! Messages also travel in [`Framed`] envelopes: encoded once by bincrew, carried inline when
//! they fit in one socket message, and otherwise in shared memory, so `ipc-channel` never splits
//! a message into fragments (whose sending blocks until the peer has read them all).

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use ipc_channel::ipc::IpcSharedMemory;
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::region::{self, Claim, Placed};

/// The largest message bincrew accepts by default: a frame in shared memory, or a shared-memory
/// region inside a message.
pub(crate) const DEFAULT_MAX_MESSAGE: usize = 1 << 30;

thread_local! {
    /// The limit in force while this thread decodes a message (see [`with_limit`]).
    static LIMIT: Cell<usize> = const { Cell::new(DEFAULT_MAX_MESSAGE) };
}

/// Runs `decode` with `limit` as the largest frame and shared-memory region accepted.
pub(crate) fn with_limit<T>(limit: usize, decode: impl FnOnce() -> T) -> T {
    let before = LIMIT.with(|l| l.replace(limit));
    let result = decode();
    LIMIT.with(|l| l.set(before));
    result
}

/// The limit in force for the message being decoded on this thread.
pub(crate) fn current_limit() -> usize {
    LIMIT.with(Cell::get)
}

/// The largest frame carried inline: what fits in one socket message with room to spare.
pub(crate) fn inline_max() -> usize {
    imp::inline_max()
}

/// What a frame carries, written by bincrew into the frame's buffer: the request batches and
/// the answers (`wire::messages`), whose items are encoded one by one so that one that does not
/// encode or decode fails alone.
pub(crate) trait Body {
    /// Appends the encoding to `out`; items that cannot be encoded are left out or replaced,
    /// and reported through [`take_encode_failures`].
    fn write(&self, out: &mut Vec<u8>) -> Result<(), String>;

    /// The exact length [`write`](Self::write) would give, when the body can instead be written
    /// straight into the message ([`emit`](Self::emit)): every item encodes, and encoding it
    /// twice has no side effect (no IPC handles inside). `None` otherwise.
    fn direct_len(&self) -> Option<usize> {
        None
    }

    /// Writes what [`write`](Self::write) would, element by element, into the message being
    /// encoded; called only after [`direct_len`](Self::direct_len) said it can.
    fn emit<E: Emit>(&self, _out: &mut E) -> Result<(), E::Error> {
        Ok(())
    }
}

/// Where [`Body::emit`] writes: the tuple of the message `ipc-channel` is encoding with
/// postcard, in which a `u8` and an array of `u8` are their bytes as they are, and a value is
/// its postcard encoding. The frame's bytes are thus the ones [`Body::write`] gives, without
/// going through a buffer of their own first.
pub(crate) trait Emit {
    type Error;
    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error>;
}

impl<S: SerializeTuple> Emit for S {
    type Error = S::Error;

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        self.serialize_element(value)
    }
}

/// Counts the bytes of a postcard encoding without writing them.
struct Count(usize);

impl postcard::ser_flavors::Flavor for Count {
    type Output = usize;

    fn try_push(&mut self, _: u8) -> postcard::Result<()> {
        self.0 += 1;
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0 += data.len();
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.0)
    }
}

/// The length of `value`'s postcard encoding, when it encodes.
pub(crate) fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Option<usize> {
    postcard::serialize_with_flavor(value, Count(0)).ok()
}

/// The receiving side of [`Body`]: `Err` means the frame itself is broken (not one item).
pub(crate) trait Parse: Sized {
    fn parse(bytes: &[u8]) -> Result<Self, String>;
}

/// The sending side of a frame: the body, written inside `ipc-channel`'s send (so the channels
/// and shared memory it carries are collected as usual), inline or in shared memory; and the
/// channel's region, when the send holds it, for a large body that can be written straight into
/// it (see `region.rs`).
pub(crate) struct FramedRef<'a, T: ?Sized>(pub(crate) &'a T, pub(crate) Option<&'a Claim<'a>>);

/// The receiving side of a frame: the value, and how many bytes its encoding took.
pub(crate) struct Framed<T> {
    pub(crate) value: T,
    pub(crate) len: usize,
}

// Not derived: `T` need not be `Debug` (and `ipc-channel`'s handles show their descriptor only
// through `Debug`, see `Socket::find`).
impl<T> fmt::Debug for Framed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framed").field("len", &self.len).finish()
    }
}

const INLINE: u8 = 0;
const SPILLED: u8 = 1;
/// In the channel's region: the sequence number, the offset in the region's data, the length.
const PLACED: u8 = 2;
/// In a new region, which the frame carries: the region, then as [`PLACED`].
const PLACED_NEW: u8 = 3;

/// Writes a body whose [`Body::direct_len`] is `len` straight into `data` (exactly `len`
/// bytes): the bytes [`Body::write`] would give.
fn emit_into<T: Body + ?Sized>(body: &T, data: &mut [u8]) -> bool {
    let len = data.len();
    let mut serializer = postcard::Serializer {
        output: postcard::ser_flavors::Slice::new(data),
    };
    // A postcard tuple is its elements, one after another.
    let emitted = match serde::Serializer::serialize_tuple(&mut serializer, 0) {
        Ok(mut tuple) => body.emit(&mut tuple).is_ok(),
        Err(_) => false,
    };
    use postcard::ser_flavors::Flavor;
    emitted
        && serializer
            .output
            .finalize()
            .is_ok_and(|used| used.len() == len)
}

/// Borrowed bytes, encoded as a byte string.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// The most a thread keeps of its encoding buffer between messages.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    /// Where this thread encodes a frame's contents, kept between messages so that a message
    /// costs no allocation of its own.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Items of the frames this thread encoded that could not be encoded: `(id, reason)`.
    static ENCODE_FAILURES: std::cell::RefCell<Vec<(u64, String)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Records that item `id` of the frame being written could not be encoded.
pub(crate) fn encode_failed(id: u64, reason: String) {
    ENCODE_FAILURES.with(|f| f.borrow_mut().push((id, reason)));
}

/// The items this thread could not encode since the last call.
pub(crate) fn take_encode_failures() -> Vec<(u64, String)> {
    ENCODE_FAILURES.with(|f| std::mem::take(&mut *f.borrow_mut()))
}

impl<T: Body + ?Sized> Serialize for FramedRef<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut direct = self.0.direct_len();
        if let (Some(claim), Some(len)) = (self.1, direct.filter(|&len| len >= region::MIN_BODY)) {
            let mut emitted = None;
            let placing = claim.place(len, |data| {
                let ok = emit_into(self.0, data);
                emitted = Some(ok);
                ok
            });
            if let Some(at) = placing {
                return placed(serializer, claim, at, len);
            }
            // The body did not come out as measured (and the measure is used up): it is written
            // the slow way, item by item, below.
            if emitted == Some(false) {
                direct = None;
            }
        }
        if let Some(len) = direct.filter(|&len| len <= inline_max()) {
            // Inline, written straight into the message: the same bytes as below (the kind,
            // then a byte string: its length as a varint, then the body), one copy fewer.
            let mut tuple = serializer.serialize_tuple(3)?;
            tuple.serialize_element(&INLINE)?;
            tuple.serialize_element(&len)?;
            self.0.emit(&mut tuple)?;
            return tuple.end();
        }
        let mut bytes = SCRATCH.with(|scratch| scratch.take());
        bytes.clear();
        let written = self.0.write(&mut bytes);
        // A large body with IPC handles inside: copied into the region, its handles still
        // travel with the message.
        let claim = self
            .1
            .filter(|_| bytes.len() >= region::MIN_BODY && written.is_ok());
        if let Some(claim) = claim {
            let placing = claim.place(bytes.len(), |data| {
                data.copy_from_slice(&bytes);
                true
            });
            if let Some(at) = placing {
                let len = bytes.len();
                if bytes.capacity() <= SCRATCH_KEEP {
                    SCRATCH.with(|scratch| scratch.replace(bytes));
                }
                return placed(serializer, claim, at, len);
            }
        }
        let result = written.map_err(serde::ser::Error::custom).and_then(|()| {
            let mut tuple = serializer.serialize_tuple(2)?;
            if bytes.len() <= inline_max() {
                tuple.serialize_element(&INLINE)?;
                tuple.serialize_element(&Bytes(&bytes))?;
            } else {
                // Its own descriptor, and the duplicate the message carries.
                let memory = crate::os::spare_descriptors(2)
                    .then(|| quietly(|| IpcSharedMemory::from_bytes(&bytes)))
                    .flatten();
                let Some(memory) = memory else {
                    return Err(frame_encode_error(format!(
                        "cannot create shared memory for a message of {} bytes: {NO_SHARING}",
                        bytes.len()
                    )));
                };
                tuple.serialize_element(&SPILLED)?;
                serialize_memory(&mut tuple, &memory)?;
            }
            tuple.end()
        });
        if bytes.capacity() <= SCRATCH_KEEP {
            SCRATCH.with(|scratch| scratch.replace(bytes));
        }
        result
    }
}

/// Why shared memory could not go into a message.
pub(crate) const NO_SHARING: &str = "this process has no file descriptor or address space left";

/// Puts shared memory into the message being encoded. `ipc-channel` duplicates and maps it for
/// the message, and panics when it cannot (no descriptor or address space left): that becomes
/// an error of this message instead of a panic in the sending thread.
fn serialize_memory<T: SerializeTuple>(
    tuple: &mut T,
    memory: &IpcSharedMemory,
) -> Result<(), T::Error> {
    let sent = crate::os::spare_descriptors(1)
        .then(|| quietly(|| tuple.serialize_element(memory)))
        .flatten();
    sent.unwrap_or_else(|| {
        Err(frame_encode_error(format!(
            "cannot share memory with the other process: {NO_SHARING}"
        )))
    })
}

thread_local! {
    /// Why this thread's last frame could not be encoded as a whole, for the error: postcard
    /// keeps no custom message.
    static FRAME_ENCODE_ERROR: std::cell::RefCell<Option<String>> =
        const { std::cell::RefCell::new(None) };
}

/// An encoding error of the whole frame, whose reason [`encode_error_reason`] gives.
fn frame_encode_error<E: serde::ser::Error>(reason: String) -> E {
    let error = E::custom(&reason);
    FRAME_ENCODE_ERROR.with(|e| e.replace(Some(reason)));
    error
}

/// `sender.send(message)`, where a panic while encoding the message (a `Serialize` that
/// panics; `ipc-channel` out of descriptors for shared memory) becomes an encoding error of
/// this message, whose reason [`encode_error_reason`] gives: the thread that sends (a caller's,
/// a writer thread, a worker's handler thread) goes on.
pub(crate) fn send_guarded<T: Serialize>(
    sender: &ipc_channel::ipc::IpcSender<T>,
    message: T,
) -> Result<(), ipc_channel::IpcError> {
    quietly_or_why(|| sender.send(message)).unwrap_or_else(|panic| {
        FRAME_ENCODE_ERROR.with(|e| e.replace(Some(format!("encoding it panicked: {panic}"))));
        Err(ipc_channel::IpcError::SerializationError(
            postcard::Error::SerdeSerCustom.into(),
        ))
    })
}

/// The reason of a failed send's encoding error `e`: the frame's own when it recorded one.
pub(crate) fn encode_error_reason(e: &dyn fmt::Display) -> String {
    FRAME_ENCODE_ERROR
        .with(|r| r.take())
        .unwrap_or_else(|| e.to_string())
}

/// The frame of a body placed in the channel's region: the region too when it is new.
fn placed<S: Serializer>(
    serializer: S,
    claim: &Claim<'_>,
    placed: Placed,
    len: usize,
) -> Result<S::Ok, S::Error> {
    claim.announce(|memory| match memory {
        Some(memory) => {
            let mut tuple = serializer.serialize_tuple(5)?;
            tuple.serialize_element(&PLACED_NEW)?;
            serialize_memory(&mut tuple, memory)?;
            tuple.serialize_element(&placed.seq)?;
            tuple.serialize_element(&placed.offset)?;
            tuple.serialize_element(&len)?;
            tuple.end()
        }
        None => {
            let mut tuple = serializer.serialize_tuple(4)?;
            tuple.serialize_element(&PLACED)?;
            tuple.serialize_element(&placed.seq)?;
            tuple.serialize_element(&placed.offset)?;
            tuple.serialize_element(&len)?;
            tuple.end()
        }
    })
}

/// `ipc-channel` types a channel by a type that is both `Serialize` and `Deserialize`; the
/// sending side is never decoded.
impl<'de, T: ?Sized> Deserialize<'de> for FramedRef<'_, T> {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("a frame is decoded as `Framed`"))
    }
}

/// `ipc-channel` wants `Serialize` on what it receives too; a received frame is never sent.
impl<T> Serialize for Framed<T> {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "a received frame is not sent again",
        ))
    }
}

impl<'de, T: Parse> Deserialize<'de> for Framed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FrameVisitor<T>(PhantomData<T>);

        impl<'de, T: Parse> Visitor<'de> for FrameVisitor<T> {
            type Value = Framed<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a bincrew frame")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                use serde::de::Error;
                let kind: u8 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::custom("a frame without its kind"))?;
                let limit = current_limit();
                let decoded = match kind {
                    INLINE => {
                        let bytes: &'de [u8] = seq
                            .next_element()?
                            .ok_or_else(|| A::Error::custom("a frame without its bytes"))?;
                        T::parse(bytes).map(|value| (value, bytes.len()))
                    }
                    SPILLED => {
                        let memory: IpcSharedMemory = seq
                            .next_element()?
                            .ok_or_else(|| A::Error::custom("a frame without its memory"))?;
                        if memory.len() > limit {
                            return Err(A::Error::custom(format!(
                                "a message of {} bytes, over the limit of {limit}",
                                memory.len()
                            )));
                        }
                        let len = memory.len();
                        if region::untrusted_sender() {
                            // The worker keeps the memory and may write it meanwhile.
                            // SAFETY: `memory` stays mapped for the call.
                            unsafe { region::parse_copy(memory.as_ptr(), len, T::parse) }
                                .map(|value| (value, len))
                        } else {
                            T::parse(&memory).map(|value| (value, len))
                        }
                    }
                    PLACED | PLACED_NEW => {
                        let memory: Option<IpcSharedMemory> =
                            if kind == PLACED_NEW {
                                Some(seq.next_element()?.ok_or_else(|| {
                                    A::Error::custom("a frame without its region")
                                })?)
                            } else {
                                None
                            };
                        let number = seq.next_element::<u64>()?;
                        let offset = seq.next_element::<usize>()?;
                        let len = seq.next_element::<usize>()?;
                        let (Some(number), Some(offset), Some(len)) = (number, offset, len) else {
                            return Err(A::Error::custom("a frame without its place"));
                        };
                        let at = Placed {
                            seq: number,
                            offset,
                        };
                        region::take(memory, at, len, limit, T::parse).map(|value| (value, len))
                    }
                    other => return Err(A::Error::custom(format!("a frame of kind {other}"))),
                };
                let (value, len) = decoded.map_err(|reason| {
                    // postcard keeps no message of its own errors: keep it for the reader.
                    FRAME_ERROR.with(|e| e.replace(Some(reason.clone())));
                    A::Error::custom(reason)
                })?;
                Ok(Framed { value, len })
            }
        }

        // At most five elements (`PLACED_NEW`); postcard does not encode the count.
        deserializer.deserialize_tuple(5, FrameVisitor(PhantomData))
    }
}

thread_local! {
    /// Why the last frame this thread decoded is broken, as bincrew found it (postcard's error
    /// keeps no message).
    static FRAME_ERROR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// How many channels the message this thread is about to decode carries, when it was read
    /// by a [`PacketReader`].
    static CHANNELS: Cell<Option<usize>> = const { Cell::new(None) };
    /// Set while this thread closes the channels of a message that no item took, by probing
    /// their indices: the panic that ends the probe is expected (see [`quiet_panic`]).
    static PROBING: Cell<bool> = const { Cell::new(false) };
}

/// Whether threads may probe: only where bincrew's own panic hook stays quiet for them.
static MAY_PROBE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `decode` knowing that the message carries `channels` channels.
pub(crate) fn with_channels<T>(channels: usize, decode: impl FnOnce() -> T) -> T {
    CHANNELS.with(|c| c.set(Some(channels)));
    let result = decode();
    CHANNELS.with(|c| c.set(None));
    result
}

/// Lets threads of this process probe for unclaimed channels: a worker calls it once its panic
/// hook honours [`quiet_panic`].
pub(crate) fn allow_probing() {
    MAY_PROBE.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether a panic on this thread is the expected end of a probe (the panic hook says nothing).
pub(crate) fn quiet_panic() -> bool {
    PROBING.with(Cell::get)
}

/// Runs `f`, which may panic inside `ipc-channel` (out of descriptors or memory), with the
/// worker's panic hook quiet: `None` when it panicked.
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    quietly_or_why(f).ok()
}

/// [`quietly`], with the panic's message when it panicked.
pub(crate) fn quietly_or_why<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let before = PROBING.with(|p| p.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    PROBING.with(|p| p.set(before));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

/// Closes the channels of the message being decoded that no item took (the items that failed
/// to encode or decode carried them): `ipc-channel` would otherwise leave their descriptors
/// open. Called from within the decoding of the message.
pub(crate) fn close_unclaimed_channels() {
    let take = |index: usize| -> bool {
        let Ok(bytes) = postcard::to_stdvec(&index) else {
            return false;
        };
        // A channel already taken yields a closed handle, dropped at once.
        std::panic::catch_unwind(|| {
            let _ = postcard::from_bytes::<ipc_channel::ipc::IpcReceiver<()>>(&bytes);
        })
        .is_ok()
    };
    match CHANNELS.with(Cell::get) {
        Some(count) => {
            for index in 0..count {
                take(index);
            }
        }
        None if MAY_PROBE.load(std::sync::atomic::Ordering::SeqCst) => {
            // Indices past the end panic in `ipc-channel`: the first panic ends the probe.
            PROBING.with(|p| p.set(true));
            let mut index = 0;
            while take(index) {
                index += 1;
            }
            PROBING.with(|p| p.set(false));
        }
        None => {
            tracing::debug!("channels carried by an item that failed stay open");
        }
    }
}

/// How a non-blocking send ended.
pub(crate) enum Sent {
    /// The message went out.
    Done,
    /// The socket is full: nothing was sent.
    WouldBlock,
    /// The message could not be encoded: nothing was sent.
    Encode(String),
    /// The peer is gone (or the socket failed).
    Gone(String),
}

impl Sent {
    /// Classifies the result of an `ipc-channel` send.
    pub(crate) fn from_result(result: Result<(), ipc_channel::IpcError>) -> Sent {
        match result {
            Ok(()) => Sent::Done,
            Err(ipc_channel::IpcError::SerializationError(e)) => {
                // `ipc-channel` returns before it takes the channels and shared memory the
                // message collected while encoding: send them nowhere, so they neither leak
                // into this thread's next message nor stay open.
                discard_collected();
                Sent::Encode(encode_error_reason(&e))
            }
            Err(ipc_channel::IpcError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                Sent::WouldBlock
            }
            Err(e) => Sent::Gone(e.to_string()),
        }
    }
}

/// Sends the channels and shared memory collected by a failed encoding on this thread to a
/// channel of its own and drops them there.
pub(crate) fn discard_collected() {
    if let Some(sink) = discard_sink() {
        // Under the lock, this message is the one `recv` takes.
        let sink = crate::sync::lock(sink);
        quietly(|| {
            if sink.0.send(()).is_ok() {
                let _ = sink.1.recv();
            }
        });
    }
}

/// The process's channel for [`discard_collected`]. Made by [`prepare_discard`] when a
/// connection is set up, because an encoding fails most often when no descriptor is left to
/// make it then.
fn discard_sink() -> Option<&'static std::sync::Mutex<DiscardSink>> {
    static SINK: std::sync::OnceLock<Option<std::sync::Mutex<DiscardSink>>> =
        std::sync::OnceLock::new();
    SINK.get_or_init(|| ipc_channel::ipc::channel().ok().map(std::sync::Mutex::new))
        .as_ref()
}

type DiscardSink = (
    ipc_channel::ipc::IpcSender<()>,
    ipc_channel::ipc::IpcReceiver<()>,
);

/// Makes the channel [`discard_collected`] needs, once per process.
pub(crate) fn prepare_discard() {
    let _ = discard_sink();
}

/// One of bincrew's own channel ends, by descriptor: checked to be a sequenced-packet socket
/// whose other end is held by the expected process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Socket {
    fd: i32,
}

impl Socket {
    /// Finds the descriptor of an `ipc-channel` handle (`OpaqueIpcSender`, `IpcReceiver`, ...)
    /// whose other end belongs to process `peer`.
    pub(crate) fn find(handle: &dyn fmt::Debug, peer: u32) -> Option<Socket> {
        let fd = fd_in_debug(&format!("{handle:?}"))?;
        imp::is_peer_socket(fd, peer).then_some(Socket { fd })
    }

    /// A socket that is never used, for tests of the code that chooses how to send.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Socket {
        Socket { fd: -1 }
    }

    /// Makes sends on this socket fail with `WouldBlock` instead of waiting.
    pub(crate) fn set_nonblocking(self) -> bool {
        imp::set_nonblocking(self.fd)
    }

    /// Waits until the socket has room for a message, or `timeout` passed.
    pub(crate) fn wait_writable(self, timeout: Duration) {
        imp::wait(self.fd, imp::Direction::Write, Some(timeout));
    }

    /// Waits until a message (or the end of the channel) can be read; `false` when `deadline`
    /// passed first.
    pub(crate) fn wait_readable(self, deadline: Option<Instant>) -> bool {
        loop {
            let timeout = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return false,
                },
                None => None,
            };
            if imp::wait(self.fd, imp::Direction::Read, timeout) {
                return true;
            }
            if deadline.is_none() {
                continue;
            }
        }
    }

    /// Watches `self` (a control channel) always, and `requests` while armed; see
    /// `os::socket::Watch`. `None` where the platform has no such thing.
    pub(crate) fn watch_with(self, requests: Socket) -> Option<imp::Watch> {
        imp::Watch::new(self.fd, requests.fd)
    }

    /// Reads the next message itself, waiting for one unless `wait` is false (then
    /// [`Packet::Empty`] when none is there), and checks it: `Err` says why reading it could
    /// make the reader allocate without bound, wait for ever or panic. One system call, where a
    /// peek and `ipc-channel`'s read take two. A message without
    /// descriptors stays in `buffer` (at least [`packet_buffer_len`] bytes) for the caller to
    /// decode ([`Packet::Data`]); one with descriptors is sent on unchanged through the socket
    /// `reinject` gives (a sending end of this process, made when first needed), for
    /// `ipc-channel` to read at the other end.
    pub(crate) fn read_packet(
        self,
        buffer: &mut [std::mem::MaybeUninit<u8>],
        limit: usize,
        reinject: &mut dyn FnMut() -> Option<Socket>,
        wait: bool,
    ) -> Result<Packet, String> {
        imp::read_packet(
            self.fd,
            buffer,
            limit,
            &mut || reinject().map(|s| s.fd),
            wait,
        )
    }
}

/// Reads one channel's messages with one system call each (`Socket::read_packet`), where
/// `ipc-channel`'s `recv` behind a peek takes two, and allocates nothing per message: a message
/// without descriptors is read into a buffer kept here and decoded from it (postcard, as
/// `ipc-channel` does); one with descriptors (channels, shared memory) is sent on, as it came,
/// through a channel of this process whose receiving end `ipc-channel` then reads, so that its
/// descriptors become its handles. Every message is checked before anything is decoded.
pub(crate) struct PacketReader<T> {
    socket: Socket,
    /// Never zeroed: only what the kernel writes is read, so only the pages messages reach
    /// become resident.
    buffer: Vec<std::mem::MaybeUninit<u8>>,
    /// Made with the first message that carries descriptors.
    pass: Option<PassOn<T>>,
}

/// The channel messages with descriptors are passed on through.
struct PassOn<T> {
    /// The sending end; `socket` is its descriptor.
    _sender: ipc_channel::ipc::OpaqueIpcSender,
    socket: Socket,
    receiver: ipc_channel::ipc::IpcReceiver<T>,
}

impl<T: Serialize + for<'de> Deserialize<'de> + 'static> PassOn<T> {
    fn new() -> Option<PassOn<T>> {
        let (sender, receiver) = ipc_channel::ipc::channel::<T>().ok()?;
        let sender = sender.to_opaque();
        let socket = Socket::find(&sender, std::process::id())?;
        Some(PassOn {
            _sender: sender,
            socket,
            receiver,
        })
    }
}

/// What [`PacketReader::read`] got.
pub(crate) enum Received<T> {
    Message(T),
    /// Nothing there yet (a read that does not wait).
    Empty,
    /// The channel ended.
    End,
    /// The message was refused, did not decode, or reading failed: why.
    Refused(String),
}

impl<T: Serialize + for<'de> Deserialize<'de> + 'static> PacketReader<T> {
    /// A reader of `socket`, the receiving end's descriptor.
    pub(crate) fn new(socket: Socket) -> PacketReader<T> {
        let mut buffer = Vec::with_capacity(packet_buffer_len());
        buffer.resize(packet_buffer_len(), std::mem::MaybeUninit::uninit());
        PacketReader {
            socket,
            buffer,
            pass: None,
        }
    }

    /// Reads and decodes the next message, waiting for one unless `wait` is false; refuses
    /// one over `limit`.
    pub(crate) fn read(&mut self, limit: usize, wait: bool) -> Received<T> {
        let pass = &mut self.pass;
        let packet = self.socket.read_packet(
            &mut self.buffer,
            limit,
            &mut || {
                if pass.is_none() {
                    *pass = PassOn::new();
                }
                pass.as_ref().map(|p| p.socket)
            },
            wait,
        );
        FRAME_ERROR.with(|e| e.take());
        let decoded = match packet {
            Err(reason) => return Received::Refused(reason),
            Ok(Packet::Empty) => return Received::Empty,
            Ok(Packet::End) => return Received::End,
            Ok(Packet::Data { len }) => {
                // SAFETY: `read_packet` had the kernel write the header and `len` bytes of data.
                let data = unsafe {
                    std::slice::from_raw_parts(
                        self.buffer.as_ptr().cast::<u8>().add(PACKET_HEADER),
                        len,
                    )
                };
                with_channels(0, || {
                    with_limit(limit, || {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            postcard::from_bytes::<T>(data).map_err(|e| e.to_string())
                        }))
                    })
                })
            }
            Ok(Packet::Passed { channels }) => with_channels(channels, || {
                with_limit(limit, || {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let Some(pass) = &self.pass else {
                            return Err("no channel to pass it on".to_owned());
                        };
                        pass.receiver.recv().map_err(|e| match e {
                            ipc_channel::IpcError::SerializationError(e) => e.to_string(),
                            other => format!("passing it on failed: {other}"),
                        })
                    }))
                })
            }),
        };
        match decoded {
            Ok(Ok(message)) => Received::Message(message),
            Ok(Err(e)) => {
                let reason = FRAME_ERROR.with(|e| e.take()).unwrap_or(e);
                Received::Refused(format!("it sent a message that does not decode: {reason}"))
            }
            // `ipc-channel`'s deserializer panics on a message that names a channel it does not
            // carry.
            Err(_) => {
                Received::Refused("it sent a message that names a channel it did not send".into())
            }
        }
    }
}

/// The first descriptor number in the `Debug` form of an `ipc-channel` 0.23 handle:
/// `OsIpcSender { fd: SharedFileDescriptor(5) }` or `OsIpcReceiver { fd: Cell { value: 6 } }`.
fn fd_in_debug(text: &str) -> Option<i32> {
    let after = &text[text.find("fd: ")? + 4..];
    let start = after.find(|c: char| c.is_ascii_digit())?;
    // Only the wrappers `ipc-channel` uses may stand between `fd:` and the number.
    let between = &after[..start];
    if !matches!(between, "SharedFileDescriptor(" | "Cell { value: ") {
        return None;
    }
    let digits: String = after[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

use crate::os::socket as imp;
pub(crate) use imp::{packet_buffer_len, Doorbell, ExitFd, Packet, PACKET_HEADER};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_read_from_ipc_channels_debug_form() {
        assert_eq!(
            fd_in_debug(
                "OpaqueIpcSender { os_sender: OsIpcSender { fd: SharedFileDescriptor(5) } }"
            ),
            Some(5)
        );
        assert_eq!(
            fd_in_debug("IpcReceiver { os_receiver: OsIpcReceiver { fd: Cell { value: 17 } }, phantom: PhantomData<u8> }"),
            Some(17)
        );
        assert_eq!(fd_in_debug("Something { fd: Other(3) }"), None);
        assert_eq!(fd_in_debug("nothing here"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_ipc_channel_s_handles_are_found() {
        let (tx, rx) = ipc_channel::ipc::channel::<u32>().expect("channel");
        let me = std::process::id();
        let sender = Socket::find(&tx, me).expect("the sender's descriptor");
        let receiver = Socket::find(&rx, me).expect("the receiver's descriptor");
        assert_ne!(sender.fd, receiver.fd);
        // Not this process's: refused.
        assert!(Socket::find(&tx, me + 1).is_none());
    }

    #[test]
    fn frames_round_trip_inline_and_spilled() {
        use crate::wire::messages::Job;
        type Batch = [(u64, Job<Vec<u32>>)];
        type Received = Framed<Vec<(u64, Job<Vec<u32>>)>>;
        let (tx, rx) = ipc_channel::ipc::channel::<FramedRef<'static, Batch>>().expect("channel");
        let tx: ipc_channel::ipc::IpcSender<FramedRef<'_, Batch>> = tx.to_opaque().to();
        let rx: ipc_channel::ipc::IpcReceiver<Received> = rx.to_opaque().to();
        let small: Vec<u32> = (0..10).collect();
        let big: Vec<u32> = (0..(inline_max() as u32)).collect();
        for value in [small, big] {
            tx.send(FramedRef(&[(7, Job::Run(value.clone()))][..], None))
                .expect("send");
            let back = rx.recv().expect("recv");
            assert_eq!(back.len > inline_max(), value.len() > 10);
            match back.value.as_slice() {
                [(7, Job::Run(got))] => assert_eq!(*got, value),
                _ => panic!("not the batch sent"),
            }
        }
    }
}
