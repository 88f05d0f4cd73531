//! Linux: bincrew's view of `ipc-channel`'s sequenced-packet sockets (see `transport.rs`).

use std::sync::OnceLock;
use std::time::Duration;

pub(crate) enum Direction {
    Read,
    Write,
}

/// Bytes `ipc-channel` puts before a message's data in its first fragment: the fragment's size
/// and the message's total size, each a `usize`.
const HEADER: usize = 2 * std::mem::size_of::<usize>();
/// The most descriptors one message carries (`ipc-channel`'s `MAX_FDS_IN_CMSG`).
const MAX_FDS: usize = 64;

/// The most data one fragment carries, as `ipc-channel` computes it from a fresh socket's send
/// buffer: its receive buffer has this size, and a longer packet would be split across reads.
fn max_fragment() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        let sndbuf = send_buffer().unwrap_or(212_992);
        // SAFETY: CMSG_SPACE is a pure computation.
        let reserved = unsafe { libc::CMSG_SPACE((MAX_FDS * 8) as u32) } as usize;
        (sndbuf.saturating_sub(reserved + HEADER)) & !7
    })
}

/// The send buffer size of a fresh sequenced-packet socket pair.
fn send_buffer() -> Option<usize> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into `fds`, which are closed below.
    unsafe {
        if libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        ) != 0
        {
            return None;
        }
        let size = int_option(fds[0], libc::SO_SNDBUF);
        libc::close(fds[0]);
        libc::close(fds[1]);
        usize::try_from(size?).ok()
    }
}

pub(crate) fn inline_max() -> usize {
    // Room for the frame's own header (a kind byte and a length).
    max_fragment().saturating_sub(64).max(1024)
}

/// An `int` socket option.
fn int_option(fd: i32, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (result == 0).then_some(value)
}

fn file_mode(fd: i32) -> Option<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` when it returns 0.
    unsafe { (libc::fstat(fd, st.as_mut_ptr()) == 0).then(|| st.assume_init()) }
}

pub(crate) fn is_peer_socket(fd: i32, peer: u32) -> bool {
    // `SO_TYPE` fails with `ENOTSOCK` on anything but a socket: no `fstat` is needed.
    if int_option(fd, libc::SO_TYPE) != Some(libc::SOCK_SEQPACKET) {
        return false;
    }
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    result == 0 && u32::try_from(cred.pid).ok() == Some(peer)
}

pub(crate) fn set_nonblocking(fd: i32) -> bool {
    // SAFETY: fcntl on a descriptor of a socket this process holds.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    }
}

/// Waits until `fd` is ready in `direction` (or has failed or ended); `false` on timeout or
/// interruption.
pub(crate) fn wait(fd: i32, direction: Direction, timeout: Option<Duration>) -> bool {
    let events = match direction {
        Direction::Read => libc::POLLIN,
        Direction::Write => libc::POLLOUT,
    };
    let mut pollfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| {
        // Round up, so that a short wait does not become a busy loop.
        libc::c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
    });
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pollfd, 1, ms) };
    ready > 0
}

/// One `recvmsg` of the next packet on `fd` into `buffer` (`len` bytes at `buffer`), with
/// `flags` added to `MSG_TRUNC | MSG_CMSG_CLOEXEC`, retried when interrupted: the packet's full
/// length (even past `len`), the message flags, and the descriptors it carried (now owned by
/// the caller).
fn recv_packet(
    fd: i32,
    buffer: *mut u8,
    len: usize,
    flags: libc::c_int,
) -> std::io::Result<(usize, libc::c_int, Vec<i32>)> {
    // Aligned for `cmsghdr`.
    let mut control = [0u64; 80];
    loop {
        let mut iov = libc::iovec {
            iov_base: buffer.cast(),
            iov_len: len,
        };
        // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: recvmsg writes at most `len` bytes at `buffer` (the caller's) and the control
        // data into `control`; MSG_TRUNC returns the packet's full length.
        let n = unsafe {
            libc::recvmsg(
                fd,
                &mut msg,
                libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC | flags,
            )
        };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        return Ok((n as usize, msg.msg_flags, received_fds(&msg)));
    }
}

/// A descriptor that becomes readable when a process exits (its pidfd).
pub(crate) type ExitFd = std::os::fd::OwnedFd;

/// What the app's reader thread waits on while it does not read: an eventfd that other threads
/// ring when it should look again, and the worker's pidfd, readable once the worker exited.
pub(crate) struct Doorbell {
    fd: std::os::fd::OwnedFd,
}

impl Doorbell {
    pub(crate) fn new() -> Option<Doorbell> {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        // SAFETY: `fd` was just created and is owned here alone.
        (fd >= 0).then(|| Doorbell {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Wakes the thread in [`Doorbell::wait`], or makes its next wait return at once.
    pub(crate) fn ring(&self) {
        use std::os::fd::AsRawFd;
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one` to an eventfd of ours; it never blocks (non-blocking,
        // and the counter cannot overflow from rings).
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Waits until the bell rang or `exit` became readable; `true` when `exit` is readable.
    pub(crate) fn wait(&self, exit: Option<&ExitFd>) -> bool {
        use std::os::fd::AsRawFd;
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: exit.map_or(-1, AsRawFd::as_raw_fd),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: two valid pollfds (a negative fd is ignored by poll).
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if ready > 0 {
                break;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // Nothing sensible to wait on: look again, as if rung.
                return false;
            }
        }
        if fds[0].revents != 0 {
            let mut count: u64 = 0;
            // SAFETY: reads 8 bytes into `count` from an eventfd of ours, without blocking.
            unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        }
        fds[1].revents != 0
    }
}

/// What [`read_packet`] read.
pub(crate) enum Packet {
    /// The channel ended.
    End,
    /// A packet without descriptors: its data is `buffer[HEADER..HEADER + len]`.
    Data { len: usize },
    /// A packet with descriptors, sent on as it came through the re-injection socket for
    /// `ipc-channel` to read there; it carries `channels` channels.
    Passed { channels: usize },
    /// Nothing to read yet (only when not waiting).
    Empty,
}

/// The bytes before a packet's data in [`read_packet`]'s buffer.
pub(crate) const PACKET_HEADER: usize = HEADER;

/// The size of the buffer [`read_packet`] needs.
pub(crate) fn packet_buffer_len() -> usize {
    max_fragment() + HEADER
}

/// Reads the next packet from `fd` (waiting for one) into `buffer`, and checks it as
/// `ipc-channel` would need. A packet without descriptors stays in `buffer` for the caller to decode:
/// one system call, where a peek and `ipc-channel`'s own read take two. A packet with
/// descriptors is sent unchanged, descriptors included, through `reinject` (the sending end of
/// a channel of this process whose receiving end `ipc-channel` then reads). `Err` says why the
/// packet is refused, or why reading failed.
pub(crate) fn read_packet(
    fd: i32,
    buffer: &mut [std::mem::MaybeUninit<u8>],
    limit: usize,
    reinject: &mut dyn FnMut() -> Option<i32>,
    wait: bool,
) -> Result<Packet, String> {
    let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
    let (n, msg_flags, fds) = match recv_packet(fd, buffer.as_mut_ptr().cast(), buffer.len(), flags)
    {
        Ok(received) => received,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(Packet::Empty),
        Err(error) if error.raw_os_error() == Some(libc::ECONNRESET) => return Ok(Packet::End),
        Err(error) => return Err(format!("reading its channel failed: {error}")),
    };
    if n == 0 {
        return Ok(Packet::End);
    }
    // SAFETY: recvmsg wrote the packet's first `min(n, buffer.len())` bytes.
    let received =
        unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), n.min(buffer.len())) };
    let mut header = [0u8; HEADER];
    let copied = received.len().min(HEADER);
    header[..copied].copy_from_slice(&received[..copied]);
    let verdict = if n > buffer.len() {
        Err(format!(
            "it sent a packet of {n} bytes, more than a channel carries at once"
        ))
    } else {
        check_packet(&header, n, msg_flags, &fds, limit)
    };
    if let Err(reason) = verdict {
        close_all(&fds);
        return Err(reason);
    }
    if fds.is_empty() {
        return Ok(Packet::Data { len: n - HEADER });
    }
    let channels = fds.iter().filter(|&&fd| is_socket(fd)).count();
    let passed = match reinject() {
        Some(reinject) => send_packet(reinject, received, &fds),
        None => Err(std::io::Error::other("no channel to pass it on")),
    };
    // The message in flight holds its own references to the descriptors.
    close_all(&fds);
    passed
        .map(|()| Packet::Passed { channels })
        .map_err(|e| format!("passing on a message with channels failed: {e}"))
}

fn close_all(fds: &[i32]) {
    for &fd in fds {
        // SAFETY: these descriptors were just received and are owned here.
        unsafe { libc::close(fd) };
    }
}

/// Sends `packet` with `fds` as one packet on `fd`.
fn send_packet(fd: i32, packet: &[u8], fds: &[i32]) -> std::io::Result<()> {
    let mut control = [0u64; 80];
    let payload = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    if space > std::mem::size_of_val(&control) {
        return Err(std::io::Error::other("too many descriptors"));
    }
    let mut iov = libc::iovec {
        iov_base: packet.as_ptr() as *mut libc::c_void,
        iov_len: packet.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call, and the
    // control buffer has room for one SCM_RIGHTS message of `fds` (checked above).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), payload);
        loop {
            if libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) >= 0 {
                return Ok(());
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

fn is_socket(fd: i32) -> bool {
    // SAFETY: fstat writes into a zeroed stat buffer for a descriptor this process holds.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut st) } == 0) && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
}

/// The descriptors in a received message's control data.
fn received_fds(msg: &libc::msghdr) -> Vec<i32> {
    let mut fds = Vec::new();
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
    // `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<i32>() {
                    fds.push(std::ptr::read_unaligned(data.cast::<i32>().add(i)));
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    fds
}

/// [`check_packet`] on a whole packet held in memory, carrying no descriptors (for fuzzing).
pub(crate) fn check_packet_bytes(packet: &[u8], limit: usize) -> Result<(), String> {
    let mut header = [0u8; HEADER];
    let n = packet.len().min(HEADER);
    header[..n].copy_from_slice(&packet[..n]);
    check_packet(&header, packet.len(), 0, &[], limit)
}

/// Whether `ipc-channel` can read a packet of `len` bytes starting with `header`, carrying
/// `fds`, without allocating past `limit`, waiting for a packet that never comes, or panicking.
fn check_packet(
    header: &[u8; HEADER],
    len: usize,
    flags: libc::c_int,
    fds: &[i32],
    limit: usize,
) -> Result<(), String> {
    if len == 0 {
        // The end of the channel.
        return Ok(());
    }
    if flags & libc::MSG_CTRUNC != 0 {
        return Err(format!(
            "it sent a message with more than {MAX_FDS} channels and shared-memory regions"
        ));
    }
    if len < HEADER {
        return Err(format!(
            "it sent a message of {len} bytes, shorter than its header"
        ));
    }
    let word = |at: usize| {
        let mut bytes = [0u8; std::mem::size_of::<usize>()];
        let n = bytes.len();
        bytes.copy_from_slice(&header[at..at + n]);
        usize::from_ne_bytes(bytes)
    };
    let (fragment, total) = (word(0), word(std::mem::size_of::<usize>()));
    let data = len - HEADER;
    if fragment != len {
        return Err(format!(
            "it sent a message whose header gives its size as {fragment} bytes, but it has {len}"
        ));
    }
    if data > max_fragment() {
        return Err(format!(
            "it sent a packet of {len} bytes, more than a channel carries at once"
        ));
    }
    if total < data {
        return Err(format!(
            "it sent a message whose header gives its total size as {total} bytes, less than the {data} it holds"
        ));
    }
    if total > limit {
        return Err(format!(
            "it sent a message whose header claims {total} bytes, over the limit of {limit}"
        ));
    }
    // bincrew sends large messages in shared memory, never in fragments: the rest of a
    // fragmented message comes through a second channel that `ipc-channel` reads blocking, so a
    // worker that stops half-way would hold the reader.
    if total > data {
        return Err(format!(
            "it sent a message of {total} bytes in fragments, which a bincrew worker never does"
        ));
    }
    for &fd in fds {
        let Some(st) = file_mode(fd) else {
            return Err("it sent a descriptor that cannot be examined".into());
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFSOCK => {}
            libc::S_IFREG => {
                let size = usize::try_from(st.st_size).unwrap_or(usize::MAX);
                // A region holds several bodies (see `wire::region`); each is checked against
                // `limit` when its frame is decoded.
                if size > limit.saturating_add(crate::wire::region::MAX_REGION) {
                    return Err(format!(
                        "it sent shared memory of {size} bytes, over the limit of {limit}"
                    ));
                }
                // SAFETY: fcntl on a descriptor owned here.
                let mode = unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_ACCMODE;
                if size > 0 && mode != libc::O_RDWR {
                    return Err("it sent shared memory that cannot be mapped for writing".into());
                }
            }
            _ => {
                return Err(
                    "it sent a descriptor that is neither a channel nor shared memory".into(),
                )
            }
        }
    }
    Ok(())
}

/// An epoll set that watches a control socket always, and a request socket only while armed
/// (one-shot): a worker's control thread learns that requests wait while no handler thread reads
/// them, without any thread having to wake another for every request. A one-shot timer in the
/// same set gives that thread a deadline ([`start_deadline`](Self::start_deadline)): the
/// worker's outbox uses it to bound how long answers are held.
pub(crate) struct Watch {
    epoll: std::os::fd::OwnedFd,
    requests: i32,
    /// Written by [`notify`](Self::notify), to wake the waiting thread for something else.
    event: std::os::fd::OwnedFd,
    /// A `timerfd` (monotonic clock), readable once the deadline passed; never cancelled.
    timer: std::os::fd::OwnedFd,
}

/// What became readable.
pub(crate) struct Readable {
    pub(crate) control: bool,
    pub(crate) requests: bool,
    /// [`Watch::notify`] was called.
    pub(crate) notified: bool,
    /// The deadline set by [`Watch::start_deadline`] passed.
    pub(crate) deadline: bool,
}

const CONTROL_TOKEN: u64 = 1;
const REQUESTS_TOKEN: u64 = 2;
const EVENT_TOKEN: u64 = 3;
const TIMER_TOKEN: u64 = 4;

impl Watch {
    pub(crate) fn new(control: i32, requests: i32) -> Option<Watch> {
        use std::os::fd::FromRawFd;
        // SAFETY: epoll_create1 returns a new descriptor owned here, or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let epoll = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: eventfd returns a new descriptor owned here, or -1.
        let event = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if event < 0 {
            return None;
        }
        // SAFETY: `event` was just created and is owned by nothing else.
        let event = unsafe { std::os::fd::OwnedFd::from_raw_fd(event) };
        let event_fd = std::os::fd::AsRawFd::as_raw_fd(&event);
        // SAFETY: timerfd_create returns a new descriptor owned here, or -1.
        let timer = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        };
        if timer < 0 {
            return None;
        }
        // SAFETY: `timer` was just created and is owned by nothing else.
        let timer = unsafe { std::os::fd::OwnedFd::from_raw_fd(timer) };
        let timer_fd = std::os::fd::AsRawFd::as_raw_fd(&timer);
        let watch = Watch {
            epoll,
            requests,
            event,
            timer,
        };
        let events = libc::EPOLLIN as u32;
        (watch.ctl(libc::EPOLL_CTL_ADD, control, events, CONTROL_TOKEN)
            && watch.ctl(libc::EPOLL_CTL_ADD, event_fd, events, EVENT_TOKEN)
            && watch.ctl(libc::EPOLL_CTL_ADD, timer_fd, events, TIMER_TOKEN)
            && watch.ctl(
                libc::EPOLL_CTL_ADD,
                requests,
                libc::EPOLLONESHOT as u32,
                REQUESTS_TOKEN,
            ))
        .then_some(watch)
    }

    fn ctl(&self, op: libc::c_int, fd: i32, events: u32, token: u64) -> bool {
        use std::os::fd::AsRawFd;
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: epoll_ctl on descriptors this process holds, with a valid event.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) == 0 }
    }

    /// Reports the request socket once, as soon as it is readable (at once if it is now).
    pub(crate) fn arm(&self) {
        self.ctl(
            libc::EPOLL_CTL_MOD,
            self.requests,
            (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
            REQUESTS_TOKEN,
        );
    }

    /// Stops reporting the request socket.
    pub(crate) fn disarm(&self) {
        self.ctl(
            libc::EPOLL_CTL_MOD,
            self.requests,
            libc::EPOLLONESHOT as u32,
            REQUESTS_TOKEN,
        );
    }

    /// Wakes the thread in [`wait`](Self::wait), which reports `notified`.
    pub(crate) fn notify(&self) {
        use std::os::fd::AsRawFd;
        let one: u64 = 1;
        // SAFETY: an 8-byte write to an eventfd this process holds.
        unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Makes [`wait`](Self::wait) report `deadline` once `after` has passed (one syscall),
    /// replacing any deadline set before.
    pub(crate) fn start_deadline(&self, after: Duration) {
        use std::os::fd::AsRawFd;
        let value = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                // Below 10^9: fits the field's type on every target. Zero would disarm the
                // timer: a deadline of zero expires after a nanosecond instead.
                tv_nsec: after.subsec_nanos().max(u32::from(after.is_zero())) as _,
            },
        };
        // SAFETY: timerfd_settime on a timerfd this process holds, with a valid itimerspec.
        unsafe {
            libc::timerfd_settime(self.timer.as_raw_fd(), 0, &value, std::ptr::null_mut());
        }
    }

    /// Waits until the control socket, or the armed request socket, is readable, the deadline
    /// passed, or [`notify`](Self::notify) was called.
    pub(crate) fn wait(&self) -> Readable {
        use std::os::fd::AsRawFd;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        loop {
            // SAFETY: epoll_wait writes at most `events.len()` events into `events`.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 4, -1) };
            if n < 0 {
                // Interrupted; any other failure leaves nothing to wait on but the control
                // socket, which a blocking read then serves.
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Readable {
                    control: true,
                    requests: false,
                    notified: true,
                    deadline: true,
                };
            }
            let mut ready = Readable {
                control: false,
                requests: false,
                notified: false,
                deadline: false,
            };
            for event in &events[..n as usize] {
                match event.u64 {
                    CONTROL_TOKEN => ready.control = true,
                    REQUESTS_TOKEN => ready.requests = true,
                    EVENT_TOKEN => {
                        ready.notified = true;
                        let mut count = [0u8; 8];
                        // SAFETY: an 8-byte read from the eventfd, non-blocking; it resets it.
                        unsafe { libc::read(self.event.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
                    }
                    TIMER_TOKEN => {
                        ready.deadline = true;
                        let mut count = [0u8; 8];
                        // SAFETY: an 8-byte read from the timerfd, non-blocking; it resets it
                        // (or fails with `EAGAIN` if the timer was re-armed meanwhile).
                        unsafe { libc::read(self.timer.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
                    }
                    _ => {}
                }
            }
            return ready;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fragment: usize, total: usize) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(&fragment.to_ne_bytes());
        h[8..].copy_from_slice(&total.to_ne_bytes());
        h
    }

    #[test]
    fn packets_ipc_channel_cannot_read_safely_are_refused() {
        let limit = 1 << 20;
        assert!(check_packet(&header(24, 8), 24, 0, &[], limit).is_ok());
        // A total size of 1 TiB: `ipc-channel` would reserve it and abort.
        let huge = check_packet(&header(24, 1 << 40), 24, 0, &[], limit).unwrap_err();
        assert!(huge.contains("over the limit"), "{huge}");
        // Fragments: `ipc-channel` would wait for the rest (or panic without its channel).
        let fragments = check_packet(&header(24, 100), 24, 0, &[], limit).unwrap_err();
        assert!(fragments.contains("in fragments"), "{fragments}");
        // A header that lies about the packet: `ipc-channel` would wait for more.
        assert!(check_packet(&header(99, 8), 24, 0, &[], limit).is_err());
        assert!(check_packet(&header(0, 0), 8, 0, &[], limit).is_err());
        assert!(check_packet(&header(24, 4), 24, 0, &[], limit).is_err());
        assert!(check_packet(&header(24, 8), 24, libc::MSG_CTRUNC, &[], limit).is_err());
    }
}
