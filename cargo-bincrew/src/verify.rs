//! `cargo bincrew verify DIR`: the files of a deployment directory against its manifest, then
//! each binary started for real and its live identity checked against the manifest and against
//! the apps that use it.
//!
//! Every check runs and every problem is reported, rather than stopping at the first, so that
//! one run says everything that is wrong with a deployment. A worker is judged as its apps judge
//! it when they start it (the library's [`bincrew::Compat::check`]): what they refuse is a
//! failure, what they accept from another build a warning, which does not fail the verification. The checks of one binary are in
//! [`checks`], functions of plain data; this module reads the directory, starts the binaries and
//! prints the report.

mod checks;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use self::checks::{check_entry, file_state, FileState, Live, Reported, Start};
use crate::manifest::{self, Entry, Manifest};

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// It holds for the runtime, with something worth knowing: see the row's warnings.
    Warn,
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
    /// What holds for the runtime but is worth knowing, and why it holds; not failures.
    pub warnings: Vec<String>,
    /// What was not checked, and why; what verify learned but cannot judge.
    pub notes: Vec<String>,
    /// The workers the binary was started as, with the types they reported.
    pub workers: Vec<Served>,
}

/// A worker a binary serves, as starting it reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Served {
    /// The worker name.
    pub name: String,
    /// The request type it takes (its Rust type name).
    pub request_type: String,
    /// The response type it answers with.
    pub response_type: String,
}

/// The whole verification, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub dir: String,
    pub passed: bool,
    pub binaries: Vec<Row>,
    pub summary: String,
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
    let warnings: usize = rows.iter().map(|r| r.warnings.len()).sum();
    let passed = failed == 0 && extra == 0;
    let summary = if passed && warnings == 0 {
        format!(
            "PASS: the {listed} binaries in {} match the manifest, and their live identities match it and each other",
            dir.display()
        )
    } else if passed {
        format!(
            "PASS with {warnings} warning(s): the {listed} binaries in {} match the manifest, and each app accepts its workers",
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

/// Starts the binary for each worker name it serves (or, serving none, probes it), completing
/// the handshake and shutting it down.
fn start_live(path: &Path, entry: &Entry, timeout: Duration) -> Live {
    if entry.serves.is_empty() {
        let probe = crate::probe::probe_binary(path, timeout)
            .map(|probe| (Reported::from(&probe.build), probe.workers))
            .map_err(|e| chain(&e));
        return Live::from_probe(&entry.file, probe);
    }
    let starts = entry.serves.iter().map(|name| {
        let start = bincrew::probe_worker(path, name, timeout)
            .map(|probe| Start {
                build: Reported::from(&probe.build),
                request_type: probe.request_type,
                response_type: probe.response_type,
            })
            .map_err(|e| chain(&e));
        (name.as_str(), start)
    });
    Live::from_starts(&entry.file, starts)
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
        warnings: Vec::new(),
        notes: Vec::new(),
        workers: Vec::new(),
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
                        Status::Warn => format!("{} WARN", c.name),
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
                    match (row.passed, row.warnings.is_empty()) {
                        (false, _) => "FAIL",
                        (true, false) => "WARN",
                        (true, true) => "PASS",
                    }
                    .to_owned(),
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
            for warning in &row.warnings {
                let _ = writeln!(out, "    warning: {warning}");
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
