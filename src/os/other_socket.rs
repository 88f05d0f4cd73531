//! Elsewhere: no access to the socket: no checks, and sends always go through a writer thread.
use std::time::Duration;

pub(crate) enum Direction {
    Read,
    Write,
}

pub(crate) fn inline_max() -> usize {
    32 * 1024
}

pub(crate) fn is_peer_socket(_fd: i32, _peer: u32) -> bool {
    false
}

pub(crate) fn set_nonblocking(_fd: i32) -> bool {
    false
}

pub(crate) fn wait(_fd: i32, _direction: Direction, _timeout: Option<Duration>) -> bool {
    true
}

/// What `read_packet` read (never called here: no socket is ever found).
pub(crate) enum Packet {
    End,
    Data { len: usize },
    Passed { channels: usize },
    Empty,
}

pub(crate) const PACKET_HEADER: usize = 16;

pub(crate) fn packet_buffer_len() -> usize {
    PACKET_HEADER
}

pub(crate) fn read_packet(
    _fd: i32,
    _buffer: &mut [std::mem::MaybeUninit<u8>],
    _limit: usize,
    _reinject: &mut dyn FnMut() -> Option<i32>,
    _wait: bool,
) -> Result<Packet, String> {
    Ok(Packet::End)
}

pub(crate) fn check_packet_bytes(_packet: &[u8], _limit: usize) -> Result<(), String> {
    Ok(())
}

/// No epoll here: a worker hands reading to another thread for every request instead.
pub(crate) struct Watch;

pub(crate) struct Readable {
    pub(crate) control: bool,
    pub(crate) requests: bool,
    pub(crate) notified: bool,
    pub(crate) deadline: bool,
}

impl Watch {
    pub(crate) fn new(_control: i32, _requests: i32) -> Option<Watch> {
        None
    }

    pub(crate) fn arm(&self) {}

    pub(crate) fn disarm(&self) {}

    pub(crate) fn notify(&self) {}

    pub(crate) fn start_deadline(&self, _after: Duration) {}

    pub(crate) fn wait(&self) -> Readable {
        Readable {
            control: true,
            requests: false,
            notified: true,
            deadline: true,
        }
    }
}

/// A descriptor that tells a process's exit: none here.
pub(crate) enum ExitFd {}

/// Wakes the app's reader thread: it waits on a condition variable here instead.
pub(crate) struct Doorbell;

impl Doorbell {
    pub(crate) fn new() -> Option<Doorbell> {
        None
    }

    pub(crate) fn ring(&self) {}

    pub(crate) fn wait(&self, _exit: Option<&ExitFd>) -> bool {
        false
    }
}
