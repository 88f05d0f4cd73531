//! Parking: the mappings of sent [`SharedBuffer`](super::SharedBuffer)s, kept for a while in
//! case the buffer comes back.
//!
//! A received region arrives freshly mapped, and mapping its pages costs more than a pass over
//! its bytes (`MADV_POPULATE_WRITE` of 64 MiB takes longer than a `memcpy` of 64 MiB into
//! mapped memory), as does unmapping a populated mapping. A buffer that goes to a worker and
//! back would pay both on each side of each round trip. So a buffer that was sent is not
//! unmapped when it drops: its mapping is parked here under the buffer's token, and when a
//! buffer with that token arrives, it takes the parked mapping (same memory, same address,
//! pages already mapped) and the fresh mapping is dropped untouched (cheap).
//!
//! Who owns what: [`Parking`] owns the parked mappings and, while any are parked, one sweeper
//! thread (`bincrew-parked`) that unmaps those older than [`EXPIRY`] and those evicted by the
//! caps. The sweeper is started by the first park into an empty cache and exits once the cache
//! is empty, so an idle process has no such thread. Unmapping (milliseconds for a large
//! populated mapping) happens only on the sweeper, never on the thread that parks or takes.
//! Nothing here waits on another process; the one lock is held only to move entries in and out.
//!
//! The cache also counts the buffers serialized and not yet dropped (in flight), so that a
//! decoding that comes between a send and the sender's drop (the peer preempted the sender)
//! yields to that thread of its own process, a few times at most, instead of mapping anew.
//!
//! Why a token may be trusted this far: tokens are unguessable, so a peer can only name a token
//! it has seen, that is, a buffer it received, whose memory it could write anyway (it may keep
//! its descriptor). A forged or replayed token therefore gives it nothing new: at most, the
//! receiver gets back its own mapping of memory that peer already had, instead of the region the
//! message carried. A token is taken at most once, and the parked mapping keeps its own length
//! (the fresh region's is never trusted to match).

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipc_channel::ipc::IpcSharedMemory;

use crate::sync::lock;

/// How long a parked mapping waits for its buffer to come back. A request's round trip is
/// usually far shorter; one that takes longer is dominated by its work rather than by mapping
/// the buffer again (about 0.2 ms per MiB), so little is lost. It is also the longest that memory
/// the app (or worker) let go of stays mapped: short enough that dropped buffers are released
/// promptly.
pub(crate) const EXPIRY: Duration = Duration::from_secs(1);

/// At most this many parked mappings: each holds a descriptor, and this keeps them far below
/// the usual limit of 1024 descriptors per process. The oldest is evicted first.
pub(crate) const MAX_ENTRIES: usize = 64;

/// At most this many parked bytes. While a buffer is away, its parked mapping costs no memory
/// of its own (the peer holds the same pages); only memory the peer dropped is held by parking
/// alone, for up to [`EXPIRY`]. The oldest is evicted first; a buffer larger than this is never
/// parked.
pub(crate) const MAX_BYTES: usize = 1 << 30;

/// How many times a decoding yields to a thread of its own process that sent a buffer with the
/// token it decodes and has not dropped it yet (see [`Parking::take`]).
const YIELDS: usize = 16;

/// The caps of one cache: the constants above, smaller in unit tests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caps {
    pub(crate) expiry: Duration,
    pub(crate) entries: usize,
    pub(crate) bytes: usize,
}

/// The process's cache of parked mappings.
pub(crate) static PARKING: Parking = Parking::new(Caps {
    expiry: EXPIRY,
    entries: MAX_ENTRIES,
    bytes: MAX_BYTES,
});

/// A cache of parked mappings, with its sweeper.
pub(crate) struct Parking {
    caps: Caps,
    state: Mutex<ParkState>,
    /// Wakes the sweeper: something was evicted, or an earlier expiry is due.
    wake: Condvar,
}

struct ParkState {
    /// Parked mappings by token (a few dozen at most).
    entries: BTreeMap<u128, Parked>,
    /// The tokens by park sequence number, oldest first: the order of expiry and eviction.
    order: BTreeMap<u64, u128>,
    next_seq: u64,
    /// The sum of the parked mappings' lengths.
    bytes: usize,
    /// Mappings evicted by the caps or replaced, for the sweeper to unmap.
    evicted: Vec<IpcSharedMemory>,
    /// The tokens of buffers serialized and not yet dropped, with how many buffers each.
    in_flight: BTreeMap<u128, usize>,
    /// Whether the sweeper thread runs; cleared by the sweeper itself, under this lock, when it
    /// finds nothing left to do.
    sweeper: bool,
}

struct Parked {
    memory: IpcSharedMemory,
    seq: u64,
    since: Instant,
}

impl Parking {
    pub(crate) const fn new(caps: Caps) -> Self {
        Parking {
            caps,
            state: Mutex::new(ParkState {
                entries: BTreeMap::new(),
                order: BTreeMap::new(),
                next_seq: 0,
                bytes: 0,
                evicted: Vec::new(),
                in_flight: BTreeMap::new(),
                sweeper: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// A buffer with this token was serialized for the first time: it is in flight until it
    /// drops (and [`park`][Self::park] is called).
    pub(crate) fn sending(&self, token: u128) {
        *lock(&self.state).in_flight.entry(token).or_insert(0) += 1;
    }

    /// Parks the mapping of a sent buffer that drops, under its token. What cannot be parked
    /// (an empty or oversized region; everything, if no sweeper thread can be started to expire
    /// it) is dropped here.
    pub(crate) fn park(&'static self, token: u128, memory: IpcSharedMemory) {
        let len = memory.len();
        let mut state = lock(&self.state);
        if let Some(count) = state.in_flight.get_mut(&token) {
            *count -= 1;
            if *count == 0 {
                state.in_flight.remove(&token);
            }
        }
        if len == 0 || len > self.caps.bytes || self.caps.entries == 0 {
            drop(state);
            return;
        }
        let start_sweeper = !state.sweeper;
        state.sweeper = true;
        let seq = state.next_seq;
        state.next_seq += 1;
        if let Some(replaced) = state.remove(token) {
            // Two buffers with one token: a peer sent the same one twice. Keep the newer.
            state.evicted.push(replaced);
        }
        state.order.insert(seq, token);
        state.bytes += len;
        state.entries.insert(
            token,
            Parked {
                memory,
                seq,
                since: Instant::now(),
            },
        );
        while state.entries.len() > self.caps.entries || state.bytes > self.caps.bytes {
            let Some((_, oldest)) = state.order.first_key_value().map(|(s, t)| (*s, *t)) else {
                break;
            };
            if let Some(evicted) = state.remove(oldest) {
                state.evicted.push(evicted);
            }
        }
        let wake = !state.evicted.is_empty();
        drop(state);
        if start_sweeper {
            // Outside the lock; parks meanwhile see `sweeper` set and leave it to this one.
            let started = thread::Builder::new()
                .name("bincrew-parked".into())
                .spawn(move || self.sweep());
            if let Err(e) = started {
                tracing::debug!(error = %e, "cannot start the sweeper thread: nothing is parked");
                let mut state = lock(&self.state);
                state.sweeper = false;
                let evicted = std::mem::take(&mut state.evicted);
                let parked = std::mem::take(&mut state.entries);
                state.order.clear();
                state.bytes = 0;
                drop(state);
                drop((evicted, parked));
            }
        } else if wake {
            self.wake.notify_one();
        }
    }

    /// Takes the mapping parked under `token`, if any: at most once.
    ///
    /// When a buffer with this token is in flight (serialized here and not yet dropped), its
    /// sending thread is between its send and its drop: the peer answered before it could drop
    /// the buffer, as happens when the peer shares its CPU and preempts it. This thread then
    /// yields to it, a few times at most, rather than map the buffer anew. It waits on no other
    /// process, and a buffer that stays in flight (serialized by hand and kept) costs a decoding
    /// [`YIELDS`] yields, no more.
    pub(crate) fn take(&self, token: u128) -> Option<IpcSharedMemory> {
        for _ in 0..YIELDS {
            let mut state = lock(&self.state);
            if let Some(memory) = state.remove(token) {
                return Some(memory);
            }
            if !state.in_flight.contains_key(&token) {
                return None;
            }
            drop(state);
            thread::yield_now();
        }
        lock(&self.state).remove(token)
    }

    /// The sweeper thread: unmaps what expired or was evicted, and exits once nothing is
    /// parked.
    fn sweep(&self) {
        let mut state = lock(&self.state);
        loop {
            let now = Instant::now();
            let mut unmap = std::mem::take(&mut state.evicted);
            let mut next_expiry = None;
            while let Some((_, token)) = state.order.first_key_value().map(|(s, t)| (*s, *t)) {
                let since = state.entries.get(&token).map(|p| p.since);
                match since {
                    Some(since) if now < since + self.caps.expiry => {
                        next_expiry = Some(since + self.caps.expiry);
                        break;
                    }
                    _ => unmap.extend(state.remove(token)),
                }
            }
            if !unmap.is_empty() {
                // Unmapping a large populated mapping takes milliseconds: outside the lock.
                drop(state);
                drop(unmap);
                state = lock(&self.state);
                continue;
            }
            let Some(next_expiry) = next_expiry else {
                // Nothing parked, nothing to unmap: under the same lock, the next park sees
                // the sweeper gone and starts another.
                state.sweeper = false;
                return;
            };
            state = self
                .wake
                .wait_timeout(state, next_expiry.saturating_duration_since(now))
                .map_or_else(|e| e.into_inner().0, |(state, _)| state);
        }
    }

    #[cfg(test)]
    fn parked(&self) -> (usize, usize, bool) {
        let state = lock(&self.state);
        (state.entries.len(), state.bytes, state.sweeper)
    }
}

impl ParkState {
    fn remove(&mut self, token: u128) -> Option<IpcSharedMemory> {
        let parked = self.entries.remove(&token)?;
        self.order.remove(&parked.seq);
        self.bytes -= parked.memory.len();
        Some(parked.memory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parking(caps: Caps) -> &'static Parking {
        Box::leak(Box::new(Parking::new(caps)))
    }

    const LONG: Duration = Duration::from_secs(3600);

    fn region(byte: u8, len: usize) -> IpcSharedMemory {
        IpcSharedMemory::from_byte(byte, len)
    }

    #[test]
    fn a_parked_mapping_is_taken_once_by_its_token_with_its_own_address_and_length() {
        let parking = parking(Caps {
            expiry: LONG,
            entries: 8,
            bytes: 1 << 20,
        });
        let memory = region(7, 4096);
        let address = memory.as_ptr();
        parking.park(1, memory);
        assert!(parking.take(2).is_none(), "an unknown token takes nothing");
        let taken = parking.take(1).expect("parked");
        assert_eq!((taken.as_ptr(), taken.len(), taken[0]), (address, 4096, 7));
        assert!(parking.take(1).is_none(), "a token is used at most once");
        assert_eq!(parking.parked().0, 0);
    }

    #[test]
    fn the_caps_evict_the_oldest_and_oversized_regions_are_not_parked() {
        let parking = parking(Caps {
            expiry: LONG,
            entries: 2,
            bytes: 3 * 4096,
        });
        parking.park(1, region(1, 4096));
        parking.park(2, region(2, 4096));
        parking.park(3, region(3, 4096));
        assert!(
            parking.take(1).is_none(),
            "the oldest was evicted by the entry cap"
        );
        assert_eq!(parking.parked().0, 2);
        parking.park(4, region(4, 2 * 4096));
        // 2, 3 and 4 hold 4 pages: over the byte cap, 2 goes.
        assert!(
            parking.take(2).is_none(),
            "the oldest was evicted by the byte cap"
        );
        assert_eq!(parking.parked().1, 3 * 4096);
        parking.park(5, region(5, 4 * 4096));
        assert!(
            parking.take(5).is_none(),
            "larger than the byte cap: not parked"
        );
        assert_eq!(parking.take(3).map(|m| m[0]), Some(3));
        assert_eq!(parking.take(4).map(|m| m[0]), Some(4));
    }

    #[test]
    fn a_token_in_flight_is_waited_for_a_few_yields_only() {
        let parking = parking(Caps {
            expiry: LONG,
            entries: 8,
            bytes: 1 << 20,
        });
        parking.sending(4);
        // Its buffer is never dropped: the decoding gives up.
        assert!(parking.take(4).is_none());
        // Dropped (on another thread) before the decoding: taken, and no longer in flight.
        parking.sending(5);
        let memory = region(5, 4096);
        let address = memory.as_ptr() as usize;
        let dropper = thread::spawn(move || parking.park(5, memory));
        dropper.join().expect("parks");
        let taken = parking.take(5).expect("parked");
        assert_eq!(taken.as_ptr() as usize, address);
        assert!(!lock(&parking.state).in_flight.contains_key(&5));
    }

    #[test]
    fn a_token_parked_twice_keeps_the_newer_mapping() {
        let parking = parking(Caps {
            expiry: LONG,
            entries: 8,
            bytes: 1 << 20,
        });
        parking.park(9, region(1, 4096));
        parking.park(9, region(2, 4096));
        assert_eq!(parking.parked().0, 1);
        assert_eq!(parking.take(9).map(|m| m[0]), Some(2));
        assert!(parking.take(9).is_none());
    }

    #[test]
    fn expired_mappings_are_unmapped_and_the_sweeper_then_exits() {
        let parking = parking(Caps {
            expiry: Duration::ZERO,
            entries: 8,
            bytes: 1 << 20,
        });
        parking.park(1, region(1, 4096));
        // Polled with a generous bound: whenever the sweeper runs, it finds the entry expired.
        let deadline = Instant::now() + Duration::from_secs(30);
        while parking.parked() != (0, 0, false) {
            assert!(
                Instant::now() < deadline,
                "never swept: {:?}",
                parking.parked()
            );
            thread::sleep(Duration::from_millis(10));
        }
        assert!(parking.take(1).is_none());
        // A later park starts a new sweeper.
        parking.park(2, region(2, 4096));
        while parking.parked() != (0, 0, false) {
            assert!(
                Instant::now() < deadline,
                "never swept: {:?}",
                parking.parked()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}
