//! Integration tests: real worker processes, crashed for real.

mod basics;
mod channels;
mod crash;
mod executors;
mod handshake;
mod selfspawn;
mod support;
