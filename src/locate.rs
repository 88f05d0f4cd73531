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
        match self.search(app) {
            Ok((path, why)) => {
                tracing::info!(binary = %self.binary, path = %path.display(), "worker binary found {why}");
                Ok(path)
            }
            Err(tried) => {
                tracing::warn!(binary = %self.binary, tried = %tried.join("; "), "worker binary not found");
                Err(tried)
            }
        }
    }

    /// [`find`](Self::find), saying where the binary was found.
    fn search(&self, app: Option<&BuildInfo>) -> Result<(PathBuf, String), Vec<String>> {
        let mut tried = Vec::new();
        let file = format!("{}{}", self.binary, std::env::consts::EXE_SUFFIX);

        let var = override_var(&self.binary);
        if let Some(path) = std::env::var_os(&var) {
            let path = PathBuf::from(path);
            if is_file(&path) {
                return Ok((path, format!("through ${var}")));
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
                            return Ok((candidate, "beside the app".into()));
                        }
                        tried.push(format!("{} (beside the app)", candidate.display()));
                    }
                }
            }
            Err(e) => tried.push(format!("beside the app (its path is unknown: {e})")),
        }

        let cargo_var = format!("CARGO_BIN_EXE_{}", self.binary);
        match std::env::var_os(&cargo_var) {
            Some(path) if is_file(Path::new(&path)) => {
                return Ok((PathBuf::from(path), format!("through ${cargo_var}")))
            }
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
                    Ok(path) => {
                        return Ok((
                            path,
                            "in the cargo target dir the app runs from (development)".into(),
                        ))
                    }
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
            match on_path(&self.binary) {
                Ok(path) if is_file(&path) => return Ok((path, "on PATH".into())),
                Ok(_) => tried.push("PATH (only the app itself)".into()),
                Err(why) => tried.push(why),
            }
        } else {
            tried.push("PATH (not searched: opt in with .search_path(true))".into());
        }
        Err(tried)
    }

    /// Development: `<target dir>/<profile>/<binary>`, where `<profile>` is the app's own (the
    /// part of its path below the target dir, with the target triple of a cross build), after
    /// `cargo build` when asked. `target_dir` is the one the app runs from.
    fn in_target_dir(
        &self,
        manifest_dir: &Path,
        target_dir: &Path,
        file: &str,
    ) -> Result<PathBuf, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("the cargo target dir (the app's path is unknown: {e})"))?;
        let below: Vec<_> = exe
            .strip_prefix(target_dir)
            .map_err(|_| {
                format!(
                    "the cargo target dir (the app does not run from {})",
                    target_dir.display()
                )
            })?
            .components()
            .map(|c| c.as_os_str().to_owned())
            .collect();
        // `<profile>/…` or, in a cross build, `<triple>/<profile>/…`.
        let cross = below.first().is_some_and(|first| *first == *TARGET);
        let profile: PathBuf = below.iter().take(if cross { 2 } else { 1 }).collect();
        let path = target_dir.join(&profile).join(file);
        if self.cargo_build {
            let manifest = manifest_dir.join("Cargo.toml");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
            let mut cmd = Command::new(cargo);
            cmd.arg("build")
                .arg("--manifest-path")
                .arg(&manifest)
                .arg("--target-dir")
                .arg(target_dir)
                .args(["--workspace", "--bin", &self.binary]);
            if cross {
                cmd.args(["--target", TARGET]);
            }
            match below.get(usize::from(cross)).and_then(|p| p.to_str()) {
                Some("debug") | None => {}
                Some("release") => {
                    cmd.arg("--release");
                }
                Some(other) => {
                    cmd.args(["--profile", other]);
                }
            }
            tracing::info!(binary = %self.binary, ?cmd, "building the worker binary with cargo");
            let status = cmd
                .status()
                .map_err(|e| format!("{} (cannot run cargo build: {e})", path.display()))?;
            if !status.success() {
                return Err(format!(
                    "{} (cargo build --workspace --bin {} failed: {status})",
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

/// The first executable file named `binary` in the directories of `PATH`, skipping relative
/// entries (an empty entry or `.` would mean the current directory).
fn on_path(binary: &str) -> Result<PathBuf, String> {
    let file = format!("{binary}{}", std::env::consts::EXE_SUFFIX);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut relative = None;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(&file);
        if !is_executable(&candidate) {
            continue;
        }
        if dir.is_absolute() {
            return Ok(candidate);
        }
        relative.get_or_insert(candidate);
    }
    Err(match relative {
        Some(found) => format!("PATH (found only the relative {})", found.display()),
        None => "PATH".into(),
    })
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
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

/// A file to run as a worker binary: it exists and it is not the app's own executable (which
/// would start itself again if it does not serve workers).
fn is_file(path: &Path) -> bool {
    path.is_file() && !crate::os::is_current_exe(path)
}
