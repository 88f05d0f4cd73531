//! [`SharedBuffer`]: shared memory the app writes into directly and moves to a worker.
//!
//! Each buffer has a token; a buffer that was sent parks its mapping on drop, and a buffer that
//! arrives with a parked token takes the parked mapping back (see `park.rs`).

mod park;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use ipc_channel::ipc::IpcSharedMemory;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use park::PARKING;

/// A buffer in shared memory, with one owner at a time, that a request or response carries to
/// the other process without copying the bytes.
///
/// Write into it directly (it dereferences to `&mut [u8]`), put it in a request, and the worker
/// maps the same memory; it can write into it too and send it back in its response. Compared with
/// [`IpcSharedMemory::from_bytes`], which copies a slice into new shared memory, this saves a copy
/// on each side.
///
/// Only one process and one value ever hold its memory: sending moves it, and cloning copies the
/// bytes into new shared memory. (Shared memory must not be written by two parties at once.)
///
/// ```no_run
/// use bincrew::{RequestArgs, SharedBuffer, Worker};
///
/// fn invert(args: RequestArgs<SharedBuffer>) -> SharedBuffer {
///     let mut image = args.request;
///     image.iter_mut().for_each(|b| *b = !*b);
///     image // back to the app, still without a copy
/// }
///
/// fn main() {
///     bincrew::init!();
///     bincrew::run_worker_blocking("invert", invert);
///
///     let worker = Worker::<SharedBuffer, SharedBuffer>::start_blocking("invert").unwrap();
///     let mut image = SharedBuffer::zeroed(64 << 20);
///     image[..4].copy_from_slice(&[1, 2, 3, 4]);
///     let inverted = worker.run_blocking(image).unwrap();
///     assert_eq!(inverted[0], !1);
/// }
/// ```
///
/// # Reuse of mappings
///
/// A buffer that goes back and forth keeps its mapping on each side: in steady state it comes
/// back at the same address, with its pages still mapped, and neither side maps or unmaps it
/// again. Each buffer carries a random token (`zeroed`, `from_slice` and `clone` make new ones);
/// when a buffer that was sent is dropped, its mapping is not unmapped but *parked* under that
/// token, and a buffer that later arrives with the same token takes the parked mapping instead
/// of the freshly received one. A buffer that arrives with no parked mapping is mapped anew; on
/// Linux its pages are then mapped in one call (`MADV_POPULATE_WRITE`), rather than by a page
/// fault at the first touch of each page.
///
/// A parked mapping waits at most a second (and at most 64 mappings or 1 GiB are parked, the
/// oldest going first). So memory the peer does not send back, because it dropped or kept the
/// buffer, is unmapped on this side within a second; a thread named `bincrew-parked` does it,
/// and runs only while something is parked. A buffer received and dropped without being sent
/// on is unmapped at once.
///
/// # Caveats
///
/// - Serializing a buffer by other means than a request or response (with `serde` directly)
///   marks it sent as well: when it drops, its mapping stays parked for up to a second.
/// - An answer decoded before the sending thread has dropped the request (the peer preempted
///   it between its send and its drop) waits for that drop a few scheduler yields at most, then
///   is mapped anew.
pub struct SharedBuffer {
    memory: IpcSharedMemory,
    /// The buffer's identity: it travels with the memory, and names the parked mapping when
    /// the buffer comes back.
    token: u128,
    /// Set when the buffer is serialized: on drop, its mapping is parked rather than unmapped.
    sent: AtomicBool,
}

impl SharedBuffer {
    fn new(memory: IpcSharedMemory, token: u128) -> Self {
        SharedBuffer {
            memory,
            token,
            sent: AtomicBool::new(false),
        }
    }

    /// A zeroed buffer of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        Self::new(IpcSharedMemory::from_byte(0, len), new_token())
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self::new(IpcSharedMemory::from_bytes(bytes), new_token())
    }

    /// The buffer as read-only shared memory (for APIs that take [`IpcSharedMemory`]).
    pub fn into_shared_memory(mut self) -> IpcSharedMemory {
        // The empty region holds no mapping: what is left for `drop` has nothing to park.
        std::mem::replace(&mut self.memory, IpcSharedMemory::from_bytes(&[]))
    }
}

/// A new token: 128 bits that other processes cannot guess, so that a peer can only name the
/// tokens of buffers it received (see `park.rs`). A process-wide counter, hashed twice (with two
/// salts) by a hasher whose keys are random, drawn from the OS once per process: distinct inputs
/// of a keyed hash, no new dependency, and no system call per buffer.
fn new_token() -> u128 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let keys = KEYS.get_or_init(RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let high = keys.hash_one((0x6869_u16, n));
    let low = keys.hash_one((0x6c6f_u16, n));
    (u128::from(high) << 64) | u128::from(low)
}

impl Drop for SharedBuffer {
    fn drop(&mut self) {
        if self.sent.load(Ordering::Relaxed) {
            // The buffer may come back: keep its mapping (parking takes care of ending it). Even
            // an empty one (`into_shared_memory`) is no longer in flight.
            let memory = std::mem::replace(&mut self.memory, IpcSharedMemory::from_bytes(&[]));
            PARKING.park(self.token, memory);
        }
    }
}

impl Deref for SharedBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.memory
    }
}

impl DerefMut for SharedBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: a `SharedBuffer` is the only holder of its memory: it is made fresh, or
        // copied by `clone`, or received from the one message that moved it here, and the
        // sender gave up its value when it sent it. A mapping taken back from parking was
        // parked only once the buffer that held it was dropped, and is taken at most once.
        unsafe { self.memory.deref_mut() }
    }
}

/// Encoded as `(token, region)`.
impl Serialize for SharedBuffer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.sent.swap(true, Ordering::Relaxed) {
            PARKING.sending(self.token);
        }
        (self.token, &self.memory).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedBuffer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (token, fresh) = <(u128, IpcSharedMemory)>::deserialize(deserializer)?;
        if let Some(parked) = PARKING.take(token) {
            // This buffer was here before: its old mapping is still populated, and at the same
            // address. The fresh one was never touched, so unmapping it is cheap. The parked
            // mapping keeps its own length; a peer that sent another region under this token
            // gets back memory it had anyway (see `park.rs`).
            drop(fresh);
            return Ok(Self::new(parked, token));
        }
        let mut buffer = Self::new(fresh, token);
        // The memory arrives freshly mapped: map every page now, in one call, rather than
        // through one page fault per page as the buffer is used.
        crate::os::prefault(&mut buffer);
        Ok(buffer)
    }
}

impl Clone for SharedBuffer {
    /// Copies the bytes into new shared memory, with a new token.
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl PartialEq for SharedBuffer {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for SharedBuffer {}

impl fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("len", &self.memory.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use ipc_channel::ipc::{self, IpcSender};

    use super::*;

    /// Sends `value` through a new channel of this process and receives it as a `SharedBuffer`:
    /// what a peer's message goes through, with `value` written as the peer pleases.
    fn receive<T: Serialize + for<'de> Deserialize<'de>>(value: T) -> SharedBuffer {
        let (tx, rx) = ipc::channel::<SharedBuffer>().expect("channel");
        let tx: IpcSender<T> = tx.to_opaque().to();
        tx.send(value).expect("send");
        rx.recv().expect("recv")
    }

    #[test]
    fn a_buffer_sent_and_received_back_takes_its_parked_mapping() {
        let mut buffer = SharedBuffer::zeroed(1 << 20);
        buffer[0] = 7;
        let address = buffer.as_ptr();
        let back = receive(buffer);
        assert_eq!((back.as_ptr(), back.len(), back[0]), (address, 1 << 20, 7));
    }

    #[test]
    fn a_token_is_used_at_most_once_and_an_unknown_one_gets_the_fresh_region() {
        let buffer = SharedBuffer::from_slice(&[1; 4096]);
        let token = buffer.token;
        // The region a peer sends under a token it names: never the parked one's length.
        let forged = || IpcSharedMemory::from_bytes(&[2; 8192]);
        let unknown = receive((token ^ 1, forged()));
        assert_eq!(
            (unknown.len(), unknown[0]),
            (8192, 2),
            "an unknown token: the fresh region"
        );
        drop(receive(buffer));
        // `receive(buffer)` took the parked mapping and dropped it unsent: nothing is parked.
        let replayed = receive((token, forged()));
        assert_eq!((replayed.len(), replayed[0]), (8192, 2));

        let sent = SharedBuffer::from_slice(&[3; 4096]);
        let (token, address_sent) = (sent.token, sent.as_ptr());
        // Serialized (and so parked on drop) without being received.
        let (tx, _rx) = ipc::channel::<SharedBuffer>().expect("channel");
        tx.send(sent).expect("send");
        let first = receive((token, forged()));
        assert_eq!(
            (first.as_ptr(), first.len(), first[0]),
            (address_sent, 4096, 3),
            "a known token: the parked mapping, with its own length"
        );
        let second = receive((token, forged()));
        assert_ne!(second.as_ptr(), address_sent, "the token was used once");
        assert_eq!((second.len(), second[0]), (8192, 2));
    }

    #[test]
    fn tokens_differ_and_clones_get_their_own() {
        let buffer = SharedBuffer::zeroed(16);
        let clone = buffer.clone();
        assert_ne!(buffer.token, clone.token);
        assert_ne!(buffer.token, SharedBuffer::zeroed(16).token);
        assert_ne!(buffer.token >> 64, buffer.token & u128::from(u64::MAX));
    }
}
