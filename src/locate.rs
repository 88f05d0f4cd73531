//! Finding a dedicated worker binary by name, in a documented order (see
//! [`WorkerBuilder::binary`](crate::WorkerBuilder::binary)).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build::BuildInfo;
use crate::build::TARGET;

/// How to look for a worker binary.
#[derive(Clone, Debug)]
pub(crate) struct Locate {
    pub(crate) binary: String,
    /// Build the binary's package with cargo first, in development.
    pub(crate) cargo_build: bool,
    /// Search `PATH` last.
    pub(crate) search_path: bool,
}

/// The environment variable that overrides where binary `binary` is: `BINCREW_EXE_` and the name
/// in upper case with `-` as `_`.
pub(crate) fn override_var(binary: &str) -> String {
    let name: String = binary
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("BINCREW_EXE_{name}")
}

impl Locate {
    /// The binary's path, or every place tried.
    pub(crate) fn find(&self, app: Option<&BuildInfo>) -> Result<PathBuf, Vec<String>> {
        let mut tried = Vec::new();
        let file = format!("{}{}", self.binary, std::env::consts::EXE_SUFFIX);

        let var = override_var(&self.binary);
        if let Some(path) = std::env::var_os(&var) {
            let path = PathBuf::from(path);
            if is_file(&path) {
                return Ok(path);
            }
            tried.push(format!("${var} = {} (no such file)", path.display()));
        } else {
            tried.push(format!("${var} (not set)"));
        }

        match std::env::current_exe() {
            Ok(app_exe) => {
                if let Some(dir) = app_exe.parent() {
                    let triple =
                        format!("{}-{TARGET}{}", self.binary, std::env::consts::EXE_SUFFIX);
                    for candidate in [dir.join(&file), dir.join(triple)] {
                        if is_file(&candidate) {
                            return Ok(candidate);
                        }
                        tried.push(format!("{} (beside the app)", candidate.display()));
                    }
                }
            }
            Err(e) => tried.push(format!("beside the app (its path is unknown: {e})")),
        }

        let cargo_var = format!("CARGO_BIN_EXE_{}", self.binary);
        match std::env::var_os(&cargo_var) {
            Some(path) if is_file(Path::new(&path)) => return Ok(PathBuf::from(path)),
            Some(path) => tried.push(format!(
                "${cargo_var} = {} (no such file)",
                PathBuf::from(path).display()
            )),
            None => tried.push(format!("${cargo_var} (not set)")),
        }

        match (
            app.and_then(|a| a.manifest_dir.as_deref()),
            running_from_target_dir(),
        ) {
            (Some(dir), Some(target)) if dir.join("Cargo.toml").is_file() => {
                match self.in_target_dir(dir, &target, &file) {
                    Ok(path) => return Ok(path),
                    Err(why) => tried.push(why),
                }
            }
            (_, None) => tried.push(
                "the cargo target dir (not searched: this app does not run from a cargo target \
                 dir, so it was shipped)"
                    .into(),
            ),
            _ => tried
                .push("the cargo target dir (the app's sources are not on this machine)".into()),
        }

        if self.search_path {
            match which::which_global(&self.binary) {
                Ok(path) if path.is_absolute() => return Ok(path),
                Ok(path) => {
                    tried.push(format!("PATH (found only the relative {})", path.display()))
                }
                Err(_) => tried.push("PATH".into()),
            }
        } else {
            tried.push("PATH (not searched: opt in with .search_path(true))".into());
        }
        Err(tried)
    }

    /// Development: `<target dir>/<profile>/<binary>`, after `cargo build` when asked; only in
    /// the target dir the app itself runs from (`running`).
    fn in_target_dir(
        &self,
        manifest_dir: &Path,
        running: &Path,
        file: &str,
    ) -> Result<PathBuf, String> {
        let manifest = manifest_dir.join("Cargo.toml");
        let metadata = cargo_metadata::MetadataCommand::new()
            .manifest_path(&manifest)
            .no_deps()
            .exec()
            .map_err(|e| format!("the cargo target dir (cargo metadata failed: {e})"))?;
        let target_dir = metadata.target_directory.as_std_path();
        if !same_dir(target_dir, running) {
            return Err(format!(
                "the cargo target dir (not searched: the app runs from {}, not from its \
                 workspace's {})",
                running.display(),
                target_dir.display()
            ));
        }
        let release = !cfg!(debug_assertions);
        let profile = if release { "release" } else { "debug" };
        let path = metadata
            .target_directory
            .as_std_path()
            .join(profile)
            .join(file);
        if self.cargo_build {
            let package = metadata
                .workspace_packages()
                .into_iter()
                .find(|p| {
                    p.targets
                        .iter()
                        .any(|t| t.is_bin() && t.name == self.binary)
                })
                .map(|p| p.name.to_string())
                .ok_or_else(|| {
                    format!(
                        "the cargo target dir (no package of the workspace at {} has a binary `{}`)",
                        manifest_dir.display(),
                        self.binary
                    )
                })?;
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
            let mut cmd = Command::new(cargo);
            cmd.arg("build")
                .arg("--manifest-path")
                .arg(&manifest)
                .args(["-p", &package, "--bin", &self.binary]);
            if release {
                cmd.arg("--release");
            }
            let status = cmd
                .status()
                .map_err(|e| format!("{} (cannot run cargo build: {e})", path.display()))?;
            if !status.success() {
                return Err(format!(
                    "{} (cargo build -p {package} --bin {} failed: {status})",
                    path.display(),
                    self.binary
                ));
            }
        }
        if is_file(&path) {
            Ok(path)
        } else {
            Err(format!(
                "{} (the cargo target dir; not built{})",
                path.display(),
                if self.cargo_build {
                    ""
                } else {
                    ": build it, or opt in with .cargo_build(true)"
                }
            ))
        }
    }
}

/// The cargo target dir the running executable lies in, if any: tests, examples, `cargo run` and
/// `cargo bench` run from one; a shipped app does not, and never looks into a build tree. Cargo
/// marks the root of every target dir with a `CACHEDIR.TAG` file.
fn running_from_target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|dir| {
            std::fs::read(dir.join("CACHEDIR.TAG"))
                .is_ok_and(|tag| tag.starts_with(b"Signature: 8a477f597d28d172789f06886806bc55"))
        })
        .map(Path::to_path_buf)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A file to run as a worker binary: it exists and it is not the app's own executable (which
/// would start itself again if it does not serve workers).
fn is_file(path: &Path) -> bool {
    path.is_file() && !crate::os::is_current_exe(path)
}
