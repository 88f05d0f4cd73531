//! A large blob in a `SharedBuffer`: written in place by the app, changed in place by the worker,
//! and handed back, with no copy of the bytes on either side.
//!
//! ```sh
//! cargo run --example shared_buffer
//! ```
//!
//! Small byte fields travel inside the message: mark them `#[serde(with = "serde_bytes")]` so
//! they are copied as one block. For blobs of megabytes that the app fills itself, a
//! `SharedBuffer` is shared memory that moves to the worker with the request (and back with the
//! response) instead of being copied into the message.

use bincrew::{RequestArgs, SharedBuffer, Worker};
use serde::{Deserialize, Serialize};

const INVERT: &str = "invert";

/// A grey-scale image, one byte per pixel.
#[derive(Debug, Serialize, Deserialize)]
struct Image {
    width: usize,
    height: usize,
    pixels: SharedBuffer,
}

/// The handler, in the worker process: inverts the image in place and sends the same memory back.
fn invert(args: RequestArgs<Image>) -> Image {
    let mut image = args.request;
    // `SharedBuffer` dereferences to `&mut [u8]`: the worker writes straight into the memory the
    // app filled. Only one process holds it at a time: the app gave it up when it sent it.
    for pixel in image.pixels.iter_mut() {
        *pixel = 255 - *pixel;
    }
    image
}

/// The app's pixel at `(x, y)`: a pattern that is easy to check.
fn pattern(x: usize, y: usize) -> u8 {
    ((x + 3 * y) % 256) as u8
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    bincrew::init!();
    bincrew::run_worker_blocking(INVERT, invert);

    let worker = Worker::<Image, Image>::start_blocking(INVERT)?;

    // 16 MiB of shared memory, written in place: no `Vec` to copy from.
    let (width, height) = (4096, 4096);
    let mut pixels = SharedBuffer::zeroed(width * height);
    for (y, row) in pixels.chunks_mut(width).enumerate() {
        for (x, pixel) in row.iter_mut().enumerate() {
            *pixel = pattern(x, y);
        }
    }
    println!(
        "sending a {width}x{height} image ({} MiB) in a SharedBuffer",
        pixels.len() >> 20
    );

    // The buffer moves into the request, and comes back in the response.
    let image = worker.run_blocking(Image {
        width,
        height,
        pixels,
    })?;

    assert_eq!((image.width, image.height), (width, height));
    assert_eq!(image.pixels.len(), width * height);
    for (y, row) in image.pixels.chunks(width).enumerate() {
        for (x, pixel) in row.iter().enumerate() {
            assert_eq!(*pixel, 255 - pattern(x, y), "pixel ({x}, {y})");
        }
    }
    println!("every pixel came back inverted");

    worker.shutdown_blocking()?;
    Ok(())
}
