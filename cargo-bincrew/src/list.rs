//! `cargo bincrew list`: the apps and worker binaries of a workspace, whether each declared pair
//! holds, and the workers each binary serves, as the binary built in the target dir says when
//! probed (so an app's self-spawned workers show too).
//!
//! Probing runs only binaries that contain bincrew's worker entry point, which answer and exit
//! before their `main` goes on; any other binary is read, never run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bincrew::StartError;
use serde::Serialize;

use crate::profile::Profile;
use crate::verify::chain;
use crate::workspace::{App, Provider, Workspace};

/// What `list` was asked to do.
pub struct Options {
    pub manifest_path: Option<PathBuf>,
    /// The profile whose built binaries are probed.
    pub profile: Profile,
    /// The `--target` whose built binaries are probed.
    pub target: Option<String>,
    pub timeout: Duration,
}

/// The whole listing, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Listing {
    pub workspace_root: String,
    /// Where built binaries were looked for.
    pub binaries_dir: String,
    pub apps: Vec<AppRow>,
    /// Every declared worker binary the workspace builds, once.
    pub workers: Vec<WorkerRow>,
    /// Each declared pair that does not hold: what is wrong and what to do.
    pub problems: Vec<String>,
    /// Whether every declared pair holds.
    pub passed: bool,
}

/// A package that declares worker binaries or uses bincrew in binaries of its own.
#[derive(Debug, Serialize)]
pub struct AppRow {
    pub package: String,
    pub version: String,
    /// Its binaries (those no app declares as a worker), with the workers each serves itself.
    pub binaries: Vec<Binary>,
    /// The worker binaries it declares in `[package.metadata.bincrew] workers`.
    pub declares: Vec<DeclaredRow>,
}

/// One declared worker binary of an app, and what the workspace has for it.
#[derive(Debug, Serialize)]
pub struct DeclaredRow {
    pub binary: String,
    pub requirement: String,
    /// The package that builds it; `null` when none does.
    pub package: Option<String>,
    pub version: Option<String>,
    pub holds: bool,
    pub problem: Option<String>,
}

/// A declared worker binary.
#[derive(Debug, Serialize)]
pub struct WorkerRow {
    pub package: String,
    pub version: String,
    /// The apps that declare it.
    pub apps: Vec<String>,
    #[serde(flatten)]
    pub binary: Binary,
}

/// A binary of the workspace, as built in the target dir.
#[derive(Debug, Serialize)]
pub struct Binary {
    pub name: String,
    /// Where it is when built.
    pub path: String,
    pub built: bool,
    /// The worker names it serves, as it said when probed: empty when it is not built or
    /// serves none.
    pub serves: Vec<String>,
    /// Why the built binary did not answer the probe; `null` when it answered or has no
    /// bincrew worker entry point (it serves no worker).
    pub probe_error: Option<String>,
}

impl Binary {
    /// Probes the binary `name` in `dir`, when it is there.
    fn probe(dir: &Path, name: &str, timeout: Duration) -> Binary {
        let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let mut binary = Binary {
            name: name.to_owned(),
            path: path.display().to_string(),
            built: path.is_file(),
            serves: Vec::new(),
            probe_error: None,
        };
        if !binary.built {
            return binary;
        }
        match crate::probe::probe_binary(&path, timeout) {
            Ok(probe) => binary.serves = probe.workers,
            // Without bincrew's worker entry point it serves nothing (and was not run).
            Err(StartError::NotAWorker { .. }) => {}
            Err(e) => binary.probe_error = Some(chain(&e)),
        }
        binary
    }

    /// What the listing says of it, where `workers` introduces the names it serves.
    fn describe(&self, workers: &str) -> String {
        match (self.built, &self.probe_error) {
            (false, _) => "not built".to_owned(),
            (true, Some(error)) => format!("built, but it did not answer the probe: {error}"),
            (true, None) if self.serves.is_empty() => "serves no worker".to_owned(),
            (true, None) => format!("{workers} {}", self.serves.join(", ")),
        }
    }
}

/// Reads the workspace and probes its built binaries.
pub fn list(options: &Options) -> anyhow::Result<Listing> {
    let workspace = Workspace::read(options.manifest_path.as_deref())?;
    let mut dir = workspace.target_dir.clone();
    if let Some(target) = &options.target {
        dir.push(target);
    }
    dir.push(options.profile.dir());
    Ok(listing(&workspace, &dir, options.timeout))
}

fn listing(workspace: &Workspace, dir: &Path, timeout: Duration) -> Listing {
    let apps = workspace
        .apps
        .iter()
        .map(|app| app_row(app, dir, timeout))
        .collect();
    let workers = workspace
        .workers()
        .into_iter()
        .map(|worker| WorkerRow {
            binary: Binary::probe(dir, &worker.binary, timeout),
            package: worker.package,
            version: worker.version.to_string(),
            apps: worker.apps,
        })
        .collect();
    let problems = workspace.problems();
    Listing {
        workspace_root: workspace.root.display().to_string(),
        binaries_dir: dir.display().to_string(),
        apps,
        workers,
        passed: problems.is_empty(),
        problems,
    }
}

fn app_row(app: &App, dir: &Path, timeout: Duration) -> AppRow {
    AppRow {
        package: app.package.clone(),
        version: app.version.to_string(),
        binaries: app
            .binaries
            .iter()
            .map(|name| Binary::probe(dir, name, timeout))
            .collect(),
        declares: app
            .workers
            .iter()
            .map(|declared| {
                let (package, version) = match &declared.provider {
                    Provider::Found {
                        package, version, ..
                    } => (Some(package.clone()), Some(version.to_string())),
                    Provider::Missing { .. } => (None, None),
                };
                DeclaredRow {
                    binary: declared.binary.clone(),
                    requirement: declared.requirement.to_string(),
                    package,
                    version,
                    holds: declared.holds(),
                    problem: declared.problem(&app.package),
                }
            })
            .collect(),
    }
}

impl Listing {
    /// What `list` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.apps.is_empty() {
            out.push_str(
                "no package of this workspace uses bincrew: none depends on it or declares worker binaries in [package.metadata.bincrew] workers\n",
            );
            return out;
        }
        out.push_str("apps:\n");
        for app in &self.apps {
            let names: Vec<&str> = app.binaries.iter().map(|b| b.name.as_str()).collect();
            let binaries = if names.is_empty() {
                "no binary".to_owned()
            } else {
                format!("binaries: {}", names.join(", "))
            };
            let _ = writeln!(out, "  {} {} ({binaries})", app.package, app.version);
            for binary in &app.binaries {
                let _ = writeln!(
                    out,
                    "    binary {}: {}",
                    binary.name,
                    binary.describe("self-spawned workers:")
                );
            }
            for declared in &app.declares {
                let found = match (&declared.package, &declared.version) {
                    (Some(package), Some(version)) => {
                        format!("{} {version} from package {package}", declared.binary)
                    }
                    _ => "not in the workspace".to_owned(),
                };
                let verdict = if declared.holds { "ok" } else { "FAIL" };
                let _ = writeln!(
                    out,
                    "    worker {} {}: {found}: {verdict}",
                    declared.binary, declared.requirement
                );
            }
        }
        out.push_str("workers:\n");
        if self.workers.is_empty() {
            out.push_str("  none declared\n");
        }
        for worker in &self.workers {
            let _ = writeln!(
                out,
                "  {} {} (package {}), for {}: {}",
                worker.binary.name,
                worker.version,
                worker.package,
                worker.apps.join(", "),
                worker.binary.describe("serves")
            );
        }
        let pairs: usize = self.apps.iter().map(|a| a.declares.len()).sum();
        if pairs == 0 {
            out.push_str(
                "no package declares worker binaries in [package.metadata.bincrew] workers\n",
            );
        } else if self.problems.is_empty() {
            let _ = writeln!(out, "all {pairs} declared pairs hold");
        } else {
            for problem in &self.problems {
                let _ = writeln!(out, "error: {problem}");
            }
            let _ = writeln!(
                out,
                "{} of {pairs} declared pairs do not hold",
                self.problems.len()
            );
        }
        let binaries = self
            .apps
            .iter()
            .flat_map(|a| &a.binaries)
            .chain(self.workers.iter().map(|w| &w.binary));
        let mut unbuilt = binaries.filter(|b| !b.built).peekable();
        if unbuilt.peek().is_some() {
            let _ = writeln!(
                out,
                "binaries looked for in {}: build the workspace with this profile (and target) to see the workers each serves",
                self.binaries_dir
            );
        } else {
            let _ = writeln!(out, "binaries as built in {}", self.binaries_dir);
        }
        out
    }
}
