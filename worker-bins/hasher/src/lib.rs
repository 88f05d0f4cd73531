//! The requests and responses of the `hasher` worker, shared by the worker binary and its apps.

use std::path::PathBuf;

use bincrew::{IpcSender, IpcSharedMemory};
use serde::{Deserialize, Serialize};

/// The worker's name.
pub const WORKER: &str = "hasher";

/// What to hash.
#[derive(Debug, Serialize, Deserialize)]
pub enum HashRequest {
    /// A file, read in chunks; the number of bytes read so far is sent to `progress` as it goes.
    File {
        /// The file.
        path: PathBuf,
        /// Receives the running byte count.
        progress: Option<IpcSender<u64>>,
    },
    /// A blob in shared memory.
    Blob(IpcSharedMemory),
}

/// A digest: the FNV-1a 64 hash and the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// The number of bytes hashed.
    pub len: u64,
    /// The FNV-1a 64 hash.
    pub fnv1a: u64,
}

/// The answer: a digest, or why the input could not be read.
pub type HashResponse = Result<Digest, String>;

/// FNV-1a 64, fed in chunks.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// Hashes bytes in one go.
pub fn digest(bytes: &[u8]) -> Digest {
    let mut h = Fnv1a::default();
    h.update(bytes);
    Digest {
        len: bytes.len() as u64,
        fnv1a: h.finish(),
    }
}
