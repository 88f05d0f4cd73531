//! [`SharedBuffer`]: shared memory the app writes into directly and moves to a worker.

use std::fmt;
use std::ops::{Deref, DerefMut};

use ipc_channel::ipc::IpcSharedMemory;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
/// A received buffer is mapped anew; on Linux its pages are mapped in one call when it arrives
/// (`MADV_POPULATE_WRITE`), rather than by a page fault at the first touch of each page.
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
pub struct SharedBuffer {
    memory: IpcSharedMemory,
}

impl SharedBuffer {
    /// A zeroed buffer of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        SharedBuffer {
            memory: IpcSharedMemory::from_byte(0, len),
        }
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        SharedBuffer {
            memory: IpcSharedMemory::from_bytes(bytes),
        }
    }

    /// The buffer as read-only shared memory (for APIs that take [`IpcSharedMemory`]).
    pub fn into_shared_memory(self) -> IpcSharedMemory {
        self.memory
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
        // sender gave up its value when it sent it.
        unsafe { self.memory.deref_mut() }
    }
}

impl Serialize for SharedBuffer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.memory.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedBuffer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut buffer = SharedBuffer {
            memory: IpcSharedMemory::deserialize(deserializer)?,
        };
        // The memory arrives freshly mapped: map every page now, in one call, rather than
        // through one page fault per page as the buffer is used.
        crate::os::prefault(&mut buffer);
        Ok(buffer)
    }
}

impl Clone for SharedBuffer {
    /// Copies the bytes into new shared memory.
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
