//! Locating the worker binaries of `worker-bins/`, built on demand by cargo.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use bincrew::{Compat, Worker};
use misbehave::{Request, Response};

/// The profile directory this test binary was built into (`target/debug` or `target/release`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/it-<hash>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// Builds the worker binaries once per test process (cargo makes it a no-op when they are
/// fresh) and returns the path of `name`.
pub fn worker_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let profile = profile_dir();
    let built = BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "hasher",
            "-p",
            "misbehave",
            "-p",
            "wirecheck",
            "-p",
            "cargo-bincrew",
        ])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        if profile.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = built {
        panic!("building the worker binaries failed:\n{e}");
    }
    let path = profile.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// This test binary's identity; every test that starts a worker calls it first.
pub fn init() {
    bincrew::init!();
}

/// A builder for the `misbehave` worker, same version as this package (0.1.0), with its stderr
/// kept out of the test output, and enough handler threads for the requests the tests keep in
/// flight whatever the machine's parallelism.
pub fn misbehave() -> bincrew::WorkerBuilder<Request, Response> {
    misbehave_builder(misbehave::WORKER)
}

/// [`misbehave`] for another of the workers the `misbehave` binary serves.
pub fn misbehave_builder<I: bincrew::IpcValue, O: bincrew::IpcValue>(
    name: &str,
) -> bincrew::WorkerBuilder<I, O> {
    init();
    Worker::builder(name)
        .exe(worker_bin("misbehave"))
        .compat(Compat::SameVersion)
        .forward_stderr(false)
        .parallelism(8)
}

/// Starts a `misbehave` worker.
pub fn start_misbehave() -> Worker<Request, Response> {
    misbehave().start_blocking().expect("misbehave starts")
}

/// Whether a process with this pid exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits (up to a generous bound, not a timing assertion) for `condition`.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn text(s: &str) -> Response {
    Response::Text(s.to_owned())
}

/// Runs `misbehave hold ARGS` (an app holding a self-spawned worker), kills the app with
/// SIGKILL once it reports its worker's pid, and waits for that worker to exit.
pub fn kill_app_and_see_its_worker_exit(args: &[&str]) {
    use std::io::{BufRead, BufReader};
    let mut app = Command::new(worker_bin("misbehave"))
        .arg("hold")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let mut line = String::new();
    BufReader::new(app.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("reads");
    let pid: u32 = line
        .trim()
        .strip_prefix("worker-pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {line:?}"));
    assert!(process_alive(pid));
    app.kill().expect("SIGKILL the app");
    app.wait().expect("reaped");
    eventually("the orphaned worker exits", || !process_alive(pid));
}

/// What an app of its own, `misbehave <command>`, printed and how it exited: for tests that
/// must not change this process (its memory, its descriptors).
pub struct AppRun {
    /// Its exit status and output.
    pub out: std::process::Output,
    /// Its stdout, as text.
    pub stdout: String,
}

impl AppRun {
    /// Runs `misbehave <command>` to its end.
    pub fn of(command: &str) -> AppRun {
        let out = Command::new(worker_bin("misbehave"))
            .arg(command)
            .output()
            .expect("runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        AppRun { out, stdout }
    }

    /// The rest of the first line that starts with `key`, trimmed; panics showing the output
    /// when no line does.
    pub fn value(&self, key: &str) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no `{key}` in:\n{}", self.stdout))
            .trim()
            .to_owned()
    }
}
