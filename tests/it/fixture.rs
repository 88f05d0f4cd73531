//! Real cargo workspaces made in temp dirs: an app and its dedicated worker binary, both
//! stamped by bincrew-build, for the build-support and deployment tests.
//!
//! Each fixture has its own target dir for the binaries, and all share one cargo build dir
//! (`target/bincrew-fixtures/build`) for the compiled dependencies, so bincrew and its
//! dependencies compile once. Cargo names the units of `app` and `tool` alike in every fixture,
//! so fixtures hold a file lock while they live: one at a time, across test processes.
//! Everything runs with `--offline`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A temp workspace with packages `app` (declaring worker binary `tool`) and `tool`.
pub struct Fixture {
    pub dir: PathBuf,
    _lock: std::fs::File,
}

fn fixtures_dir() -> PathBuf {
    // The test binary's target dir: <target>/<profile>/deps/it-<hash>.
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .expect("<target>/<profile>/deps")
        .join("bincrew-fixtures")
}

impl Fixture {
    /// A new workspace: `app` 1.0.0 requiring `tool = "^1.0"`, and `tool` 1.0.0.
    pub fn new(name: &str) -> Fixture {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let dir = fixtures_dir().join(format!(
            "{name}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(fixtures_dir()).expect("fixtures dir");
        let lock = std::fs::File::create(fixtures_dir().join("lock")).expect("lock file");
        lock.lock().expect("fixture lock");
        let _ = std::fs::remove_dir_all(&dir);
        let fixture = Fixture { dir, _lock: lock };
        fixture.write(
            "Cargo.toml",
            "[workspace]\nmembers = [\"app\", \"tool\"]\nresolver = \"2\"\n",
        );
        // The same dependency versions as bincrew's own build, so nothing needs the network.
        let lock = std::fs::read(Path::new(ROOT).join("Cargo.lock")).expect("Cargo.lock");
        std::fs::write(fixture.dir.join("Cargo.lock"), lock).expect("write Cargo.lock");
        fixture.write_package(
            "app",
            "1.0.0",
            "[package.metadata.bincrew]\nworkers = { tool = \"^1.0\" }\n",
        );
        fixture.write_package("tool", "1.0.0", "");
        fixture.write("app/src/main.rs", APP_MAIN);
        fixture.write("tool/src/main.rs", TOOL_MAIN);
        fixture
    }

    pub fn write(&self, path: &str, contents: &str) {
        let path = self.dir.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }

    /// (Re)writes a package's manifest and build script.
    pub fn write_package(&self, name: &str, version: &str, extra: &str) {
        let root = ROOT.replace('\\', "/");
        self.write(
            &format!("{name}/Cargo.toml"),
            &format!(
                "[package]\nname = \"{name}\"\nversion = \"{version}\"\nedition = \"2021\"\npublish = false\n\n\
                 [dependencies]\nbincrew = {{ path = \"{root}\" }}\n\n\
                 [build-dependencies]\nbincrew-build = {{ path = \"{root}/build-support\" }}\n\n{extra}"
            ),
        );
        self.write(
            &format!("{name}/build.rs"),
            "fn main() {\n    bincrew_build::build();\n}\n",
        );
    }

    /// Runs cargo in the workspace with the shared build dir, offline.
    pub fn cargo(&self, args: &[&str]) -> Output {
        self.command(env!("CARGO"))
            .args(args)
            .args(self.cargo_options())
            .output()
            .expect("cargo runs")
    }

    /// A command run in the workspace, in the environment [`cargo`](Self::cargo) runs in: for
    /// tools that run cargo themselves (pass them [`cargo_options`](Self::cargo_options) too).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(&self.dir)
            .env("CARGO", env!("CARGO"))
            .env("CARGO_TARGET_DIR", self.target_dir())
            .env_remove("RUSTFLAGS");
        command
    }

    /// The options every cargo command of the fixture takes: offline, with the shared build dir.
    pub fn cargo_options(&self) -> Vec<String> {
        vec![
            "--offline".to_owned(),
            "--config".to_owned(),
            format!(
                "build.build-dir={:?}",
                fixtures_dir().join("build").display().to_string()
            ),
        ]
    }

    /// `cargo build`, asserting it succeeds; returns its stderr.
    pub fn build(&self) -> String {
        let out = self.cargo(&["build", "-v"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "cargo build failed:\n{stderr}");
        stderr
    }

    pub fn target_dir(&self) -> PathBuf {
        self.dir.join("target")
    }

    /// A built binary.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.target_dir()
            .join("debug")
            .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The app: starts `tool` found by the locator (beside it, or in its target dir) under the
/// requirement it declares (or `SameBuild` when `APP_SAME_BUILD` is set), runs one request,
/// prints what happened.
const APP_MAIN: &str = r#"
fn main() {
    bincrew::init!();
    let info = bincrew::build_info().expect("init");
    println!("app {} {} build {}", info.package, info.version, info.build_id.as_deref().unwrap_or("none"));
    let mut builder = bincrew::Worker::<String, String>::builder("tool").binary("tool");
    if std::env::var_os("APP_SAME_BUILD").is_some() {
        builder = builder.compat(bincrew::Compat::SameBuild);
    }
    let worker = match builder.start_blocking() {
        Ok(worker) => worker,
        Err(e) => {
            println!("start failed: {e}");
            std::process::exit(3);
        }
    };
    let peer = worker.build_info();
    println!("worker {} {} build {}", peer.package, peer.version, peer.build_id.as_deref().unwrap_or("none"));
    match worker.run_blocking("hello".to_owned()) {
        Ok(answer) => println!("answer {answer}"),
        Err(e) => println!("run failed: {e}"),
    }
    let _ = worker.shutdown_blocking();
}
"#;

/// The dedicated worker binary: upper-cases strings.
const TOOL_MAIN: &str = r#"
fn main() {
    bincrew::init!();
    bincrew::Workers::new()
        .blocking_worker("tool", |args: bincrew::RequestArgs<String>| args.request.to_uppercase())
        .run_dedicated();
}
"#;
