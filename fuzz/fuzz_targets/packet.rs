#![no_main]
//! The app's check of a packet from a worker before `ipc-channel` reads it (`check_packet` in
//! `src/os/linux_socket.rs`, through `fuzz::packet`): the whole input is one packet of the
//! socket (16-byte header: the fragment's size and the message's total data size, each a native
//! `usize`; then the data), carrying no descriptors, checked against a limit of 1 MiB.
//!
//! It must return `Ok` or `Err`, never panic. The target also checks the verdict against what a
//! packet without descriptors can be, so that the check neither lets through a packet that
//! `ipc-channel` would wait on or allocate for, nor refuses a small well-formed one:
//! - `Ok` for a non-empty packet means one whole message in one fragment: at least a header, the
//!   fragment size equal to the packet's length, the total equal to the data it holds (bincrew
//!   never sends a message in fragments, and refuses one), within the limit;
//! - every such packet with at most 1024 bytes of data is accepted (bincrew sends inline frames of
//!   up to at least 1024 bytes, so a message that small must get through), and so is the empty
//!   packet (the end of the channel).

use libfuzzer_sys::fuzz_target;

const WORD: usize = std::mem::size_of::<usize>();
const HEADER: usize = 2 * WORD;
/// The limit `fuzz::packet` checks against.
const LIMIT: usize = 1 << 20;

fn word(data: &[u8], at: usize) -> usize {
    let mut bytes = [0u8; WORD];
    bytes.copy_from_slice(&data[at..at + WORD]);
    usize::from_ne_bytes(bytes)
}

fuzz_target!(|data: &[u8]| {
    let verdict = bincrew::__private::fuzz::packet(data);
    let whole = data.len() >= HEADER
        && word(data, 0) == data.len()
        && word(data, WORD) == data.len() - HEADER
        && word(data, WORD) <= LIMIT;
    if let Err(reason) = &verdict {
        assert!(
            !data.is_empty() && !(whole && data.len() - HEADER <= 1024),
            "a well-formed packet of {} bytes was refused: {reason}",
            data.len()
        );
        assert!(!reason.is_empty(), "a refusal without a reason");
    } else {
        assert!(
            data.is_empty() || whole,
            "a packet of {} bytes that is not one whole fragment was accepted",
            data.len()
        );
    }
});
