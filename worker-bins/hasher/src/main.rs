//! A dedicated worker binary: hashes files and blobs for its app. Reading files is where bad
//! disks, network mounts and huge inputs bite; here they cannot take the app down.

use std::io::Read;

use bincrew::RequestArgs;
use hasher::{Digest, Fnv1a, HashRequest, HashResponse, WORKER};

fn hash(args: RequestArgs<HashRequest>) -> HashResponse {
    match args.request {
        HashRequest::Blob(blob) => Ok(hasher::digest(&blob)),
        HashRequest::File { path, progress } => {
            let mut file = std::fs::File::open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let mut hasher = Fnv1a::default();
            let mut len = 0u64;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = file
                    .read(&mut chunk)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if n == 0 {
                    break;
                }
                hasher.update(&chunk[..n]);
                len += n as u64;
                if let Some(progress) = &progress {
                    // The app may have stopped listening; the hash goes on.
                    let _ = progress.send(len);
                }
            }
            Ok(Digest {
                len,
                fnv1a: hasher.finish(),
            })
        }
    }
}

fn main() {
    bincrew::init!();
    bincrew::Workers::new()
        .blocking_worker(WORKER, hash)
        .run_dedicated();
}
