//! `cargo bincrew` against real cargo workspaces: list the pairs and the workers each built
//! binary serves, stage a deployment directory, and verify it (without cargo), tampered with in
//! every way it names, after the classic broken upgrade, and with a worker from another build
//! that its app accepts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::fixture::Fixture;
use crate::support::worker_bin;

/// Runs `cargo-bincrew bincrew <args>` (as `cargo bincrew` does) in the fixture's cargo
/// environment.
fn bincrew(fixture: &Fixture, args: &[&str]) -> Output {
    fixture
        .command(worker_bin("cargo-bincrew"))
        .arg("bincrew")
        .args(args)
        .output()
        .expect("cargo-bincrew runs")
}

fn manifest_path(fixture: &Fixture) -> String {
    fixture.dir.join("Cargo.toml").display().to_string()
}

/// `cargo bincrew stage`, its inner `cargo build` given the fixture's cargo options.
fn stage(fixture: &Fixture, out: &Path) -> Output {
    stage_with(fixture, out, &[])
}

/// [`stage`] with further options for `stage` itself.
fn stage_with(fixture: &Fixture, out: &Path, options: &[&str]) -> Output {
    let out = out.display().to_string();
    let manifest = manifest_path(fixture);
    let mut args = vec!["stage", "--out", &out, "--manifest-path", &manifest];
    args.extend(options);
    args.push("--");
    let options = fixture.cargo_options();
    args.extend(options.iter().map(String::as_str));
    bincrew(fixture, &args)
}

fn verify(fixture: &Fixture, dir: &Path) -> Output {
    bincrew(fixture, &["verify", &dir.display().to_string()])
}

/// `cargo bincrew ARGS` as a user runs it in a directory of the fixture's workspace: cargo
/// itself, finding `cargo-bincrew` where `cargo install` puts it (`$CARGO_HOME/bin`, which cargo
/// searches before `PATH`), with no `--manifest-path`.
fn cargo_bincrew(fixture: &Fixture, cwd: &Path, args: &[&str]) -> Output {
    let home = fixture.dir.join("cargo-home");
    let installed = home
        .join("bin")
        .join(format!("cargo-bincrew{}", std::env::consts::EXE_SUFFIX));
    if !installed.exists() {
        std::fs::create_dir_all(home.join("bin")).expect("cargo home");
        std::fs::copy(worker_bin("cargo-bincrew"), &installed).expect("install cargo-bincrew");
    }
    fixture
        .command(env!("CARGO"))
        .current_dir(cwd)
        .env("CARGO_HOME", &home)
        .arg("bincrew")
        .args(args)
        .output()
        .expect("cargo runs")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

fn verify_json(fixture: &Fixture, dir: &Path) -> Value {
    json(&bincrew(
        fixture,
        &["verify", "--json", &dir.display().to_string()],
    ))
}

/// The row of `file` in a verify report.
fn row<'a>(report: &'a Value, file: &str) -> &'a Value {
    report["binaries"]
        .as_array()
        .expect("binaries")
        .iter()
        .find(|r| r["file"] == file)
        .unwrap_or_else(|| panic!("no {file} in {report:#}"))
}

/// The status of each check of a verify report's row, by name.
fn statuses(row: &Value) -> Vec<(String, String)> {
    row["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Stdout and stderr together.
fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn manifest(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("bincrew-manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest is JSON")
}

fn entry<'a>(manifest: &'a Value, file: &str) -> &'a Value {
    manifest["binaries"]
        .as_array()
        .expect("binaries")
        .iter()
        .find(|e| e["file"] == file)
        .unwrap_or_else(|| panic!("no {file} in {manifest:#}"))
}

fn exe(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Asserts that verify fails and its output contains each of `expected`.
fn assert_verify_fails(fixture: &Fixture, dir: &Path, expected: &[&str]) -> String {
    let out = verify(fixture, dir);
    let all = text(&out);
    assert!(!out.status.success(), "verify passed:\n{all}");
    for needle in expected {
        assert!(all.contains(needle), "no {needle:?} in:\n{all}");
    }
    all
}

#[test]
fn list_shows_each_pair_and_fails_when_one_does_not_hold() {
    let fixture = Fixture::new("deploy-list");
    let manifest = manifest_path(&fixture);
    let out = bincrew(&fixture, &["list", "--manifest-path", &manifest]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("  app 1.0.0 (binaries: app)\n"), "{all}");
    assert!(
        all.contains("    worker tool ^1.0: tool 1.0.0 from package tool: ok\n"),
        "{all}"
    );
    // Nothing is built yet: list says so rather than what each binary serves.
    assert!(all.contains("    binary app: not built\n"), "{all}");
    assert!(
        all.contains("  tool 1.0.0 (package tool), for app: not built\n"),
        "{all}"
    );
    assert!(all.contains("binaries looked for in "), "{all}");

    // Run directly, without the `bincrew` cargo puts first, it works the same.
    let direct = fixture
        .command(worker_bin("cargo-bincrew"))
        .args(["list", "--manifest-path", &manifest])
        .output()
        .expect("runs");
    assert!(direct.status.success(), "{}", text(&direct));

    fixture.write_package("tool", "0.9.0", "");
    let out = bincrew(&fixture, &["list", "--manifest-path", &manifest]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains(
            "error: app requires worker tool ^1.0, but the workspace builds tool from package tool 0.9.0: \
             bump tool to a version matching ^1.0, or change the requirement in app's [package.metadata.bincrew] workers"
        ),
        "{all}"
    );

    // Staging refuses before building anything.
    let out = stage(&fixture, &fixture.dir.join("staged"));
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("error: the workspace's apps and workers do not pair"),
        "{all}"
    );
    assert!(!all.contains("building"), "{all}");

    fixture.write_package(
        "app",
        "1.0.0",
        "[package.metadata.bincrew]\nworkers = { thumbnailer = \"^1.2\" }\n",
    );
    let out = bincrew(&fixture, &["list", "--manifest-path", &manifest]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains(
            "error: app declares worker thumbnailer ^1.2, but no package of the workspace has a binary target named thumbnailer"
        ),
        "{all}"
    );
}

#[test]
fn a_staged_directory_verifies_and_each_tampering_is_named() {
    let fixture = Fixture::new("deploy-stage");
    let dir = fixture.dir.join("staged");
    let out = stage(&fixture, &dir);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for step in [
        "building…",
        "copying app",
        "copying tool",
        "writing manifest",
        "verifying",
    ] {
        assert!(all.contains(step), "no {step:?} in:\n{all}");
    }
    // The fixture's app only starts workers, so it cannot tell what it is: staged all the same.
    assert!(all.contains("note: app: its identity is unknown"), "{all}");
    assert!(all.contains("\nPASS: the 2 binaries in "), "{all}");

    let staged = manifest(&dir);
    assert_eq!(staged["format"], 1);
    let app = entry(&staged, "app");
    assert_eq!(app["role"], "app");
    assert_eq!(app["version"], "1.0.0");
    assert_eq!(app["build_id"], Value::Null);
    assert!(app["probe_error"].is_string(), "{app:#}");
    assert_eq!(app["requires"]["tool"], "^1.0");
    let tool = entry(&staged, "tool");
    assert_eq!(tool["role"], "worker");
    assert_eq!(tool["package"], "tool");
    assert_eq!(tool["serves"], serde_json::json!(["tool"]));
    assert_eq!(tool["build_id"].as_str().map(str::len), Some(20));
    assert!(tool["target"].is_string());
    let tool_bytes = std::fs::read(exe(&dir, "tool")).expect("staged tool");
    assert_eq!(tool["size"], tool_bytes.len() as u64);

    // A directory that is not empty is refused, before building.
    let out = stage(&fixture, &dir);
    let all = text(&out);
    assert!(!out.status.success());
    assert!(
        all.contains("exists and is not empty: choose a new or empty directory, or pass --force"),
        "{all}"
    );
    assert!(!all.contains("building"), "{all}");

    let report = verify_json(&fixture, &dir);
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["binaries"].as_array().map(Vec::len), Some(2));

    // Changed: bytes appended.
    let mut tampered = tool_bytes.clone();
    tampered.extend_from_slice(b"tampered");
    std::fs::write(exe(&dir, "tool"), &tampered).expect("tamper");
    assert_verify_fails(&fixture, &dir, &["tool: changed since staging"]);
    std::fs::write(exe(&dir, "tool"), &tool_bytes).expect("restore");

    // Swapped: app and tool exchanged.
    let app_bytes = std::fs::read(exe(&dir, "app")).expect("staged app");
    std::fs::write(exe(&dir, "app"), &tool_bytes).expect("swap");
    std::fs::write(exe(&dir, "tool"), &app_bytes).expect("swap");
    assert_verify_fails(
        &fixture,
        &dir,
        &[
            "tool: swapped: it holds the binary of app",
            "app: swapped: it holds the binary of tool",
        ],
    );
    std::fs::write(exe(&dir, "app"), &app_bytes).expect("restore");
    std::fs::write(exe(&dir, "tool"), &tool_bytes).expect("restore");

    // Missing.
    std::fs::remove_file(exe(&dir, "tool")).expect("delete");
    assert_verify_fails(&fixture, &dir, &["tool: missing from "]);
    // What stage copied, with its permissions.
    std::fs::copy(fixture.bin("tool"), exe(&dir, "tool")).expect("restore");

    // Extra: a file the manifest does not list, and a copy of a binary.
    std::fs::write(dir.join("notes.txt"), "hello").expect("extra");
    std::fs::write(dir.join("tool.old"), &tool_bytes).expect("extra");
    let all = assert_verify_fails(
        &fixture,
        &dir,
        &[
            "notes.txt: extra: not in the manifest: remove it",
            "tool.old: extra: not in the manifest (a copy of tool)",
            "FAIL in ",
            "2 file(s) not in the manifest",
        ],
    );
    assert!(!all.contains("error: tool: "), "{all}");

    // Put right, it passes again.
    std::fs::remove_file(dir.join("notes.txt")).expect("remove");
    std::fs::remove_file(dir.join("tool.old")).expect("remove");
    let out = verify(&fixture, &dir);
    assert!(out.status.success(), "{}", text(&out));
}

/// An app that serves no worker but answers probes, so that its build id is recorded; run, it
/// starts `tool` beside it as the runtime does (by the requirement it declares) and prints what
/// happened.
const PROBED_APP_MAIN: &str = r#"
fn main() {
    bincrew::init!();
    bincrew::Workers::new().run();
    let worker = match bincrew::Worker::<String, String>::builder("tool").binary("tool").start_blocking() {
        Ok(worker) => worker,
        Err(e) => {
            println!("start failed: {e}");
            std::process::exit(3);
        }
    };
    match worker.run_blocking("hello".to_owned()) {
        Ok(answer) => println!("answer {answer}"),
        Err(e) => println!("run failed: {e}"),
    }
    let _ = worker.shutdown_blocking();
}
"#;

/// An app that serves two workers from its own executable.
const SELF_SPAWNING_APP_MAIN: &str = r#"
fn main() {
    bincrew::init!();
    bincrew::Workers::new()
        .blocking_worker("double", |args: bincrew::RequestArgs<u64>| args.request * 2)
        .blocking_worker("triple", |args: bincrew::RequestArgs<u64>| args.request * 3)
        .run();
    println!("app");
}
"#;

/// Runs a staged app from its deployment directory, away from any build tree.
fn run_staged_app(dir: &Path) -> Output {
    Command::new(exe(dir, "app"))
        .current_dir(dir)
        .env_remove("CARGO")
        .output()
        .expect("the staged app runs")
}

#[test]
fn the_classic_broken_upgrade_a_new_app_beside_an_old_worker_fails_verify() {
    let fixture = Fixture::new("deploy-upgrade");
    fixture.write("app/src/main.rs", PROBED_APP_MAIN);
    let v1 = fixture.dir.join("v1");
    let out = stage(&fixture, &v1);
    assert!(out.status.success(), "{}", text(&out));
    let old = manifest(&v1);
    let old_id = entry(&old, "tool")["build_id"]
        .as_str()
        .expect("tool build id")
        .to_owned();
    assert_eq!(
        entry(&old, "app")["build_id"],
        old_id.as_str(),
        "one build, one id"
    );

    // Version 2 of both, the app requiring the new worker.
    fixture.write_package("tool", "2.0.0", "");
    fixture.write_package(
        "app",
        "2.0.0",
        "[package.metadata.bincrew]\nworkers = { tool = \"^2.0\" }\n",
    );
    let v2 = fixture.dir.join("v2");
    let out = stage(&fixture, &v2);
    assert!(out.status.success(), "{}", text(&out));
    let new_id = entry(&manifest(&v2), "app")["build_id"]
        .as_str()
        .expect("app build id")
        .to_owned();
    assert_ne!(new_id, old_id);

    // The upgrade replaces the app and the manifest, and leaves the old tool.
    for file in [exe(&v2, "app"), v2.join("bincrew-manifest.json")] {
        let name = file.file_name().expect("name");
        std::fs::copy(&file, v1.join(name)).expect("upgrade");
    }
    let all = assert_verify_fails(
        &fixture,
        &v1,
        &[
            "tool: changed since staging",
            &format!("tool: is tool 1.0.0 (build id {old_id}, "),
            &format!("but the manifest expects tool 2.0.0 (build id {new_id}, "),
            "tool: is version 1.0.0, but app requires tool ^2.0, so app refuses it at start: the worker is too old for this app: redeploy a worker matching ^2.0",
            &format!(
                "tool: built by another build (build id {old_id}) than app (build id {new_id}): redeploy tool from the same build as app"
            ),
            "1 of 2 binaries failed",
        ],
    );
    assert!(!all.contains("error: app: "), "only tool is wrong:\n{all}");

    // The runtime agrees: the new app refuses the old worker at start.
    let run = run_staged_app(&v1);
    let said = text(&run);
    assert_eq!(run.status.code(), Some(3), "{said}");
    assert!(said.contains("start failed: "), "{said}");
    assert!(said.contains("^2.0"), "{said}");

    let report = verify_json(&fixture, &v1);
    assert_eq!(report["passed"], false);
    let rows = report["binaries"].as_array().expect("binaries");
    let row = |file: &str| {
        rows.iter()
            .find(|r| r["file"] == file)
            .unwrap_or_else(|| panic!("no {file} in {report:#}"))
    };
    assert_eq!(row("app")["passed"], true);
    assert_eq!(row("app")["build_id"], new_id.as_str());
    let tool = row("tool");
    assert_eq!(tool["passed"], false);
    assert_eq!(tool["version"], "1.0.0", "the live version");
    assert_eq!(tool["build_id"], old_id.as_str(), "the live build id");
    let failed: Vec<&str> = tool["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == "fail")
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(failed, ["file", "identity", "requirement", "build"]);
}

#[test]
fn a_worker_from_another_build_that_its_app_accepts_is_a_warning_not_a_failure() {
    let fixture = Fixture::new("deploy-accepted");
    fixture.write("app/src/main.rs", PROBED_APP_MAIN);
    // The worker's package is not stamped by bincrew-build: it carries no build id, so nothing
    // shows that it comes from the app's build, but its version matches the requirement the app
    // declares, by which the app starts it.
    let root = env!("CARGO_MANIFEST_DIR").replace('\\', "/");
    fixture.write(
        "tool/Cargo.toml",
        &format!(
            "[package]\nname = \"tool\"\nversion = \"1.0.3\"\nedition = \"2021\"\npublish = false\n\n\
             [dependencies]\nbincrew = {{ path = \"{root}\" }}\n"
        ),
    );
    std::fs::remove_file(fixture.dir.join("tool/build.rs")).expect("no build script");

    let dir = fixture.dir.join("staged");
    let out = stage(&fixture, &dir);
    let all = text(&out);
    assert!(out.status.success(), "a warning does not fail it:\n{all}");
    for expected in [
        "WARN",
        "warning: tool: carries no build id, so nothing shows it comes from app's build (",
        "), but app accepts it: it starts tool under the requirement it declares, ^1.0 (Compat::Semver, its default), which tool 1.0.3 matches.",
        "note: tool: worker `tool` takes alloc::string::String and answers alloc::string::String\n",
        "note: tool: request/response types are checked by the handshake when the app starts the worker: verify cannot know which types an app uses\n",
        "\nPASS with 1 warning(s): the 2 binaries in ",
    ] {
        assert!(all.contains(expected), "no {expected:?} in:\n{all}");
    }

    let out = verify(&fixture, &dir);
    assert!(out.status.success(), "{}", text(&out));
    let report = verify_json(&fixture, &dir);
    assert_eq!(report["passed"], true, "{report:#}");
    let tool = row(&report, "tool");
    assert_eq!(tool["passed"], true, "{tool:#}");
    assert_eq!(tool["build_id"], Value::Null);
    assert_eq!(
        tool["warnings"].as_array().map(Vec::len),
        Some(1),
        "{tool:#}"
    );
    assert!(
        statuses(tool).contains(&("build".to_owned(), "warn".to_owned())),
        "{tool:#}"
    );
    assert!(
        statuses(tool).contains(&("requirement".to_owned(), "pass".to_owned())),
        "{tool:#}"
    );
    assert_eq!(
        tool["workers"],
        serde_json::json!([{
            "name": "tool",
            "request_type": "alloc::string::String",
            "response_type": "alloc::string::String",
        }])
    );

    // The runtime agrees: the app, run from the deployment directory, starts it and gets its
    // answer.
    let run = run_staged_app(&dir);
    let said = text(&run);
    assert!(run.status.success(), "{said}");
    assert!(said.contains("answer HELLO"), "{said}");
}

#[test]
fn list_from_inside_a_workspace_shows_self_spawned_workers_once_built() {
    let fixture = Fixture::new("deploy-list-self");
    fixture.write("app/src/main.rs", SELF_SPAWNING_APP_MAIN);
    let target = fixture.target_dir().display().to_string();

    // Installed, run by cargo in a directory below the workspace root.
    let out = cargo_bincrew(&fixture, &fixture.dir.join("app/src"), &["list"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("    binary app: not built\n"), "{all}");
    assert!(
        all.contains(&format!("binaries looked for in {target}")),
        "{all}"
    );

    fixture.build();
    let out = cargo_bincrew(&fixture, &fixture.dir, &["list"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for expected in [
        "  app 1.0.0 (binaries: app)\n",
        "    binary app: self-spawned workers: double, triple\n",
        "    worker tool ^1.0: tool 1.0.0 from package tool: ok\n",
        "  tool 1.0.0 (package tool), for app: serves tool\n",
        "all 1 declared pairs hold\n",
        "binaries as built in ",
    ] {
        assert!(all.contains(expected), "no {expected:?} in:\n{all}");
    }

    let listing = json(&cargo_bincrew(&fixture, &fixture.dir, &["list", "--json"]));
    assert_eq!(listing["passed"], true, "{listing:#}");
    let app = &listing["apps"][0];
    assert_eq!(app["package"], "app");
    assert_eq!(app["binaries"][0]["name"], "app");
    assert_eq!(app["binaries"][0]["built"], true);
    assert_eq!(
        app["binaries"][0]["serves"],
        serde_json::json!(["double", "triple"])
    );
    assert_eq!(app["declares"][0]["binary"], "tool");
    assert_eq!(app["declares"][0]["holds"], true);
    let tool = &listing["workers"][0];
    assert_eq!(tool["name"], "tool");
    assert_eq!(tool["apps"], serde_json::json!(["app"]));
    assert_eq!(tool["serves"], serde_json::json!(["tool"]));

    // The release binaries are another profile's: not built.
    let out = cargo_bincrew(&fixture, &fixture.dir, &["list", "--release"]);
    let all = text(&out);
    assert!(all.contains("    binary app: not built\n"), "{all}");
    assert!(all.contains(&format!("{target}/release")), "{all}");

    // --help shows examples, through cargo too.
    let out = cargo_bincrew(&fixture, &fixture.dir, &["--help"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("Examples:"), "{all}");
    assert!(
        all.contains("cargo bincrew stage --out dist --release"),
        "{all}"
    );
}

#[test]
fn stage_with_a_custom_profile_then_verify_where_there_is_no_cargo() {
    let fixture = Fixture::new("deploy-profile");
    fixture.write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"app\", \"tool\"]\nresolver = \"2\"\n\n[profile.dist]\ninherits = \"dev\"\n",
    );
    fixture.write("app/src/main.rs", SELF_SPAWNING_APP_MAIN);
    let dir = fixture.dir.join("dist");
    let out = stage_with(&fixture, &dir, &["--profile", "dist"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let staged = manifest(&dir);
    assert_eq!(staged["profile"], "dist");
    assert_eq!(
        entry(&staged, "app")["serves"],
        serde_json::json!(["double", "triple"])
    );

    // What stage built is in the profile's directory, where list looks with --profile.
    let manifest_path = manifest_path(&fixture);
    let out = bincrew(
        &fixture,
        &[
            "list",
            "--profile",
            "dist",
            "--manifest-path",
            &manifest_path,
        ],
    );
    let all = text(&out);
    assert!(
        all.contains("    binary app: self-spawned workers: double, triple\n"),
        "{all}"
    );
    assert!(
        all.contains(&format!(
            "binaries as built in {}",
            fixture.target_dir().join("dist").display()
        )),
        "{all}"
    );

    // On a machine without cargo: no CARGO, nothing on PATH, nothing of the workspace.
    let out = Command::new(worker_bin("cargo-bincrew"))
        .args(["verify", &dir.display().to_string()])
        .env_clear()
        .current_dir(&dir)
        .output()
        .expect("cargo-bincrew runs");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for expected in [
        "note: app: worker `double` takes u64 and answers u64\n",
        "note: app: worker `triple` takes u64 and answers u64\n",
        "note: app: request/response types are checked by the handshake when the app starts the worker",
        "\nPASS: the 2 binaries in ",
    ] {
        assert!(all.contains(expected), "no {expected:?} in:\n{all}");
    }
}
