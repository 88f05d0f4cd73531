//! Integration tests: real worker processes, crashed for real.

mod basics;
mod build_support;
mod channels;
mod crash;
mod executors;
mod fixture;
mod handshake;
mod selfspawn;
mod support;
