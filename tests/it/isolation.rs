//! What a worker process inherits from its app: descriptors and environment; and the handshake
//! connection taken by another process; forwarding stderr to an app whose stderr is full.
//! A frozen, flooding or panicking worker never holds an app thread.
//!
//! Every wait here is bounded by a watchdog or `eventually`: a failure is a failed assertion,
//! never a hung test. Linux only: they read `/proc`.
#![cfg(target_os = "linux")]

use std::collections::HashSet;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bincrew::StartError;
use misbehave::{Request, Response};

use crate::support::{eventually, misbehave, start_misbehave, worker_bin};

/// How long a watchdog lets a step take before the test fails (a bound, not a timing claim).
const WATCHDOG: Duration = Duration::from_secs(60);

/// Runs `f` on a thread of its own and returns its result, failing the test if it does not end
/// within [`WATCHDOG`].
fn within_watchdog<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    match result.recv_timeout(WATCHDOG) {
        Ok(value) => value,
        Err(_) => panic!("{what} did not return within {WATCHDOG:?}"),
    }
}

fn number(response: Response) -> u64 {
    match response {
        Response::Number(n) => n,
        other => panic!("expected a number, got {other:?}"),
    }
}

/// The `KEY=value` strings a process was started with, as `/proc/<pid>/environ` shows them.
fn environ(pid: u32) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).expect("reads the environment");
    bytes
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

/// Every run of 32 or more lowercase hex digits in `text`: what a token looks like.
fn hex_runs(text: &str) -> HashSet<String> {
    text.split(|c: char| !matches!(c, '0'..='9' | 'a'..='f'))
        .filter(|run| run.len() >= 32)
        .map(str::to_owned)
        .collect()
}

/// Runs `misbehave ARGS` as an app, with `env`, reporting on stdout.
fn app(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(worker_bin("misbehave"));
    cmd.args(args).stdin(Stdio::null());
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

/// An app process that is killed and reaped however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` to exit within the watchdog, killing it otherwise; its stdout and stderr.
fn finish(child: &mut Child) -> (Option<i32>, String, String) {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + WATCHDOG;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the app did not exit within {WATCHDOG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code(),
        out.join().expect("stdout"),
        err.join().expect("stderr"),
    )
}

#[test]
fn a_worker_inherits_no_descriptor_of_the_workers_started_before_it() {
    let workers: Vec<_> = (0..10).map(|_| start_misbehave()).collect();
    let counts: Vec<u64> = workers
        .iter()
        .map(|w| number(w.run_blocking(Request::Sockets).expect("answers")))
        .collect();
    assert!(
        counts.iter().all(|n| *n == counts[0]),
        "socket counts of 10 workers started one after the other: {counts:?}"
    );
}

#[test]
fn a_process_started_by_a_handler_inherits_no_socket() {
    // Workers started before it, so that the app holds channels a careless spawn would pass on.
    let earlier: Vec<_> = (0..3).map(|_| start_misbehave()).collect();
    let worker = start_misbehave();
    let sockets = number(worker.run_blocking(Request::ChildSockets).expect("answers"));
    assert_eq!(sockets, 0, "sockets a handler's child process holds");
    drop(earlier);
}

#[test]
fn dropping_a_stopped_worker_returns_without_waiting_and_reaps_it() {
    let worker = start_misbehave();
    let pid = worker.id();
    let stopped = Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    within_watchdog("dropping a worker whose process is stopped", move || {
        drop(worker)
    });
    // A zombie keeps its /proc entry: its disappearing means it was reaped.
    eventually("the dropped worker is reaped", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
}

/// The command line of `pid`, its arguments separated by spaces.
fn cmdline(pid: u32) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&bytes).replace('\0', " ")
}

/// The children of process `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let parent = parent.to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    Some(rest.split_whitespace().nth(1)? == parent)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn protocol_variables_the_app_inherited_never_reach_its_worker() {
    let stray_token = "0123456789abcdef0123456789abcdef";
    // `start-silent` sets no parallelism, and its worker never connects: it stays, unchanged
    // by the handshake, until it is killed here.
    let app = app(
        &["start-silent"],
        &[
            // A leftover in a shell: it must not cap the worker.
            ("BINCREW_PARALLELISM", "1"),
            ("BINCREW_TOKEN", stray_token),
            ("BINCREW_SERVER", "/nonexistent/stray-server"),
            ("BINCREW_APP_PID", "1"),
            // Variables of an app pass through, for a worker that is itself an app.
            ("BINCREW_EXE_ISOLATION_PROBE", "/nonexistent/probe"),
            ("BINCREW_CONNECT_TIMEOUT", "60s"),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("runs");
    let app_pid = app.id();
    let mut app = KillOnDrop(app);
    let mut worker = None;
    // The worker, once it has been exec'd (until then it is a copy of the app).
    eventually("the app starts its worker", || {
        worker = children_of(app_pid)
            .into_iter()
            .find(|pid| !cmdline(*pid).contains("start-silent"));
        worker.is_some()
    });
    let pid = worker.expect("found");
    let env = environ(pid);
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let (_, stdout, _) = finish(&mut app.0);
    assert!(stdout.contains("start failed: "), "{stdout}");

    let has = |entry: &str| env.iter().any(|e| e == entry);
    let values = |key: &str| {
        env.iter()
            .filter_map(|e| e.strip_prefix(key)?.strip_prefix('='))
            .collect::<Vec<_>>()
    };
    assert!(values("BINCREW_PARALLELISM").is_empty(), "{env:?}");
    assert_eq!(
        values("BINCREW_APP_PID"),
        [app_pid.to_string().as_str()],
        "{env:?}"
    );
    assert_eq!(values("BINCREW_SERVER").len(), 1, "{env:?}");
    assert!(!has("BINCREW_SERVER=/nonexistent/stray-server"), "{env:?}");
    assert_eq!(values("BINCREW_TOKEN").len(), 1, "{env:?}");
    assert!(!env.iter().any(|e| e.contains(stray_token)), "{env:?}");
    assert!(
        has("BINCREW_EXE_ISOLATION_PROBE=/nonexistent/probe"),
        "{env:?}"
    );
    assert!(has("BINCREW_CONNECT_TIMEOUT=60s"), "{env:?}");
}

#[test]
fn the_token_cannot_be_read_from_outside_the_worker() {
    let worker = start_misbehave();
    let pid = worker.id();
    // Runs of hex digits this test process has itself (a commit id in CI, say) are no token.
    let ours: HashSet<String> = environ(std::process::id())
        .iter()
        .flat_map(|e| hex_runs(e))
        .collect();
    let env = environ(pid);
    assert!(
        !env.iter().any(|e| e.starts_with("BINCREW_TOKEN")),
        "{env:?}"
    );
    let theirs: HashSet<String> = env.iter().flat_map(|e| hex_runs(e)).collect();
    let new: Vec<&String> = theirs.difference(&ours).collect();
    assert!(
        new.is_empty(),
        "token-like values in the worker's environ: {new:?}"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("reads");
    assert!(hex_runs(&String::from_utf8_lossy(&cmdline)).is_empty());
    // The worker itself no longer sees it either.
    assert_eq!(
        worker
            .run_blocking(Request::Env("BINCREW_TOKEN".into()))
            .expect("answers"),
        Response::Text("<unset>".into())
    );
}

#[test]
fn a_stray_worker_variable_names_itself_and_the_fix() {
    let mut child = app(&["selfspawn"], &[("BINCREW_WORKER", "misbehave")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let (code, _, stderr) = finish(&mut child);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("BINCREW_WORKER is set"), "{stderr}");
    assert!(stderr.contains("BINCREW_SERVER is not set"), "{stderr}");
    assert!(stderr.contains("unset BINCREW_WORKER"), "{stderr}");
}

#[test]
fn a_stray_app_pid_names_itself_and_the_fix() {
    let mut child = app(
        &["selfspawn"],
        &[
            ("BINCREW_WORKER", "misbehave"),
            ("BINCREW_SERVER", "/nonexistent/stray-server"),
            ("BINCREW_APP_PID", "1"),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("runs");
    let (code, _, stderr) = finish(&mut child);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("by app process 1 (BINCREW_APP_PID)"),
        "{stderr}"
    );
    assert!(stderr.contains("unset BINCREW_WORKER"), "{stderr}");
}

#[test]
fn starting_workers_from_a_process_started_as_worker_names_the_variable() {
    let mut child = app(
        &["selfspawn"],
        &[
            ("BINCREW_WORKER", "misbehave"),
            ("MISBEHAVE_SKIP_SERVE", "1"),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("runs");
    let (_, stdout, _) = finish(&mut child);
    assert!(stdout.contains("start failed: "), "{stdout}");
    assert!(stdout.contains("BINCREW_WORKER"), "{stdout}");
    assert!(stdout.contains("unset BINCREW_WORKER"), "{stdout}");
}

/// The children of this process whose environment holds `entry`.
fn children_with(entry: &str) -> Vec<u32> {
    children_of(std::process::id())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|e| e == entry.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_handshake_taken_by_another_process_is_its_own_error_and_the_worker_is_reaped() {
    let tag_value = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let tag = format!("ISOLATION_SQUAT_TAG={tag_value}");
    let builder = misbehave()
        // Its copy connects first and sends nothing; it keeps the connection for 30 s.
        .env("MISBEHAVE_SQUAT", "1")
        .env("ISOLATION_SQUAT_TAG", tag_value)
        // Longer than the worker's 300 ms head start for the squatter.
        .connect_timeout(Duration::from_secs(3));
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(builder.start_blocking().map(|_| ()));
    });
    let deadline = Instant::now() + WATCHDOG;
    let mut seen = HashSet::new();
    let outcome = loop {
        seen.extend(children_with(&tag));
        match result.recv_timeout(Duration::from_millis(20)) {
            Ok(outcome) => break outcome,
            Err(_) => assert!(Instant::now() < deadline, "the start never returned"),
        }
    };
    match outcome {
        Err(StartError::HandshakeTaken { worker, .. }) => assert_eq!(worker, "misbehave"),
        other => panic!("expected HandshakeTaken, got {other:?}"),
    }
    assert_eq!(
        seen.len(),
        1,
        "the worker process, seen while it started: {seen:?}"
    );
    for pid in seen {
        eventually("the worker is killed and reaped", || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
    }
}

/// Needs a `misbehave flood-stderr` subcommand: an app that starts itself as worker `misbehave`
/// (forwarding its stderr, the default), runs `Request::Stderr` with a 1 KiB line 4096 times
/// (4 MiB: more than the pipes and the forwarding queue hold), then `Request::Panic("flooded and
/// panicked")`, prints `crash: {error}` for that request's error on stdout, and exits 0.
#[test]
fn a_worker_flooding_an_app_stderr_nobody_reads_still_reports_its_panic() {
    let mut child = app(&["flood-stderr"], &[])
        .stdout(Stdio::piped())
        // Piped and never read: once the pipe is full, every write to it blocks.
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let mut stdout = child.stdout.take().expect("stdout");
    // Holds the read end of its stderr, unread, until the end of the test.
    let child = KillOnDrop(child);
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = done.send(text);
    });
    let stdout = result.recv_timeout(WATCHDOG);
    drop(child);
    let stdout = stdout.expect("the app finished (it is stuck on its stderr otherwise)");
    assert!(
        stdout.contains("crash: ") && stdout.contains("flooded and panicked"),
        "{stdout}"
    );
}

#[test]
fn a_workers_stdout_goes_with_its_stderr_into_the_crash_report_by_default() {
    for (stdout, kept) in [(None, true), (Some(bincrew::WorkerStdout::Null), false)] {
        let mut builder = misbehave();
        if let Some(stdout) = stdout {
            builder = builder.stdout(stdout);
        }
        let worker = builder.start_blocking().expect("starts");
        worker
            .run_blocking(Request::Stdout("printed on stdout".into()))
            .expect("answered");
        let err = worker.run_blocking(Request::Exit(3)).expect_err("exits");
        let bincrew::RunError::Crashed(report) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            report.stderr_tail.contains("printed on stdout"),
            kept,
            "{:?}: {}",
            stdout,
            report.stderr_tail
        );
    }
}

#[test]
fn the_builders_process_controls_reach_the_worker() {
    let dir = std::env::temp_dir();
    let worker = misbehave()
        .env_clear()
        .env("BINCREW_TEST_KEPT", "kept")
        .env_remove("BINCREW_TEST_KEPT_NOT_THERE")
        .args(["--unused", "argument"])
        .current_dir(&dir)
        .start_blocking()
        .expect("starts");
    let text = |request| match worker.run_blocking(request).expect("answered") {
        Response::Text(text) => text,
        other => panic!("{other:?}"),
    };
    assert_eq!(text(Request::Env("PATH".into())), "<unset>");
    assert_eq!(text(Request::Env("BINCREW_TEST_KEPT".into())), "kept");
    assert_eq!(
        std::fs::canonicalize(text(Request::Cwd)).expect("a directory"),
        std::fs::canonicalize(&dir).expect("a directory")
    );
}
