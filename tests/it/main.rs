//! Integration tests: real worker processes, crashed for real.

mod answers;
mod bad_input;
mod basics;
mod build_support;
mod channels;
mod containment;
mod crash;
mod deploy;
mod executors;
mod fixture;
mod frozen;
mod handshake;
mod isolation;
mod locate;
mod observe;
mod selfspawn;
#[cfg(target_os = "linux")]
mod shared_buffer;
mod supervision;
mod support;
mod wire;
