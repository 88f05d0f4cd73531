//! The apps and worker binaries of a workspace, as its manifests declare them
//! (`[package.metadata.bincrew] workers = { bin = "req" }`), and whether each declared pair holds.
//!
//! This reads the same declarations as `bincrew-build`'s pairing check, but all of them at once
//! and without failing at the first: `list` reports every pair, `stage` refuses to start when one
//! does not hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cargo_metadata::{DependencyKind, Metadata, MetadataCommand, Package, PackageId};
use semver::{Version, VersionReq};

/// A package that declares worker binaries, or that depends on bincrew and has binaries that
/// are nobody's worker (an app that may serve workers from its own executable).
#[derive(Debug)]
pub struct App {
    pub package: String,
    pub id: PackageId,
    pub version: Version,
    /// Its binary targets, except those declared as workers (by any app).
    pub binaries: Vec<String>,
    /// The worker binaries it declares; empty when it declares none.
    pub workers: Vec<Declared>,
}

/// One declared worker binary of an app.
#[derive(Debug)]
pub struct Declared {
    pub binary: String,
    pub requirement: VersionReq,
    pub provider: Provider,
}

/// What the workspace has for a declared worker binary.
#[derive(Debug)]
pub enum Provider {
    /// The package with a binary target of that name.
    Found {
        package: String,
        id: PackageId,
        version: Version,
    },
    /// No workspace package has a binary target of that name.
    Missing { available: Vec<String> },
}

impl Declared {
    /// Whether the workspace builds this binary at a version the app accepts.
    pub fn holds(&self) -> bool {
        match &self.provider {
            Provider::Found { version, .. } => self.requirement.matches(version),
            Provider::Missing { .. } => false,
        }
    }

    /// Why the pair does not hold and what to do, or `None` when it holds.
    pub fn problem(&self, app: &str) -> Option<String> {
        let binary = &self.binary;
        let req = &self.requirement;
        match &self.provider {
            Provider::Found { .. } if self.holds() => None,
            Provider::Found {
                package, version, ..
            } => Some(format!(
                "{app} requires worker {binary} {req}, but the workspace builds {binary} from package {package} {version}: \
                 bump {package} to a version matching {req}, or change the requirement in {app}'s [package.metadata.bincrew] workers"
            )),
            Provider::Missing { available } => Some(format!(
                "{app} declares worker {binary} {req}, but no package of the workspace has a binary target named {binary} \
                 (binary targets: {}): add it, or remove it from {app}'s [package.metadata.bincrew] workers",
                if available.is_empty() { "none".to_owned() } else { available.join(", ") }
            )),
        }
    }
}

/// A declared worker binary, with the apps that declare it.
#[derive(Debug)]
pub struct WorkerBinary {
    pub binary: String,
    pub package: String,
    pub id: PackageId,
    pub version: Version,
    pub apps: Vec<String>,
}

/// The bincrew view of a workspace.
#[derive(Debug)]
pub struct Workspace {
    /// The workspace's root directory.
    pub root: PathBuf,
    /// Its cargo target dir (honouring `CARGO_TARGET_DIR` and cargo's config).
    pub target_dir: PathBuf,
    pub apps: Vec<App>,
}

/// Why the workspace cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    /// `cargo metadata` failed.
    #[error("cannot read the workspace with cargo metadata (run cargo bincrew inside a cargo workspace, or pass --manifest-path PATH/Cargo.toml)")]
    Metadata(#[source] cargo_metadata::Error),
    /// A declaration is malformed.
    #[error("package {package}: {message}")]
    Declaration { package: String, message: String },
}

impl Workspace {
    /// Reads the workspace of `manifest_path`, or of the current directory.
    pub fn read(manifest_path: Option<&Path>) -> Result<Workspace, WorkspaceError> {
        let mut command = MetadataCommand::new();
        // Only the workspace's own manifests matter: no dependency resolution, no network.
        command.no_deps();
        if let Some(path) = manifest_path {
            command.manifest_path(path);
        }
        let metadata = command.exec().map_err(WorkspaceError::Metadata)?;
        Workspace::from_metadata(&metadata)
    }

    fn from_metadata(metadata: &Metadata) -> Result<Workspace, WorkspaceError> {
        let mut members = metadata.workspace_packages();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let mut available: Vec<String> = members
            .iter()
            .flat_map(|p| p.targets.iter().filter(|t| t.is_bin()))
            .map(|t| t.name.clone())
            .collect();
        available.sort();

        let mut declarations = Vec::new();
        for package in &members {
            if let Some(declared) = declared(package)? {
                declarations.push((*package, declared));
            }
        }
        let declared_binaries: Vec<&str> = declarations
            .iter()
            .flat_map(|(_, d)| d.iter().map(|(bin, _)| bin.as_str()))
            .collect();

        // Packages that use bincrew but declare no workers: their binaries may serve workers
        // from their own executable.
        let users: Vec<&Package> = members
            .iter()
            .copied()
            .filter(|package| {
                !declarations.iter().any(|(p, _)| p.id == package.id)
                    && package
                        .dependencies
                        .iter()
                        .any(|d| d.name == "bincrew" && d.kind == DependencyKind::Normal)
                    && package
                        .targets
                        .iter()
                        .any(|t| t.is_bin() && !declared_binaries.contains(&t.name.as_str()))
            })
            .collect();
        let mut apps: Vec<App> = users
            .into_iter()
            .map(|package| (package, Vec::new()))
            .chain(declarations.iter().cloned())
            .map(|(package, declared)| App {
                package: package.name.to_string(),
                id: package.id.clone(),
                version: package.version.clone(),
                binaries: package
                    .targets
                    .iter()
                    .filter(|t| t.is_bin() && !declared_binaries.contains(&t.name.as_str()))
                    .map(|t| t.name.clone())
                    .collect(),
                workers: declared
                    .iter()
                    .map(|(binary, requirement)| Declared {
                        binary: binary.clone(),
                        requirement: requirement.clone(),
                        provider: members
                            .iter()
                            .find(|p| p.targets.iter().any(|t| t.is_bin() && t.name == *binary))
                            .map_or_else(
                                || Provider::Missing {
                                    available: available.clone(),
                                },
                                |p| Provider::Found {
                                    package: p.name.to_string(),
                                    id: p.id.clone(),
                                    version: p.version.clone(),
                                },
                            ),
                    })
                    .collect(),
            })
            .collect();
        apps.sort_by(|a, b| a.package.cmp(&b.package));
        Ok(Workspace {
            root: metadata.workspace_root.clone().into_std_path_buf(),
            target_dir: metadata.target_directory.clone().into_std_path_buf(),
            apps,
        })
    }

    /// The apps that declare worker binaries.
    pub fn declaring_apps(&self) -> impl Iterator<Item = &App> {
        self.apps.iter().filter(|app| !app.workers.is_empty())
    }

    /// Every declared worker binary the workspace builds, once, with the apps declaring it.
    pub fn workers(&self) -> Vec<WorkerBinary> {
        let mut workers: BTreeMap<&str, WorkerBinary> = BTreeMap::new();
        for app in &self.apps {
            for declared in &app.workers {
                let Provider::Found {
                    package,
                    id,
                    version,
                } = &declared.provider
                else {
                    continue;
                };
                workers
                    .entry(&declared.binary)
                    .or_insert_with(|| WorkerBinary {
                        binary: declared.binary.clone(),
                        package: package.clone(),
                        id: id.clone(),
                        version: version.clone(),
                        apps: Vec::new(),
                    })
                    .apps
                    .push(app.package.clone());
            }
        }
        workers.into_values().collect()
    }

    /// Every pair that does not hold, as a message saying what to do.
    pub fn problems(&self) -> Vec<String> {
        self.apps
            .iter()
            .flat_map(|app| app.workers.iter().filter_map(|d| d.problem(&app.package)))
            .collect()
    }

    /// The requirements the package `package` declares, by binary name.
    pub fn requirements_of(&self, package: &str) -> BTreeMap<String, VersionReq> {
        self.apps
            .iter()
            .filter(|app| app.package == package)
            .flat_map(|app| {
                app.workers
                    .iter()
                    .map(|d| (d.binary.clone(), d.requirement.clone()))
            })
            .collect()
    }
}

/// The `[package.metadata.bincrew] workers` of a package, or `None` when it declares none:
/// read as bincrew-build reads them in build scripts.
fn declared(package: &Package) -> Result<Option<Vec<(String, VersionReq)>>, WorkspaceError> {
    bincrew_build::declared_workers(package).map_err(|e| WorkspaceError::Declaration {
        package: package.name.to_string(),
        message: match e {
            bincrew_build::BuildError::Declaration { message, .. } => message,
            other => other.to_string(),
        },
    })
}
