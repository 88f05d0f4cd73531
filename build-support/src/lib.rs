//! Build-script support for bincrew apps and worker binaries.
//!
//! Call [`build`] from the `build.rs` of every package that holds an app or a worker binary:
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     bincrew_build::build();
//! }
//! ```
//!
//! It does two things, both read by `bincrew::init!()` when the binary is compiled:
//!
//! 1. **Stamps a build id** ([`stamp`]): every binary of one workspace build gets the same id,
//!    so that `bincrew::Compat::SameBuild` accepts a dedicated worker binary built with its app
//!    and rejects one from another build, even at the same version.
//! 2. **Checks the pairing** ([`check_workers`]): an app declares its worker binaries and their
//!    version requirements in its `Cargo.toml`,
//!
//!    ```toml
//!    [package.metadata.bincrew]
//!    workers = { thumbnailer = "^1.2" }
//!    ```
//!
//!    and the build fails, naming the package, the worker, the required and the found versions,
//!    when a declared worker's package does not match, or when no package of the workspace has a
//!    binary target of that name. The checked requirements are embedded, so that
//!    `Worker::builder(..).binary("thumbnailer")` defaults to `Compat::Semver` with them.
//!
//! # What goes into the build id
//!
//! The SHA-256, in hex (first 20 digits), of, in this order:
//!
//! - the format tag `bincrew-build-id/1`;
//! - the target triple and the profile (`TARGET`, `PROFILE`), so debug and release builds, or
//!   builds for two targets, differ;
//! - the bytes of the workspace's `Cargo.lock`, when there is one;
//! - the workspace root's `Cargo.toml`;
//! - for each workspace member, by package name: its name and version, then its `Cargo.toml`,
//!   its `build.rs` when present, and every file under its `src/` directory (path relative to
//!   the member, length and bytes), in path order.
//!
//! Tests, examples, benches and files outside `src/` do not go in: they are not part of the
//! shipped binaries. Build scripts are rerun (`rerun-if-changed`) exactly when one of those
//! files changes, so a build with nothing changed rebuilds nothing.
//!
//! Never run `cargo build` from a build script: it deadlocks on the target directory's lock.
//! This crate only runs `cargo metadata --no-deps --offline`.
#![deny(missing_docs)]
// The example shows a build script's whole `main`.
#![allow(clippy::needless_doctest_main)]

mod build_id;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cargo_metadata::{Metadata, MetadataCommand, Package};
use semver::VersionReq;

use build_id::Member;

/// Why a build script step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A variable cargo sets for build scripts is missing: not run from a build script.
    #[error("environment variable {0} is not set: call bincrew-build from a build script")]
    NotInBuildScript(&'static str),
    /// `cargo metadata` failed.
    #[error("cannot read the workspace with cargo metadata")]
    Metadata(#[source] cargo_metadata::Error),
    /// A file that goes into the build id could not be read.
    #[error("cannot read {} for the build id", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `[package.metadata.bincrew]` is not what this crate expects.
    #[error("package `{package}`: {message}")]
    Declaration {
        /// The declaring package.
        package: String,
        /// What is wrong.
        message: String,
    },
    /// A declared worker is not built by any package of the workspace.
    #[error("package `{package}` declares worker `{worker}` ({required}) in [package.metadata.bincrew] workers, but no package of the workspace has a binary target named `{worker}`; binary targets: {}", available.join(", "))]
    WorkerMissing {
        /// The declaring package.
        package: String,
        /// The worker binary.
        worker: String,
        /// The declared requirement.
        required: VersionReq,
        /// The workspace's binary targets.
        available: Vec<String>,
    },
    /// A declared worker's package version does not match the requirement.
    #[error("package `{package}` requires worker `{worker}` {required} (in [package.metadata.bincrew] workers), but the workspace builds `{worker}` from package `{worker_package}` {found}: bump `{worker_package}` to a version matching {required}, or change the requirement in `{package}`")]
    VersionMismatch {
        /// The declaring package.
        package: String,
        /// The worker binary.
        worker: String,
        /// The declared requirement.
        required: VersionReq,
        /// The package that builds the worker binary.
        worker_package: String,
        /// Its version.
        found: String,
    },
}

/// What [`build`] stamped and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stamp {
    /// The build id.
    pub build_id: String,
    /// The worker binaries this package declares, with their requirements.
    pub workers: Vec<(String, VersionReq)>,
    /// The packages that declare this package's binaries as workers.
    pub apps: Vec<String>,
}

/// Stamps the build id, checks the declared workers and embeds what `bincrew::init!()` reads.
/// On failure prints the reason and exits, which fails the build.
pub fn build() {
    if let Err(e) = try_build() {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let _ = write!(message, ": {cause}");
            source = cause.source();
        }
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

/// Same as [`build`], returning the error instead of exiting.
///
/// # Errors
///
/// A [`BuildError`] when the workspace cannot be read or a declared worker does not pair.
pub fn try_build() -> Result<Stamp, BuildError> {
    let workspace = Workspace::read()?;
    let build_id = workspace.build_id()?;
    let workers = workspace.check_workers()?;
    let apps = workspace.apps();
    workspace.emit(&build_id, &workers, &apps);
    Ok(Stamp {
        build_id,
        workers,
        apps,
    })
}

/// Only stamps the build id (see the crate docs for what goes into it).
///
/// # Errors
///
/// A [`BuildError`] when the workspace cannot be read.
pub fn stamp() -> Result<String, BuildError> {
    let workspace = Workspace::read()?;
    let build_id = workspace.build_id()?;
    workspace.emit(&build_id, &[], &[]);
    Ok(build_id)
}

/// Only checks the workers this package declares, and embeds their requirements.
///
/// # Errors
///
/// A [`BuildError`] when a declared worker does not pair.
pub fn check_workers() -> Result<Vec<(String, VersionReq)>, BuildError> {
    let workspace = Workspace::read()?;
    let workers = workspace.check_workers()?;
    println!("cargo:rustc-env=BINCREW_WORKERS={}", workers_env(&workers));
    workspace.rerun_lines();
    Ok(workers)
}

struct Workspace {
    metadata: Metadata,
    /// The package whose build script this is.
    this: Package,
    target: String,
    profile: String,
}

fn env(key: &'static str) -> Result<String, BuildError> {
    std::env::var(key).map_err(|_| BuildError::NotInBuildScript(key))
}

impl Workspace {
    fn read() -> Result<Workspace, BuildError> {
        let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
        let manifest = manifest_dir.join("Cargo.toml");
        // `CARGO`, set for build scripts, is the cargo that runs this build.
        let metadata = MetadataCommand::new()
            .manifest_path(&manifest)
            .no_deps()
            .other_options(vec!["--offline".to_owned()])
            .exec()
            .map_err(BuildError::Metadata)?;
        let this = metadata
            .workspace_packages()
            .into_iter()
            .find(|p| same_file(p.manifest_path.as_std_path(), &manifest))
            .cloned()
            .ok_or_else(|| BuildError::Declaration {
                package: env("CARGO_PKG_NAME").unwrap_or_default(),
                message: "it is not a member of its workspace".to_owned(),
            })?;
        Ok(Workspace {
            metadata,
            this,
            target: env("TARGET")?,
            profile: env("PROFILE")?,
        })
    }

    fn members(&self) -> Vec<&Package> {
        let mut members = self.metadata.workspace_packages();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members
    }

    fn build_id(&self) -> Result<String, BuildError> {
        let members: Vec<Member<'_>> = self
            .members()
            .into_iter()
            .map(|member| Member {
                name: &member.name,
                version: &member.version,
                dir: member_dir(member),
            })
            .collect();
        build_id::build_id(
            &self.target,
            &self.profile,
            self.metadata.workspace_root.as_std_path(),
            &members,
        )
    }

    fn declared(&self) -> Result<Vec<(String, VersionReq)>, BuildError> {
        Ok(declared_workers(&self.this)?.unwrap_or_default())
    }

    fn check_workers(&self) -> Result<Vec<(String, VersionReq)>, BuildError> {
        let declared = self.declared()?;
        let members = self.members();
        for (worker, required) in &declared {
            let provider = members
                .iter()
                .find(|p| p.targets.iter().any(|t| t.is_bin() && t.name == *worker));
            let Some(provider) = provider else {
                let mut available: Vec<String> = members
                    .iter()
                    .flat_map(|p| p.targets.iter().filter(|t| t.is_bin()))
                    .map(|t| t.name.clone())
                    .collect();
                available.sort();
                return Err(BuildError::WorkerMissing {
                    package: self.this.name.to_string(),
                    worker: worker.clone(),
                    required: required.clone(),
                    available,
                });
            };
            if !required.matches(&provider.version) {
                return Err(BuildError::VersionMismatch {
                    package: self.this.name.to_string(),
                    worker: worker.clone(),
                    required: required.clone(),
                    worker_package: provider.name.to_string(),
                    found: provider.version.to_string(),
                });
            }
        }
        Ok(declared)
    }

    /// The packages that declare one of this package's binaries as a worker.
    fn apps(&self) -> Vec<String> {
        let bins: Vec<&str> = self
            .this
            .targets
            .iter()
            .filter(|t| t.is_bin())
            .map(|t| t.name.as_str())
            .collect();
        let mut apps: Vec<String> = self
            .members()
            .into_iter()
            .filter(|p| {
                p.metadata
                    .get("bincrew")
                    .and_then(|b| b.get("workers"))
                    .and_then(|w| w.as_object())
                    .is_some_and(|w| w.keys().any(|k| bins.contains(&k.as_str())))
            })
            .map(|p| p.name.to_string())
            .collect();
        apps.dedup();
        apps
    }

    fn rerun_lines(&self) {
        let root = self.metadata.workspace_root.as_std_path();
        let mut paths: BTreeMap<PathBuf, ()> = BTreeMap::new();
        for path in [root.join("Cargo.lock"), root.join("Cargo.toml")] {
            paths.insert(path, ());
        }
        for member in self.members() {
            let dir = member_dir(member);
            paths.insert(dir.join("Cargo.toml"), ());
            if dir.join("build.rs").is_file() {
                paths.insert(dir.join("build.rs"), ());
            }
            // A directory: cargo checks every file below it.
            paths.insert(dir.join("src"), ());
        }
        for path in paths.keys() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }

    fn emit(&self, build_id: &str, workers: &[(String, VersionReq)], apps: &[String]) {
        println!("cargo:rustc-env=BINCREW_BUILD_ID={build_id}");
        println!("cargo:rustc-env=BINCREW_WORKERS={}", workers_env(workers));
        println!("cargo:rustc-env=BINCREW_APPS={}", apps.join(","));
        self.rerun_lines();
    }
}

/// The worker binaries `package` declares in `[package.metadata.bincrew] workers`, with their
/// version requirements; `None` when it declares none (it is not an app).
///
/// # Errors
///
/// [`BuildError::Declaration`] when the declaration is not a table of binary names to version
/// requirements.
pub fn declared_workers(
    package: &Package,
) -> Result<Option<Vec<(String, VersionReq)>>, BuildError> {
    let declaration = |message: String| BuildError::Declaration {
        package: package.name.to_string(),
        message,
    };
    let Some(workers) = package
        .metadata
        .get("bincrew")
        .and_then(|b| b.get("workers"))
    else {
        return Ok(None);
    };
    let Some(workers) = workers.as_object() else {
        return Err(declaration(
            "[package.metadata.bincrew] workers must be a table of binary names to version requirements, such as { thumbnailer = \"^1.2\" }".to_owned(),
        ));
    };
    let mut declared = Vec::new();
    for (worker, req) in workers {
        let Some(req) = req.as_str() else {
            return Err(declaration(format!(
                "the requirement of worker `{worker}` in [package.metadata.bincrew] workers must be a string, such as \"^1.2\""
            )));
        };
        let req = VersionReq::parse(req).map_err(|e| {
            declaration(format!(
                "worker `{worker}` has an invalid version requirement {req:?} in [package.metadata.bincrew] workers: {e}"
            ))
        })?;
        declared.push((worker.clone(), req));
    }
    Ok(Some(declared))
}

fn workers_env(workers: &[(String, VersionReq)]) -> String {
    workers
        .iter()
        .map(|(name, req)| format!("{name}={req}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The directory of a member's `Cargo.toml`.
fn member_dir(member: &Package) -> &Path {
    member
        .manifest_path
        .as_std_path()
        .parent()
        .unwrap_or(Path::new("."))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
