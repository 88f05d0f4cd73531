//! bincrew-build in real cargo projects: the stamp, the pairing check, and rebuilding nothing.

use std::process::Command;

use crate::fixture::Fixture;

fn run(bin: &std::path::Path) -> String {
    run_with(bin, &[])
}

fn run_with(bin: &std::path::Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(bin)
        .envs(env.iter().copied())
        .output()
        .expect("runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build_id(stdout: &str, prefix: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no `{prefix}` line in {stdout:?}"))
        .to_owned()
}

#[test]
fn a_paired_workspace_builds_stamps_one_id_and_rebuilds_nothing_the_second_time() {
    let fixture = Fixture::new("paired");
    fixture.build();
    let stdout = run(&fixture.bin("app"));
    // The app found `tool` in its target dir, and SameBuild-or-requirement passed.
    assert!(stdout.contains("answer HELLO"), "{stdout}");
    let app_id = build_id(&stdout, "app ");
    let tool_id = build_id(&stdout, "worker ");
    assert_eq!(app_id, tool_id, "one build, one id");
    assert_eq!(app_id.len(), 20);

    // Nothing changed: nothing is compiled and no build script runs again.
    let second = fixture.build();
    assert!(!second.contains("Compiling"), "{second}");
    assert!(!second.contains("Running `"), "{second}");

    // `tool --version` says what it is and which app it belongs to.
    let out = Command::new(fixture.bin("tool"))
        .arg("--version")
        .output()
        .expect("runs");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(version.starts_with("tool 1.0.0\n"), "{version}");
    assert!(
        version.contains(&format!("build id: {tool_id}\n")),
        "{version}"
    );
    assert!(version.contains("belongs to: app\n"), "{version}");

    assert!(run_with(&fixture.bin("app"), &[("APP_SAME_BUILD", "1")]).contains("answer HELLO"));

    // A source change, and only `tool` rebuilt: the app is from another build, at the same
    // version. The declared requirement still holds; SameBuild does not.
    fixture.write(
        "tool/src/extra.rs",
        "// a new file under src/ changes the build id\n",
    );
    let out = fixture.cargo(&["build", "-p", "tool"]);
    assert!(out.status.success());
    assert!(run(&fixture.bin("app")).contains("answer HELLO"));
    let stdout = run_with(&fixture.bin("app"), &[("APP_SAME_BUILD", "1")]);
    assert!(
        stdout.contains(&format!(
            "start failed: worker `tool` is binary `tool` 1.0.0 (build {{}}) at {}, but app `app` 1.0.0 (build {app_id}) requires same build: \
             they come from different builds of the same version: rebuild the workspace and redeploy the app and its workers together"
        , fixture.bin("tool").display()).replace("{}", &build_id_of_tool(&fixture))),
        "{stdout}"
    );

    // Rebuilt together, every binary has the new id.
    fixture.build();
    let stdout = run(&fixture.bin("app"));
    let new_id = build_id(&stdout, "app ");
    assert_ne!(new_id, app_id);
    assert_eq!(build_id(&stdout, "worker "), new_id);
}

fn build_id_of_tool(fixture: &Fixture) -> String {
    let out = Command::new(fixture.bin("tool"))
        .arg("--version")
        .output()
        .expect("runs");
    build_id(&String::from_utf8_lossy(&out.stdout), "build id:")
}

#[test]
fn a_worker_that_does_not_meet_the_declared_requirement_fails_the_build() {
    let fixture = Fixture::new("mismatch");
    fixture.write_package("tool", "0.9.0", "");
    let out = fixture.cargo(&["build"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "error: package `app` requires worker `tool` ^1.0 (in [package.metadata.bincrew] workers), \
             but the workspace builds `tool` from package `tool` 0.9.0: bump `tool` to a version matching ^1.0, \
             or change the requirement in `app`"
        ),
        "{stderr}"
    );
}

#[test]
fn a_declared_worker_without_a_binary_target_fails_the_build() {
    let fixture = Fixture::new("missing");
    fixture.write_package(
        "app",
        "1.0.0",
        "[package.metadata.bincrew]\nworkers = { thumbnailer = \"^1.2\" }\n",
    );
    let out = fixture.cargo(&["build"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "error: package `app` declares worker `thumbnailer` (^1.2) in [package.metadata.bincrew] workers, \
             but no package of the workspace has a binary target named `thumbnailer`; binary targets: app, tool"
        ),
        "{stderr}"
    );
}
