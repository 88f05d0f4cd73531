//! `cargo bincrew verify DIR`: the files of a deployment directory against its manifest, then
//! each binary started for real and its live identity checked against the manifest and against
//! the apps that use it.
//!
//! Every check runs and every problem is reported, rather than stopping at the first, so that
//! one run says everything that is wrong with a deployment.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use bincrew::BuildInfo;
use serde::Serialize;

use crate::manifest::{self, Entry, Manifest};

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skipped,
}

#[derive(Debug, Serialize)]
pub struct Check {
    /// `file`, `live`, `identity`, `requirement`, `build` or `protocol`.
    pub name: &'static str,
    pub status: Status,
}

/// What verify found about one binary, or about one file the manifest does not list.
#[derive(Debug, Serialize)]
pub struct Row {
    pub file: String,
    /// `app`, `worker`, or `extra` for a file the manifest does not list.
    pub role: &'static str,
    pub package: Option<String>,
    /// The live version when the binary was started, else the manifest's.
    pub version: Option<String>,
    /// The live build id when the binary was started, else the manifest's.
    pub build_id: Option<String>,
    pub checks: Vec<Check>,
    pub passed: bool,
    /// Each failure: what is wrong and what to do.
    pub problems: Vec<String>,
    /// What was not checked, and why.
    pub notes: Vec<String>,
}

/// The whole verification, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub dir: String,
    pub passed: bool,
    pub binaries: Vec<Row>,
    pub summary: String,
}

/// How a listed binary's file compares with the manifest.
enum FileState {
    Intact,
    Missing,
    /// Its SHA-256 is another entry's: it holds that binary.
    Swapped(String),
    Changed {
        size: u64,
        sha256: String,
    },
}

/// The identity a binary reported when started, with the failures of the starts.
#[derive(Default)]
struct Live {
    build: Option<BuildInfo>,
    failures: Vec<String>,
}

/// Verifies `dir` against its manifest, starting each binary with `timeout` for its handshake.
pub fn verify(dir: &Path, timeout: Duration) -> anyhow::Result<Report> {
    let manifest = Manifest::read(dir)?;
    let present = present_files(dir)?;

    let states: Vec<FileState> = manifest
        .binaries
        .iter()
        .map(|entry| file_state(&manifest, entry, present.get(&entry.file)))
        .collect();
    let lives: Vec<Option<Live>> = manifest
        .binaries
        .iter()
        .zip(&states)
        .map(|(entry, state)| match state {
            // A swapped binary is known by its SHA-256; starting it under this entry's worker
            // names would start some other program.
            FileState::Missing | FileState::Swapped(_) => None,
            FileState::Intact | FileState::Changed { .. } if !entry.identity_known() => None,
            FileState::Intact | FileState::Changed { .. } => {
                Some(start_live(&dir.join(&entry.file), entry, timeout))
            }
        })
        .collect();

    let mut rows: Vec<Row> = (0..manifest.binaries.len())
        .map(|index| check_entry(&manifest, index, &states, &lives, dir))
        .collect();
    for (file, digest) in &present {
        if manifest.binaries.iter().any(|e| e.file == *file) {
            continue;
        }
        rows.push(extra_row(&manifest, dir, file, digest.as_ref()));
    }

    let listed = manifest.binaries.len();
    let failed = rows
        .iter()
        .filter(|r| !r.passed && r.role != "extra")
        .count();
    let extra = rows.iter().filter(|r| r.role == "extra").count();
    let passed = failed == 0 && extra == 0;
    let summary = if passed {
        format!(
            "PASS: the {listed} binaries in {} match the manifest, and their live identities match it and each other",
            dir.display()
        )
    } else {
        let mut failures = Vec::new();
        if failed > 0 {
            failures.push(format!("{failed} of {listed} binaries failed"));
        }
        if extra > 0 {
            failures.push(format!("{extra} file(s) not in the manifest"));
        }
        format!("FAIL in {}: {}", dir.display(), failures.join(", "))
    };
    Ok(Report {
        dir: dir.display().to_string(),
        passed,
        binaries: rows,
        summary,
    })
}

/// Every entry of `dir` but the manifest, with its size and SHA-256 (`None` for a directory).
fn present_files(dir: &Path) -> anyhow::Result<BTreeMap<String, Option<(u64, String)>>> {
    let mut present = BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == manifest::FILE {
            continue;
        }
        let path = entry.path();
        let digest = if path.is_dir() {
            None
        } else {
            Some(
                manifest::digest(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )
        };
        present.insert(name, digest);
    }
    Ok(present)
}

fn file_state(
    manifest: &Manifest,
    entry: &Entry,
    present: Option<&Option<(u64, String)>>,
) -> FileState {
    let Some(present) = present else {
        return FileState::Missing;
    };
    let Some((size, sha256)) = present else {
        // A directory where the binary should be.
        return FileState::Changed {
            size: 0,
            sha256: "a directory".to_owned(),
        };
    };
    if *size == entry.size && *sha256 == entry.sha256 {
        return FileState::Intact;
    }
    match manifest
        .binaries
        .iter()
        .find(|other| other.file != entry.file && other.sha256 == *sha256)
    {
        Some(other) => FileState::Swapped(other.file.clone()),
        None => FileState::Changed {
            size: *size,
            sha256: sha256.clone(),
        },
    }
}

/// Starts the binary for each worker name it serves (or, serving none, probes it), completing
/// the handshake and shutting it down.
fn start_live(path: &Path, entry: &Entry, timeout: Duration) -> Live {
    let mut live = Live::default();
    let file = &entry.file;
    if entry.serves.is_empty() {
        match crate::probe::probe_binary(path, timeout) {
            Ok(probe) => {
                if !probe.workers.is_empty() {
                    live.failures.push(format!(
                        "{file}: serves workers {} that the manifest does not list: stage again",
                        probe.workers.join(", ")
                    ));
                }
                live.build = Some(probe.build);
            }
            Err(e) => live.failures.push(format!(
                "{file}: it no longer answers the probe it answered when staged: {}: redeploy {file} from the staged build",
                chain(&e)
            )),
        }
        return live;
    }
    for name in &entry.serves {
        match bincrew::probe_worker(path, name, timeout) {
            Ok(probe) => {
                if live.build.is_none() {
                    live.build = Some(probe.build);
                }
            }
            Err(e) => live.failures.push(format!(
                "{file}: starting worker `{name}` failed: {}: redeploy {file} from the staged build",
                chain(&e)
            )),
        }
    }
    live
}

fn check_entry(
    manifest: &Manifest,
    index: usize,
    states: &[FileState],
    lives: &[Option<Live>],
    dir: &Path,
) -> Row {
    let entry = &manifest.binaries[index];
    let file = &entry.file;
    let live = lives[index].as_ref();
    let live_build = live.and_then(|l| l.build.as_ref());
    let mut checks = Vec::new();
    let mut problems = Vec::new();
    let mut notes = Vec::new();

    // The file.
    let file_ok = match &states[index] {
        FileState::Intact => true,
        FileState::Missing => {
            problems.push(format!(
                "{file}: missing from {}: copy it from the staged build, or stage again",
                dir.display()
            ));
            false
        }
        FileState::Swapped(other) => {
            problems.push(format!(
                "{file}: swapped: it holds the binary of {other} (its SHA-256 is the one the manifest has for {other}): put {file}'s own binary back"
            ));
            false
        }
        FileState::Changed { size, sha256 } => {
            problems.push(format!(
                "{file}: changed since staging (size {size}, SHA-256 {}; the manifest has size {}, SHA-256 {}): redeploy {file} from the build the manifest describes, or stage again",
                short(sha256),
                entry.size,
                short(&entry.sha256)
            ));
            false
        }
    };
    checks.push(check("file", Some(file_ok)));

    // The live identity against the manifest.
    match live {
        None => {
            checks.push(check("live", None));
            if !entry.identity_known() && !matches!(states[index], FileState::Missing) {
                notes.push(format!(
                    "{file}: identity unknown, checked by SHA-256 only ({})",
                    entry
                        .probe_error
                        .as_deref()
                        .unwrap_or("it did not answer the probe")
                ));
            }
        }
        Some(live) => {
            checks.push(check("live", Some(live.failures.is_empty())));
            problems.extend(live.failures.iter().cloned());
        }
    }
    if let Some(build) = live_build {
        let same = build.package == entry.package
            && build.version == entry.version
            && build.build_id == entry.build_id
            && entry.target.as_ref().is_none_or(|t| *t == build.target);
        if !same {
            problems.push(format!(
                "{file}: is {} but the manifest expects {}: redeploy {file} from the build the manifest describes",
                identity(&build.package, &build.version, build.build_id.as_deref(), Some(&build.target)),
                identity(&entry.package, &entry.version, entry.build_id.as_deref(), entry.target.as_deref()),
            ));
        }
        checks.push(check("identity", Some(same)));
    }

    // This binary as the worker of the apps that declare it: as it reported itself, or as the
    // manifest describes it when the file is the one staged. A file that is not is already
    // failed, and what it is, is not known.
    let version = live_build.map_or(&entry.version, |b| &b.version);
    let build_id = live_build.map_or(entry.build_id.as_deref(), |b| b.build_id.as_deref());
    let known = live_build.is_some() || matches!(states[index], FileState::Intact);
    let mut requirement_ok = None;
    let mut build_ok = None;
    let mut protocol_ok = None;
    for (app_index, app) in manifest.binaries.iter().enumerate() {
        let Some(req) = app.requires.get(&entry.binary) else {
            continue;
        };
        if !known || app_index == index {
            continue;
        }
        let app_file = &app.file;
        let app_live = lives[app_index].as_ref().and_then(|l| l.build.as_ref());
        if req.matches(version) {
            requirement_ok.get_or_insert(true);
        } else {
            requirement_ok = Some(false);
            problems.push(format!(
                "{file}: is version {version}, but {app_file} requires {} {req}: redeploy {file} from {app_file}'s build (a version matching {req})",
                entry.binary
            ));
        }
        let app_build_id = app_live.map_or(app.build_id.as_deref(), |b| b.build_id.as_deref());
        match (app_build_id, build_id) {
            (None, _) => {}
            (Some(a), Some(w)) if a == w => {
                build_ok.get_or_insert(true);
            }
            (Some(a), Some(w)) => {
                build_ok = Some(false);
                problems.push(format!(
                    "{file}: built by another build (build id {w}) than {app_file} (build id {a}): redeploy {file} from the same build as {app_file}"
                ));
            }
            (Some(a), None) => {
                build_ok = Some(false);
                problems.push(format!(
                    "{file}: carries no build id, but {app_file} comes from build {a}: stamp {file} with bincrew-build and redeploy it from the same build as {app_file}"
                ));
            }
        }
        if let (Some(w), Some(a)) = (live_build, app_live) {
            if w.protocol == a.protocol && w.wire == a.wire {
                protocol_ok.get_or_insert(true);
            } else {
                protocol_ok = Some(false);
                problems.push(format!(
                    "{file}: speaks bincrew protocol {} over {} (bincrew {}), but {app_file} speaks protocol {} over {} (bincrew {}): rebuild both against one bincrew and redeploy them together",
                    w.protocol, w.wire, w.bincrew_version, a.protocol, a.wire, a.bincrew_version
                ));
            }
        }
    }
    if let Some(ok) = requirement_ok {
        checks.push(check("requirement", Some(ok)));
    }
    if let Some(ok) = build_ok {
        checks.push(check("build", Some(ok)));
    }
    if let Some(ok) = protocol_ok {
        checks.push(check("protocol", Some(ok)));
    }

    // The workers this binary declares must be in the deployment.
    for (binary, req) in &entry.requires {
        if manifest.entry(binary).is_none() {
            problems.push(format!(
                "{file}: requires worker {binary} {req}, but the manifest lists no binary {binary}: stage again"
            ));
        }
    }

    Row {
        file: file.clone(),
        role: entry.role.as_str(),
        package: Some(entry.package.clone()),
        version: Some(version.to_string()),
        build_id: build_id.map(str::to_owned),
        checks,
        passed: problems.is_empty(),
        problems,
        notes,
    }
}

fn extra_row(manifest: &Manifest, dir: &Path, file: &str, digest: Option<&(u64, String)>) -> Row {
    let copy_of = digest.and_then(|(_, sha)| manifest.binaries.iter().find(|e| e.sha256 == *sha));
    let what = match copy_of {
        Some(entry) => format!(" (a copy of {})", entry.file),
        None if digest.is_none() => " (a directory)".to_owned(),
        None => String::new(),
    };
    Row {
        file: file.to_owned(),
        role: "extra",
        package: None,
        version: None,
        build_id: None,
        checks: vec![check("file", Some(false))],
        passed: false,
        problems: vec![format!(
            "{file}: extra: not in the manifest{what}: remove it from {}, or stage again",
            dir.display()
        )],
        notes: Vec::new(),
    }
}

fn check(name: &'static str, ok: Option<bool>) -> Check {
    Check {
        name,
        status: match ok {
            Some(true) => Status::Pass,
            Some(false) => Status::Fail,
            None => Status::Skipped,
        },
    }
}

fn identity(
    package: &str,
    version: &semver::Version,
    build_id: Option<&str>,
    target: Option<&str>,
) -> String {
    let mut text = format!(
        "{package} {version} (build id {}",
        build_id.unwrap_or("none")
    );
    if let Some(target) = target {
        let _ = write!(text, ", {target}");
    }
    text.push(')');
    text
}

/// Enough of a SHA-256 to tell two apart in a message.
fn short(sha256: &str) -> String {
    match sha256.get(..16) {
        Some(prefix) if sha256.len() > 16 => format!("{prefix}…"),
        _ => sha256.to_owned(),
    }
}

/// An error and its causes, one after the other.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

impl Report {
    /// The table `verify` prints.
    pub fn render(&self) -> String {
        let header = ["BINARY", "ROLE", "VERSION", "BUILD ID", "RESULT", "CHECKS"];
        let cells: Vec<[String; 6]> = self
            .binaries
            .iter()
            .map(|row| {
                let checks = row
                    .checks
                    .iter()
                    .map(|c| match c.status {
                        Status::Pass => format!("{} ok", c.name),
                        Status::Fail => format!("{} FAIL", c.name),
                        Status::Skipped => format!("{} skipped", c.name),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                [
                    row.file.clone(),
                    row.role.to_owned(),
                    row.version.clone().unwrap_or_else(|| "-".to_owned()),
                    row.build_id.clone().unwrap_or_else(|| "-".to_owned()),
                    if row.passed { "PASS" } else { "FAIL" }.to_owned(),
                    checks,
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |out: &mut String, cells: &[&str]| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        let mut out = String::new();
        line(&mut out, &header);
        for (row, cells) in self.binaries.iter().zip(&cells) {
            line(&mut out, &cells.each_ref().map(String::as_str));
            for problem in &row.problems {
                let _ = writeln!(out, "    error: {problem}");
            }
            for note in &row.notes {
                let _ = writeln!(out, "    note: {note}");
            }
        }
        out.push_str(&self.summary);
        out.push('\n');
        out
    }
}
