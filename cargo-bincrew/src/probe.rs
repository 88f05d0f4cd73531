//! Asking a staged binary what it is, working around a race in `bincrew::probe_binary`.

use std::path::Path;
use std::time::Duration;

use bincrew::{BinaryProbe, StartError};

/// How many times a probe that lost the race is tried in all.
const ATTEMPTS: usize = 4;

/// [`bincrew::probe_binary`], tried again when the binary exited "before the handshake".
///
/// A probed binary sends its hello and exits at once. bincrew's handshake polls for the exit
/// between events, so when the exit is seen before the accept thread has passed the hello on
/// (more likely under load) the probe fails with `ExitedBeforeHandshake` although the binary
/// answered. That error is only given for executables that contain bincrew's worker entry point,
/// so trying again never runs an app's own `main` a second time.
pub fn probe_binary(exe: &Path, timeout: Duration) -> Result<BinaryProbe, StartError> {
    let mut attempt = 1;
    loop {
        match bincrew::probe_binary(exe, timeout) {
            Err(StartError::ExitedBeforeHandshake { .. }) if attempt < ATTEMPTS => attempt += 1,
            result => return result,
        }
    }
}
