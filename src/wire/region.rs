//! Shared memory that a channel's sender keeps for large frame bodies, so that they cross
//! without the socket's two copies (into the kernel and out of it) and without new shared
//! memory for each message.
//!
//! The sending side of a channel (the app's request channel, a worker's answer channel) owns
//! one [`Region`]. A frame whose body is at least [`MIN_BODY`] bytes goes into the region
//! instead of the message, when the region is free: written straight into place when it can
//! be (`Body::direct_len`: no IPC handles inside), else encoded first and copied in (its
//! handles still travel with the message). The message then carries only the frame's sequence
//! number, its offset in the region and its length. The first frame placed in a new region
//! carries the region itself (as `IpcSharedMemory`), and the receiver keeps its mapping
//! ([`Incoming`]) for the frames after it.
//!
//! The region starts with a [`HEADER`] holding one counter, written only by the receiver: the
//! sequence number of the last frame it finished decoding. The sender uses the region again
//! only once that counter reaches the last frame it placed; otherwise (the receiver is slow,
//! frozen or dishonest, or another thread is sending) the frame goes through the socket as
//! before. So a receiver can only spoil its own reads: releasing early lets the sender write
//! while it still reads, and never releasing costs the sender the fast path.
//!
//! A region is a ring: each frame goes after the last one (at a 64-byte boundary), and back to
//! the start when it would not fit, so that the memory a frame is written into was last
//! touched [`RING_FRAMES`] frames ago. Writing where the other process read the frame just
//! before costs far more when the two run on different CPUs: every cache line the writer
//! takes is first taken back from the reader's cache (a 64 KiB round trip between two threads
//! on two CPUs of this project's machine: about 20 µs of copying through one fixed buffer,
//! about 9 µs rotating through 1 MiB). A region holds at most [`MAX_REGION`] bytes; a larger
//! body goes into new shared memory of its own, as before. Its size is [`RING_FRAMES`] times its
//! first body, within [`ROUND`] and [`MAX_REGION`]; a body that does not fit makes a new region,
//! which the next frame announces.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use ipc_channel::ipc::IpcSharedMemory;

/// Bytes before a region's data: the receiver's release counter, alone on its cache line.
pub(crate) const HEADER: usize = 64;

/// The smallest body placed in a region: below it, the socket's copies cost less than the
/// region's bookkeeping.
pub(crate) const MIN_BODY: usize = 16 << 10;

/// The largest region a channel keeps (header included). Larger bodies use new shared memory
/// each; `SharedBuffer` is the way for large blobs. A receiver accepts shared memory up to this
/// much over its message limit: a region is sized for several bodies, each within the limit.
pub(crate) const MAX_REGION: usize = 2 << 20;

/// Region sizes are multiples of this.
pub(crate) const ROUND: usize = 64 << 10;

/// How many bodies of the size that made it a region holds, as a ring.
pub(crate) const RING_FRAMES: usize = 16;

/// Frames start at multiples of this in a region (a cache line).
const ALIGN: usize = 64;

/// A region mapped in this process.
struct Mapped {
    memory: IpcSharedMemory,
    /// The start of the mapping, from `IpcSharedMemory::deref_mut`, so that this process may
    /// write through it (the sender its data, the receiver its header).
    base: *mut u8,
    len: usize,
}

// SAFETY: `base` points into `memory`'s mapping, which moves with it; `IpcSharedMemory` is
// `Send`.
unsafe impl Send for Mapped {}

impl Mapped {
    /// A new, zeroed region of `len` bytes; `None` when shared memory cannot be made
    /// (`ipc-channel` panics then: out of descriptors or memory).
    fn new(len: usize) -> Option<Mapped> {
        // Its own descriptor, and the duplicate that announces it.
        if !crate::os::spare_descriptors(2) {
            return None;
        }
        // Quietly: in a worker, the panic hook would take it for the handler's panic.
        let memory = super::transport::quietly(|| IpcSharedMemory::from_byte(0, len))?;
        Mapped::of(memory)
    }

    /// The mapping of `memory`, when it can hold the header.
    fn of(mut memory: IpcSharedMemory) -> Option<Mapped> {
        let len = memory.len();
        if len < HEADER {
            return None;
        }
        // SAFETY: `memory` is owned here and not otherwise borrowed; the pointer is kept only
        // as long as `memory`.
        let base = unsafe { memory.deref_mut() }.as_mut_ptr();
        Some(Mapped { memory, base, len })
    }

    /// The receiver's release counter.
    fn released(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned and at least `HEADER` bytes long, and both
        // processes only ever access these 8 bytes atomically.
        unsafe { AtomicU64::from_ptr(self.base.cast::<u64>()) }
    }
}

/// The sending side's region of one channel.
pub(crate) struct Region {
    /// Held by one send at a time (a [`Claim`]).
    claimed: AtomicBool,
    outgoing: Mutex<Outgoing>,
}

#[derive(Default)]
struct Outgoing {
    mapped: Option<Mapped>,
    /// The receiver has the current mapping (a frame that carried it went out).
    announced: bool,
    /// The sequence number of the last frame placed in the region that went out.
    sent: u64,
    /// Where in the data (after the header) the next frame goes.
    next: usize,
    /// The sequence number of a frame placed by the current claim, and where its bytes end.
    written: Option<(u64, usize)>,
}

impl Region {
    pub(crate) fn new() -> Region {
        Region {
            claimed: AtomicBool::new(false),
            outgoing: Mutex::new(Outgoing::default()),
        }
    }

    fn outgoing(&self) -> MutexGuard<'_, Outgoing> {
        self.outgoing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The region, for one send: `None` when another send holds it, or the receiver has not
    /// released the last frame placed in it (then the frame goes through the socket).
    pub(crate) fn claim(&self) -> Option<Claim<'_>> {
        if self
            .claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // From here, dropping the claim gives the region back.
        let claim = Claim { region: self };
        let mut outgoing = self.outgoing();
        if let Some(mapped) = &outgoing.mapped {
            if mapped.released().load(Ordering::Acquire) != outgoing.sent {
                return None;
            }
        }
        outgoing.written = None;
        drop(outgoing);
        Some(claim)
    }
}

/// Where a frame was placed: its sequence number and its offset in the region's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) seq: u64,
    pub(crate) offset: usize,
}

/// The region held for one send; [`sent`](Self::sent) once the message went out.
pub(crate) struct Claim<'a> {
    region: &'a Region,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.region.claimed.store(false, Ordering::Release);
    }
}

impl Claim<'_> {
    /// The message went out: a frame placed in the region now belongs to the receiver until
    /// it releases it. (Dropped without this, the region stays free: nothing was sent.)
    pub(crate) fn sent(self) {
        let mut outgoing = self.region.outgoing();
        if let Some((seq, end)) = outgoing.written.take() {
            outgoing.sent = seq;
            outgoing.next = end.next_multiple_of(ALIGN);
            outgoing.announced = true;
        }
    }

    /// Places a body of `len` bytes, written by `write` into exactly that many bytes (`false`
    /// when it could not): its sequence number and its offset in the region's data, or `None`
    /// when the region cannot take it.
    pub(crate) fn place(
        &self,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> bool,
    ) -> Option<Placed> {
        let mut outgoing = self.region.outgoing();
        let need = HEADER.checked_add(len)?;
        if need > MAX_REGION {
            return None;
        }
        if outgoing.mapped.as_ref().is_none_or(|m| m.len < need) {
            let ring = len
                .next_multiple_of(ALIGN)
                .saturating_mul(RING_FRAMES)
                .saturating_add(HEADER);
            let size = ring.max(need).div_ceil(ROUND) * ROUND;
            outgoing.mapped = Some(Mapped::new(size.min(MAX_REGION))?);
            outgoing.announced = false;
            outgoing.sent = 0;
            outgoing.next = 0;
        }
        let mapped = outgoing.mapped.as_ref()?;
        // A frame that announces the region makes `ipc-channel` duplicate its descriptor: with
        // none to spare, the frame goes through the socket instead.
        if !outgoing.announced && !crate::os::spare_descriptors(1) {
            return None;
        }
        let room = mapped.len - HEADER;
        // After the last frame, or from the start when it would run past the end.
        let offset = match outgoing.next.checked_add(len) {
            Some(end) if end <= room => outgoing.next,
            _ => 0,
        };
        // SAFETY: `HEADER + offset + len` is within the mapping (`len <= room`, since
        // `need <= mapped.len`). The receiver released the last frame (checked by `claim`), so
        // an honest one reads none of the region now; nothing else in this process writes it
        // while the claim is held.
        let data = unsafe { std::slice::from_raw_parts_mut(mapped.base.add(HEADER + offset), len) };
        if !write(data) {
            return None;
        }
        let seq = outgoing.sent + 1;
        outgoing.written = Some((seq, offset + len));
        Some(Placed { seq, offset })
    }

    /// Calls `f` with the region's memory when the receiver does not have it yet (the frame
    /// carries it then), else with `None`.
    pub(crate) fn announce<R>(&self, f: impl FnOnce(Option<&IpcSharedMemory>) -> R) -> R {
        let outgoing = self.region.outgoing();
        let memory = match &outgoing.mapped {
            Some(mapped) if !outgoing.announced => Some(&mapped.memory),
            _ => None,
        };
        f(memory)
    }
}

/// The receiving side's mapping of a channel's region, as the sender last announced it.
#[derive(Default)]
pub(crate) struct Incoming {
    mapped: Option<Mapped>,
    /// The sender is not trusted (a worker, read by the app): frames are copied out before
    /// they are decoded (see [`take`]).
    copy_out: bool,
}

impl Incoming {
    /// For a receiver that does not trust the sender: the app reading a worker.
    pub(crate) fn untrusted() -> Incoming {
        Incoming {
            mapped: None,
            copy_out: true,
        }
    }
}

thread_local! {
    /// The region of the channel whose message this thread decodes (see [`with_incoming`]).
    static INCOMING: RefCell<Option<Incoming>> = const { RefCell::new(None) };
}

/// Runs `decode` with `incoming` as the region frames are read from.
pub(crate) fn with_incoming<T>(incoming: &mut Incoming, decode: impl FnOnce() -> T) -> T {
    /// Puts the mapping back even when `decode` panics (`ipc-channel` may).
    struct Restore<'a> {
        incoming: &'a mut Incoming,
        before: Option<Option<Incoming>>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let before = self.before.take().flatten();
            if let Some(after) = INCOMING.with(|slot| slot.replace(before)) {
                *self.incoming = after;
            }
        }
    }
    let before = INCOMING.with(|slot| slot.replace(Some(std::mem::take(incoming))));
    let _restore = Restore {
        incoming,
        before: Some(before),
    };
    decode()
}

thread_local! {
    /// Where an untrusted sender's frames are copied before they are decoded, kept between
    /// messages (up to [`MAX_REGION`]).
    static PRIVATE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `parse` on a private copy of `len` bytes at `from`, which another process may write
/// meanwhile: decoding checks bytes and then reads them again (a string's UTF-8, say), so it
/// must never see them change in between.
///
/// # Safety
///
/// `from..from + len` must be mapped and readable for the whole call.
pub(crate) unsafe fn parse_copy<T>(
    from: *const u8,
    len: usize,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, String> {
    let mut private = PRIVATE.with(|p| std::mem::take(&mut *p.borrow_mut()));
    private.clear();
    private.reserve(len);
    // SAFETY: `from..from + len` is readable (the caller's promise); `private` has room for
    // `len` bytes, which the copy initializes before `set_len`; the source is read through a
    // raw pointer, never as a reference to memory another process writes.
    unsafe {
        std::ptr::copy_nonoverlapping(from, private.as_mut_ptr(), len);
        private.set_len(len);
    }
    let parsed = parse(&private);
    if private.capacity() <= MAX_REGION {
        PRIVATE.with(|p| *p.borrow_mut() = private);
    }
    parsed
}

/// Decodes a frame the sender placed in its region: `parse` on its `len` bytes, after taking
/// `announced` as the region if the frame carries one; then releases the frame to the sender.
pub(crate) fn take<T>(
    announced: Option<IpcSharedMemory>,
    placed: Placed,
    len: usize,
    limit: usize,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, String> {
    let Placed { seq, offset } = placed;
    INCOMING.with(|slot| {
        let mut slot = slot.borrow_mut();
        let Some(incoming) = slot.as_mut() else {
            return Err("a frame in shared memory on a channel that keeps none".to_owned());
        };
        if let Some(memory) = announced {
            let size = memory.len();
            incoming.mapped = Some(Mapped::of(memory).ok_or_else(|| {
                format!("it announced shared memory of {size} bytes, too small for a region")
            })?);
        }
        let copy_out = incoming.copy_out;
        let Some(mapped) = &incoming.mapped else {
            return Err("a frame in shared memory it never sent".to_owned());
        };
        if len > limit {
            return Err(format!(
                "a message of {len} bytes, over the limit of {limit}"
            ));
        }
        if HEADER.saturating_add(offset).saturating_add(len) > mapped.len {
            return Err(format!(
                "a frame of {len} bytes at {offset} in shared memory of {} bytes",
                mapped.len
            ));
        }
        // SAFETY (both arms): `HEADER + offset + len` is within the mapping, checked above,
        // and the mapping lives as long as `incoming`.
        let from = unsafe { mapped.base.add(HEADER + offset) }.cast_const();
        if copy_out {
            // An untrusted sender may write the frame while it is decoded: decode a copy,
            // and hand the frame back as soon as it is copied.
            // SAFETY: see above.
            unsafe {
                parse_copy(from, len, |bytes| {
                    mapped.released().store(seq, Ordering::Release);
                    parse(bytes)
                })
            }
        } else {
            // A trusted sender (the app, read by a worker) wrote these bytes before it sent
            // the message and does not write them again until they are released below.
            // SAFETY: see above.
            let data = unsafe { std::slice::from_raw_parts(from, len) };
            let parsed = parse(data);
            mapped.released().store(seq, Ordering::Release);
            parsed
        }
    })
}

/// Whether the message this thread decodes comes from a sender it does not trust (see
/// [`Incoming::untrusted`]).
pub(crate) fn untrusted_sender() -> bool {
    INCOMING.with(|slot| slot.borrow().as_ref().is_some_and(|i| i.copy_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(byte: u8) -> impl FnOnce(&mut [u8]) -> bool {
        move |data| {
            data.fill(byte);
            true
        }
    }

    /// What the receiver does with a placed frame: its bytes.
    fn taken(incoming: &mut Incoming, memory: Option<IpcSharedMemory>, placed: Placed) -> Vec<u8> {
        with_incoming(incoming, || {
            take(memory, placed, MIN_BODY, usize::MAX, |d| Ok(d.to_vec()))
        })
        .expect("taken")
    }

    #[test]
    fn a_region_is_used_again_only_once_released() {
        let region = Region::new();
        let claim = region.claim().expect("a new region is free");
        let placed = claim.place(MIN_BODY, fill(7)).expect("placed");
        let memory = claim
            .announce(|m| m.cloned())
            .expect("the first frame announces");
        claim.sent();

        // Not released yet: the next send goes through the socket.
        assert!(region.claim().is_none());

        let mut incoming = Incoming::default();
        let got = taken(&mut incoming, Some(memory), placed);
        assert!(got.iter().all(|&b| b == 7));

        // Released: the same region again, not announced again, the next place in the ring.
        let claim = region.claim().expect("released");
        let next = claim.place(MIN_BODY, fill(9)).expect("placed");
        assert!(claim.announce(|m| m.is_none()));
        claim.sent();
        assert_eq!(next.seq, placed.seq + 1);
        assert_eq!(next.offset, MIN_BODY);
        let got = taken(&mut incoming, None, next);
        assert!(got.iter().all(|&b| b == 9));
    }

    #[test]
    fn frames_go_round_the_ring() {
        let region = Region::new();
        let mut incoming = Incoming::default();
        let mut offsets = Vec::new();
        for round in 0..(2 * RING_FRAMES + 8) {
            let byte = round as u8;
            let claim = region.claim().expect("released");
            let placed = claim.place(MIN_BODY, fill(byte)).expect("placed");
            let memory = claim.announce(|m| m.cloned());
            assert_eq!(
                memory.is_some(),
                round == 0,
                "only the first frame announces"
            );
            claim.sent();
            let got = taken(&mut incoming, memory, placed);
            assert!(got.iter().all(|&b| b == byte), "round {round}");
            offsets.push(placed.offset);
        }
        // Each frame after the last, back to the start when the next would not fit.
        let size = region.outgoing().mapped.as_ref().expect("mapped").len;
        let fits = (size - HEADER) / MIN_BODY;
        assert!(fits >= RING_FRAMES);
        let expected: Vec<usize> = (0..offsets.len()).map(|i| (i % fits) * MIN_BODY).collect();
        assert_eq!(offsets, expected);
    }

    #[test]
    fn a_send_that_did_not_go_out_leaves_the_region_free() {
        let region = Region::new();
        let claim = region.claim().expect("free");
        claim.place(MIN_BODY, fill(1)).expect("placed");
        drop(claim);
        let claim = region.claim().expect("still free");
        assert!(
            claim.announce(|m| m.is_some()),
            "not announced: nothing went out"
        );
        // Nor did the frame take a place in the ring.
        assert_eq!(claim.place(MIN_BODY, fill(2)).expect("placed").offset, 0);
    }

    #[test]
    fn a_larger_body_makes_a_new_region_and_too_large_a_body_none() {
        let region = Region::new();
        let claim = region.claim().expect("free");
        claim.place(MIN_BODY, fill(1)).expect("placed");
        claim.sent();
        // The receiver released it (by hand here).
        let size = {
            let outgoing = region.outgoing();
            let mapped = outgoing.mapped.as_ref().expect("mapped");
            mapped.released().store(outgoing.sent, Ordering::Release);
            mapped.len
        };
        assert_eq!(
            size,
            (MIN_BODY * RING_FRAMES + HEADER).div_ceil(ROUND) * ROUND
        );
        let claim = region.claim().expect("released");
        let big = MAX_REGION - HEADER;
        assert_eq!(
            claim
                .place(big, fill(2))
                .expect("placed in a new region")
                .offset,
            0
        );
        assert!(claim.announce(|m| m.is_some()), "a new region is announced");
        assert!(claim.place(big + 1, fill(3)).is_none());
    }

    #[test]
    fn an_untrusted_sender_s_frames_are_decoded_from_a_copy_and_released() {
        let region = Region::new();
        let mut incoming = Incoming::untrusted();
        for (round, byte) in [3u8, 4, 5].into_iter().enumerate() {
            let claim = region.claim().expect("released");
            let placed = claim.place(MIN_BODY, fill(byte)).expect("placed");
            let memory = claim.announce(|m| m.cloned());
            assert_eq!(memory.is_some(), round == 0);
            claim.sent();
            let (got, untrusted) = with_incoming(&mut incoming, || {
                let got = take(memory, placed, MIN_BODY, usize::MAX, |d| Ok(d.to_vec()));
                (got, untrusted_sender())
            });
            assert!(untrusted);
            assert!(got.expect("taken").iter().all(|&b| b == byte));
        }
    }

    #[test]
    fn a_panic_while_decoding_keeps_the_mapping() {
        let region = Region::new();
        let mut incoming = Incoming::untrusted();
        let claim = region.claim().expect("free");
        let placed = claim.place(MIN_BODY, fill(1)).expect("placed");
        let memory = claim.announce(|m| m.cloned());
        claim.sent();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_incoming(&mut incoming, || {
                let _ = take(memory, placed, MIN_BODY, usize::MAX, |_| Ok(()));
                panic!("a decoder that panics");
            })
        }));
        assert!(panicked.is_err());
        // The next frame, in the region the first one announced, is still read.
        let claim = region.claim().expect("released");
        let next = claim.place(MIN_BODY, fill(2)).expect("placed");
        claim.sent();
        assert!(taken(&mut incoming, None, next).iter().all(|&b| b == 2));
    }

    #[test]
    fn bad_region_frames_are_refused() {
        let mut incoming = Incoming::default();
        let parse = |d: &[u8]| Ok(d.len());
        with_incoming(&mut incoming, || {
            let at = |offset| Placed { seq: 1, offset };
            // No region yet.
            assert!(take(None, at(0), 10, usize::MAX, parse).is_err());
            // Too small to be one.
            let tiny = IpcSharedMemory::from_byte(0, 8);
            assert!(take(Some(tiny), at(0), 0, usize::MAX, parse).is_err());
            // Past its end (by its length or its offset), or over the limit.
            let memory = IpcSharedMemory::from_byte(0, ROUND);
            assert!(take(Some(memory), at(0), ROUND, usize::MAX, parse).is_err());
            assert!(take(None, at(ROUND - HEADER - 99), 100, usize::MAX, parse).is_err());
            assert!(take(None, at(usize::MAX), 100, usize::MAX, parse).is_err());
            assert!(take(None, at(0), 100, 99, parse).is_err());
            assert_eq!(
                take(None, at(ROUND - HEADER - 100), 100, 100, parse),
                Ok(100)
            );
        });
        // Outside a channel's decoding: refused, not kept.
        let at = Placed { seq: 1, offset: 0 };
        assert!(take(None, at, 10, usize::MAX, parse).is_err());
    }
}
