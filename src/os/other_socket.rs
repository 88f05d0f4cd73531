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

pub(crate) fn check_next(_fd: i32, _limit: usize) -> Result<usize, String> {
    Ok(0)
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
