//! `cargo bincrew stage`: build the apps and their worker binaries, put them side by side in a
//! deployment directory with a manifest, and verify it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use cargo_metadata::{Message, PackageId};
use semver::{Version, VersionReq};

use crate::manifest::{self, Entry, Manifest, Role};
use crate::profile::Profile;
use crate::verify::{self, chain};
use crate::workspace::Workspace;

/// What `stage` was asked to do.
pub struct Options {
    pub out: PathBuf,
    pub profile: Profile,
    pub target: Option<String>,
    pub manifest_path: Option<PathBuf>,
    pub force: bool,
    pub timeout: Duration,
    /// Passed to `cargo build` as they are.
    pub cargo_args: Vec<OsString>,
}

/// One binary to stage.
struct Planned {
    binary: String,
    role: Role,
    package: String,
    id: PackageId,
    version: Version,
    requires: BTreeMap<String, VersionReq>,
}

/// Stages and verifies; `Ok(false)` when the verification failed (it printed why).
pub fn stage(options: &Options) -> anyhow::Result<bool> {
    let workspace = Workspace::read(options.manifest_path.as_deref())?;
    if workspace.declaring_apps().next().is_none() {
        bail!("no package of the workspace declares worker binaries in [package.metadata.bincrew] workers: there is nothing to stage");
    }
    let problems = workspace.problems();
    if !problems.is_empty() {
        bail!(
            "the workspace's apps and workers do not pair:\n  {}",
            problems.join("\n  ")
        );
    }
    let plan = plan(&workspace)?;
    prepare_out(&options.out, options.force)?;

    println!("building…");
    let built = build(options, &plan)?;

    let mut entries = Vec::new();
    for planned in &plan {
        let file = format!("{}{}", planned.binary, std::env::consts::EXE_SUFFIX);
        let Some(source) = built.get(&planned.binary) else {
            bail!(
                "cargo build did not report building binary {} of package {}",
                planned.binary,
                planned.package
            );
        };
        println!("copying {file}");
        let staged = options.out.join(&file);
        std::fs::copy(source, &staged)
            .with_context(|| format!("cannot copy {} to {}", source.display(), staged.display()))?;
        entries.push(describe(planned, file, &staged, options.timeout)?);
    }

    println!("writing manifest");
    let manifest = Manifest {
        format: manifest::FORMAT,
        generator: concat!("cargo-bincrew ", env!("CARGO_PKG_VERSION")).to_owned(),
        profile: options.profile.dir().to_owned(),
        target: options.target.clone(),
        binaries: entries,
    };
    manifest.write(&options.out)?;

    println!("verifying");
    let report = verify::verify(&options.out, options.timeout)?;
    print!("{}", report.render());
    Ok(report.passed)
}

/// The app binaries and the declared worker binaries, each once.
fn plan(workspace: &Workspace) -> anyhow::Result<Vec<Planned>> {
    let mut plan: Vec<Planned> = Vec::new();
    for app in workspace.declaring_apps() {
        for binary in &app.binaries {
            plan.push(Planned {
                binary: binary.clone(),
                role: Role::App,
                package: app.package.clone(),
                id: app.id.clone(),
                version: app.version.clone(),
                requires: workspace.requirements_of(&app.package),
            });
        }
    }
    for worker in workspace.workers() {
        plan.push(Planned {
            requires: workspace.requirements_of(&worker.package),
            binary: worker.binary,
            role: Role::Worker,
            package: worker.package,
            id: worker.id,
            version: worker.version,
        });
    }
    for (i, a) in plan.iter().enumerate() {
        if let Some(b) = plan[i + 1..].iter().find(|b| b.binary == a.binary) {
            bail!(
                "packages {} and {} both have a binary named {}: they would overwrite each other in one directory; rename one",
                a.package,
                b.package,
                a.binary
            );
        }
    }
    Ok(plan)
}

/// Creates `out`, or empties it with `force`.
fn prepare_out(out: &Path, force: bool) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(out) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return std::fs::create_dir_all(out)
                .with_context(|| format!("cannot create {}", out.display()));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot use {} as the output directory", out.display()))
        }
    };
    let entries: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", out.display()))?;
    if entries.is_empty() {
        return Ok(());
    }
    if !force {
        bail!(
            "{} exists and is not empty: choose a new or empty directory, or pass --force to replace the files in it",
            out.display()
        );
    }
    // Only files: a directory in there is more than a previous staging left, so it stays the
    // user's to remove.
    if let Some(dir) = entries.iter().find(|p| p.is_dir()) {
        bail!(
            "{} holds directory {}, which --force does not remove: remove it, or choose another output directory",
            out.display(),
            dir.display()
        );
    }
    for path in entries {
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

/// Runs `cargo build` for the planned packages; the executables it reports, by binary name.
fn build(options: &Options, plan: &[Planned]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(&cargo);
    // The JSON messages say where each binary went, whatever the target dir, target and profile.
    command
        .arg("build")
        .arg("--message-format=json-render-diagnostics");
    let mut packages: Vec<&str> = plan.iter().map(|p| p.package.as_str()).collect();
    packages.sort_unstable();
    packages.dedup();
    for package in packages {
        command.args(["-p", package]);
    }
    command.args(options.profile.cargo_args());
    if let Some(target) = &options.target {
        command.args(["--target", target]);
    }
    if let Some(path) = &options.manifest_path {
        command.arg("--manifest-path").arg(path);
    }
    command.args(&options.cargo_args);
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;

    let ids: Vec<&PackageId> = plan.iter().map(|p| &p.id).collect();
    let mut built = BTreeMap::new();
    let stdout = child.stdout.take().context("cargo build's output")?;
    for message in Message::parse_stream(BufReader::new(stdout)) {
        let message = message.context("cannot read cargo build's output")?;
        if let Message::CompilerArtifact(artifact) = message {
            if let (true, true, Some(exe)) = (
                artifact.target.is_bin(),
                ids.contains(&&artifact.package_id),
                artifact.executable,
            ) {
                built.insert(artifact.target.name, exe.into_std_path_buf());
            }
        }
    }
    let status = child.wait().context("cannot wait for cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status}): see its errors above");
    }
    Ok(built)
}

/// The manifest entry of a staged binary: its digest, and its identity as it reports it.
fn describe(
    planned: &Planned,
    file: String,
    staged: &Path,
    timeout: Duration,
) -> anyhow::Result<Entry> {
    let (size, sha256) =
        manifest::digest(staged).with_context(|| format!("cannot read {}", staged.display()))?;
    let mut entry = Entry {
        file,
        binary: planned.binary.clone(),
        role: planned.role,
        package: planned.package.clone(),
        version: planned.version.clone(),
        build_id: None,
        target: None,
        size,
        sha256,
        requires: planned.requires.clone(),
        serves: Vec::new(),
        probe_error: None,
    };
    let file = &entry.file;
    println!("probing {file}");
    match crate::probe::probe_binary(staged, timeout) {
        Ok(probe) => {
            let build = &probe.build;
            if build.package != planned.package || build.version != planned.version {
                bail!(
                    "{file}: the built binary says it is {} {}, but it is binary {} of package {} {}: call bincrew::init!() in the binary's own crate",
                    build.package,
                    build.version,
                    planned.binary,
                    planned.package,
                    planned.version
                );
            }
            if planned.role == Role::Worker && probe.workers.is_empty() {
                bail!(
                    "{file}: declared as a worker binary, but it serves no worker: register its workers with bincrew::Workers in its main"
                );
            }
            entry.build_id = build.build_id.clone();
            entry.target = Some(build.target.clone());
            entry.serves = probe.workers;
        }
        Err(e) if planned.role == Role::Worker => bail!(
            "{file}: declared as a worker binary, but it does not answer as one: {}: its main must call bincrew::init!() and serve its workers with bincrew::Workers",
            chain(&e)
        ),
        Err(e) => {
            let reason = chain(&e);
            println!(
                "note: {file}: its identity is unknown ({reason}); it is recorded without a build id and verify checks it by SHA-256 only. \
                 To record it, call bincrew::Workers::run (even with no workers) at the top of its main"
            );
            entry.probe_error = Some(reason);
        }
    }
    Ok(entry)
}
