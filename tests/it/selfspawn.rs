//! Self-spawned workers, and what happens when the app goes away; the `misbehave` binary acts as
//! the app here (`misbehave selfspawn`, `hold`, `start-silent`).

use std::process::{Command, Stdio};

use crate::support::{kill_app_and_see_its_worker_exit, worker_bin};

fn app(args: &[&str]) -> Command {
    let mut cmd = Command::new(worker_bin("misbehave"));
    cmd.args(args);
    cmd
}

#[test]
fn an_app_starts_itself_as_its_worker_under_same_build() {
    let out = app(&["selfspawn"]).output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("worker misbehave 0.1.0 pid "),
        "{stdout}"
    );
    for i in 0..8 {
        assert!(stdout.contains(&format!("ok: hello {i}\n")), "{stdout}");
    }
    assert!(stdout.ends_with("shutdown ok\n"), "{stdout}");
}

#[test]
fn a_worker_exits_when_its_app_is_killed() {
    kill_app_and_see_its_worker_exit(&[]);
}

#[test]
fn the_connect_timeout_comes_from_the_environment() {
    let out = app(&["start-silent"])
        .env("BINCREW_CONNECT_TIMEOUT", "300ms")
        .stderr(Stdio::null())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("did not complete the handshake within 300ms and was killed"),
        "{stdout}"
    );
}

#[test]
fn an_invalid_connect_timeout_in_the_environment_is_an_error() {
    let out = app(&["start-silent"])
        .env("BINCREW_CONNECT_TIMEOUT", "soon")
        .stderr(Stdio::null())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "start failed: environment variable BINCREW_CONNECT_TIMEOUT=\"soon\" is not valid"
        ),
        "{stdout}"
    );
}

#[test]
fn a_worker_binary_run_by_hand_explains_itself() {
    let out = app(&[]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("its app starts it"));
}

#[test]
fn a_dedicated_worker_binary_run_by_hand_says_what_it_is() {
    let hasher = worker_bin("hasher");
    let out = Command::new(&hasher)
        .arg("--version")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.starts_with("hasher 0.2.0\nbuild id: "), "{stdout}");
    assert!(stdout.contains("belongs to: bincrew-demo\n"), "{stdout}");
    assert!(stdout.ends_with("serves workers: hasher\n"), "{stdout}");

    let out = Command::new(&hasher).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hasher 0.2.0 is a bincrew worker binary, serving hasher: the app that uses it starts it"),
        "{stderr}"
    );
}
