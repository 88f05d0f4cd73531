//! How a worker process ends when it cannot go on.

/// Exit code of a worker process that cannot serve what it was started for.
pub(crate) const EXIT_CANNOT_SERVE: i32 = 2;
/// Exit code of a worker process whose app broke the protocol.
pub(crate) const EXIT_PROTOCOL: i32 = 3;
/// Exit code after a panic (as Rust's own).
pub(crate) const EXIT_PANIC: i32 = 101;

/// Says why on stderr and exits.
pub(crate) fn exit_with(code: i32, message: &str) -> ! {
    eprintln!("bincrew worker: {message}");
    std::process::exit(code)
}

/// Ends the process at once, without running exit handlers (another thread may hold what they
/// need).
pub(crate) fn exit_now(code: i32) -> ! {
    #[cfg(unix)]
    // SAFETY: `_exit` ends the process; it touches no memory of it.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}
