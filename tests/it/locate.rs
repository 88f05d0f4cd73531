//! Finding dedicated worker binaries by name, in the documented order.

use std::process::Command;

use bincrew::{Compat, StartError, Worker};
use misbehave::{Request, Response};

use crate::support::{init, text, worker_bin};

#[test]
fn the_environment_override_comes_first() {
    init();
    // Only this test uses this binary name, so setting the variable races with nothing.
    std::env::set_var("BINCREW_EXE_LOCATE_OVERRIDE", worker_bin("misbehave"));
    let worker = Worker::<Request, Response>::builder(misbehave::WORKER)
        .binary("locate-override")
        .compat(Compat::SameVersion)
        .forward_stderr(false)
        .start_blocking()
        .expect("found through the override");
    assert_eq!(
        worker
            .run_blocking(Request::Echo("found".into()))
            .expect("answer"),
        text("found")
    );
}

#[test]
fn in_development_the_cargo_target_dir_is_searched() {
    init();
    // Not beside this test binary, not in CARGO_BIN_EXE_*: found in the target dir.
    let worker = Worker::<Request, Response>::builder(misbehave::WORKER)
        .binary("misbehave")
        .compat(Compat::SameVersion)
        .forward_stderr(false)
        .start_blocking()
        .expect("found in the target dir");
    assert_eq!(
        worker
            .run_blocking(Request::Echo("dev".into()))
            .expect("answer"),
        text("dev")
    );
}

#[test]
fn a_binary_found_nowhere_lists_every_place_tried() {
    init();
    let err = Worker::<Request, Response>::builder("thumbs")
        .binary("no-such-worker")
        .start_blocking()
        .expect_err("nowhere");
    let StartError::NotFound { tried, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(tried.len(), 6, "{tried:#?}");
    assert_eq!(tried[0], "$BINCREW_EXE_NO_SUCH_WORKER (not set)");
    assert!(
        tried[1].ends_with("/no-such-worker (beside the app)"),
        "{}",
        tried[1]
    );
    let target = &bincrew::build_info().expect("init").target;
    assert!(
        tried[2].ends_with(&format!("/no-such-worker-{target} (beside the app)")),
        "{}",
        tried[2]
    );
    assert_eq!(tried[3], "$CARGO_BIN_EXE_no-such-worker (not set)");
    assert!(tried[4].contains("/debug/no-such-worker (the cargo target dir; not built: build it, or opt in with .cargo_build(true))"), "{}", tried[4]);
    assert_eq!(
        tried[5],
        "PATH (not searched: opt in with .search_path(true))"
    );
    assert!(err
        .to_string()
        .starts_with("cannot find worker binary `no-such-worker` for worker `thumbs`; looked in: $BINCREW_EXE_NO_SUCH_WORKER (not set); "));
}

#[test]
fn path_is_searched_only_when_asked_and_the_current_directory_never() {
    let dir = std::env::temp_dir().join(format!("bincrew-locate-{}", std::process::id()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("dir");
    // The app lives in `dir`; the worker binary sits in `dir/bin`, which is the current
    // directory and on PATH.
    std::fs::copy(worker_bin("misbehave"), dir.join("app")).expect("copy");
    std::fs::copy(worker_bin("misbehave"), bin.join("stray-worker")).expect("copy");
    let run = |search_path: bool| {
        let mut cmd = Command::new(dir.join("app"));
        cmd.args(["locate", "stray-worker"]);
        if search_path {
            cmd.arg("--search-path");
        }
        let out = cmd
            .current_dir(&bin)
            .env("PATH", &bin)
            .output()
            .expect("runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let without = run(false);
    let with = run(true);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        without.starts_with("error: cannot find worker binary `stray-worker`"),
        "{without}"
    );
    assert!(
        without.contains("PATH (not searched: opt in with .search_path(true))"),
        "{without}"
    );
    assert!(with.starts_with("started pid "), "{with}");
}

#[test]
fn an_app_moved_out_of_the_target_dir_never_looks_into_it() {
    // `hasher` is built in the target dir; run from there, `misbehave locate hasher` finds it
    // (and starts it, which then says it serves another worker than `misbehave`).
    let _ = worker_bin("hasher");
    let found = Command::new(worker_bin("misbehave"))
        .args(["locate", "hasher"])
        .output()
        .expect("runs");
    let found = String::from_utf8_lossy(&found.stdout).into_owned();
    assert!(
        found.contains("/hasher does not serve worker `misbehave`"),
        "{found}"
    );
    // The same app shipped elsewhere: the build tree is not searched, let alone built.
    let dir = std::env::temp_dir().join(format!("bincrew-shipped-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(worker_bin("misbehave"), dir.join("app")).expect("copy");
    let out = Command::new(dir.join("app"))
        .args(["locate", "hasher"])
        .env_remove("CARGO_BIN_EXE_hasher")
        .output()
        .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.starts_with("error: cannot find worker binary `hasher`"),
        "{out}"
    );
    assert!(
        out.contains("the cargo target dir (not searched: this app does not run from a cargo target dir, so it was shipped)"),
        "{out}"
    );
}
