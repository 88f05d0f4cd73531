//! The checks `verify` makes of one listed binary, each a function of plain data (the manifest,
//! what is in the directory, what the binary reported when started), so that each can be tested
//! without a deployment or a process:
//!
//! - [`check_file`]: the file against the manifest (missing, swapped, changed);
//! - [`Live::from_probe`], [`Live::from_starts`] and [`check_live`]: the starts of the binary;
//! - [`check_identity`]: the identity it reported against the manifest's;
//! - [`judge`], [`check_requirement`], [`check_build`] and [`check_protocol`]: the binary as the
//!   worker of each app that declares it, judged by the policy the app starts it with
//!   ([`bincrew::Compat::check`], as the handshake judges it);
//! - [`missing_workers`]: the workers the binary declares, against the deployment.
//!
//! [`check_entry`] runs them all and makes the binary's [`Row`]. Reading the directory and
//! starting the binaries are `verify`'s.

use std::fmt::Write as _;
use std::path::Path;

use bincrew::{BuildInfo, Compat, MismatchKind};
use semver::{Version, VersionReq};

use super::{check, Check, Row, Served, Status};
use crate::manifest::{Entry, Manifest};

/// How a listed binary's file compares with the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum FileState {
    Intact,
    Missing,
    /// Its SHA-256 is another entry's: it holds that binary.
    Swapped(String),
    Changed {
        size: u64,
        sha256: String,
    },
}

/// The identity a binary reported when started: the part of its [`BuildInfo`] that verify
/// checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Reported {
    pub(super) package: String,
    pub(super) version: Version,
    pub(super) build_id: Option<String>,
    pub(super) target: String,
    pub(super) bincrew_version: String,
    pub(super) protocol: u32,
    pub(super) wire: String,
}

impl From<&BuildInfo> for Reported {
    fn from(build: &BuildInfo) -> Reported {
        Reported {
            package: build.package.clone(),
            version: build.version.clone(),
            build_id: build.build_id.clone(),
            target: build.target.clone(),
            bincrew_version: build.bincrew_version.clone(),
            protocol: build.protocol,
            wire: build.wire.clone(),
        }
    }
}

/// What one start of a worker that succeeded reported: the binary's identity and the worker's
/// request and response types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Start {
    pub(super) build: Reported,
    pub(super) request_type: String,
    pub(super) response_type: String,
}

/// What starting a binary found: the identity it reported, the types of each worker it started
/// as, and each start that failed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Live {
    pub(super) build: Option<Reported>,
    pub(super) served: Vec<Served>,
    pub(super) failures: Vec<String>,
}

impl Live {
    /// What the probe of `file`, a binary the manifest lists as serving no worker, found: the
    /// identity it reported with the worker names it serves, or why it did not answer.
    pub(super) fn from_probe(file: &str, probe: Result<(Reported, Vec<String>), String>) -> Live {
        let mut live = Live::default();
        match probe {
            Ok((build, workers)) => {
                if !workers.is_empty() {
                    live.failures.push(format!(
                        "{file}: serves workers {} that the manifest does not list: stage again",
                        workers.join(", ")
                    ));
                }
                live.build = Some(build);
            }
            Err(error) => live.failures.push(format!(
                "{file}: it no longer answers the probe it answered when staged: {error}: redeploy {file} from the staged build"
            )),
        }
        live
    }

    /// What starting `file` as each worker name it serves found: the identity the first start
    /// that succeeded reported, the types of each worker that started, and why each other one
    /// failed. Takes the starts as they are made, one after the other.
    pub(super) fn from_starts<'a>(
        file: &str,
        starts: impl IntoIterator<Item = (&'a str, Result<Start, String>)>,
    ) -> Live {
        let mut live = Live::default();
        for (name, start) in starts {
            match start {
                Ok(start) => {
                    live.served.push(Served {
                        name: name.to_owned(),
                        request_type: start.request_type,
                        response_type: start.response_type,
                    });
                    if live.build.is_none() {
                        live.build = Some(start.build);
                    }
                }
                Err(error) => live.failures.push(format!(
                    "{file}: starting worker `{name}` failed: {error}: redeploy {file} from the staged build"
                )),
            }
        }
        live
    }
}

/// One binary as the checks between an app and its worker see it: as it reported itself when
/// started, else as the manifest describes it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Side<'a> {
    pub(super) entry: &'a Entry,
    pub(super) live: Option<&'a Reported>,
}

impl<'a> Side<'a> {
    fn version(self) -> &'a Version {
        self.live.map_or(&self.entry.version, |b| &b.version)
    }

    fn build_id(self) -> Option<&'a str> {
        self.live
            .map_or(self.entry.build_id.as_deref(), |b| b.build_id.as_deref())
    }

    /// Its identity as the handshake would see it, as far as it is known.
    fn build_info(self) -> BuildInfo {
        let mut info = BuildInfo::new(&self.entry.package, self.version().clone());
        info.build_id = self.build_id().map(str::to_owned);
        if let Some(live) = self.live {
            info.target.clone_from(&live.target);
            info.bincrew_version.clone_from(&live.bincrew_version);
            info.protocol = live.protocol;
            info.wire.clone_from(&live.wire);
        }
        info
    }
}

/// How an app judges one of its workers: the policy it starts it with, and what that policy
/// says of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Judgement {
    /// The requirement the app declares for the worker binary.
    pub(super) requirement: VersionReq,
    /// `Err` holds the kind of mismatch and what to do, as the handshake says them.
    pub(super) verdict: Result<(), (MismatchKind, String)>,
}

impl Judgement {
    pub(super) fn accepted(&self) -> bool {
        self.verdict.is_ok()
    }
}

/// How `app` judges `worker` when it starts it: by the policy the runtime gives a declared
/// worker binary when the app chooses none, [`Compat::Semver`] of the requirement the app
/// declares (embedded in it by bincrew-build), checked by the library's own
/// [`Compat::check`]. The protocol is left to [`check_protocol`], which compares it only when
/// both sides reported theirs.
pub(super) fn judge(worker: Side<'_>, app: Side<'_>, requirement: &VersionReq) -> Judgement {
    let worker_info = worker.build_info();
    let mut app_info = app.build_info();
    app_info.protocol = worker_info.protocol;
    app_info.wire.clone_from(&worker_info.wire);
    app_info
        .bincrew_version
        .clone_from(&worker_info.bincrew_version);
    Judgement {
        requirement: requirement.clone(),
        verdict: Compat::Semver(requirement.clone()).check(&app_info, &worker_info),
    }
}

/// How a check that can pass with a warning came out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Pass,
    /// It holds for the runtime, but is worth knowing: what and why.
    Warn(String),
    /// What is wrong and what to do.
    Fail(String),
}

/// How `entry`'s file compares with the manifest, given what the directory holds under its
/// name: nothing (`None`), a directory (`Some(None)`), or a file of this size and SHA-256.
pub(super) fn file_state(
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

/// The file against the manifest: `Err` says what is wrong with it and what to do.
pub(super) fn check_file(entry: &Entry, state: &FileState, dir: &Path) -> Result<(), String> {
    let file = &entry.file;
    match state {
        FileState::Intact => Ok(()),
        FileState::Missing => Err(format!(
            "{file}: missing from {}: copy it from the staged build, or stage again",
            dir.display()
        )),
        FileState::Swapped(other) => Err(format!(
            "{file}: swapped: it holds the binary of {other} (its SHA-256 is the one the manifest has for {other}): put {file}'s own binary back"
        )),
        FileState::Changed { size, sha256 } => Err(format!(
            "{file}: changed since staging (size {size}, SHA-256 {}; the manifest has size {}, SHA-256 {}): redeploy {file} from the build the manifest describes, or stage again",
            short(sha256),
            entry.size,
            short(&entry.sha256)
        )),
    }
}

/// The starts of the binary: `None` when it was not started, else `Err` with each failed start.
pub(super) fn check_live(live: Option<&Live>) -> Option<Result<(), &[String]>> {
    let live = live?;
    if live.failures.is_empty() {
        Some(Ok(()))
    } else {
        Some(Err(&live.failures))
    }
}

/// Why a binary that was not started was checked by its SHA-256 only: the manifest does not know
/// what it is. `None` when it is known, or when there is no file to check.
pub(super) fn identity_unknown(entry: &Entry, state: &FileState) -> Option<String> {
    if entry.identity_known() || matches!(state, FileState::Missing) {
        return None;
    }
    Some(format!(
        "{}: identity unknown, checked by SHA-256 only ({})",
        entry.file,
        entry
            .probe_error
            .as_deref()
            .unwrap_or("it did not answer the probe")
    ))
}

/// The identity the binary reported against the one the manifest records for it (its target
/// only when the manifest records one).
pub(super) fn check_identity(entry: &Entry, build: &Reported) -> Result<(), String> {
    let same = build.package == entry.package
        && build.version == entry.version
        && build.build_id == entry.build_id
        && entry.target.as_ref().is_none_or(|t| *t == build.target);
    if same {
        return Ok(());
    }
    let file = &entry.file;
    Err(format!(
        "{file}: is {} but the manifest expects {}: redeploy {file} from the build the manifest describes",
        identity(&build.package, &build.version, build.build_id.as_deref(), Some(&build.target)),
        identity(&entry.package, &entry.version, entry.build_id.as_deref(), entry.target.as_deref()),
    ))
}

/// The worker's version against the policy the app judges it by: `Err` when the app refuses it
/// at start.
pub(super) fn check_requirement(
    worker: Side<'_>,
    app: Side<'_>,
    judgement: &Judgement,
) -> Result<(), String> {
    let Err((_, fix)) = &judgement.verdict else {
        return Ok(());
    };
    let file = &worker.entry.file;
    let app_file = &app.entry.file;
    Err(format!(
        "{file}: is version {}, but {app_file} requires {} {}, so {app_file} refuses it at start: {fix}",
        worker.version(),
        worker.entry.binary,
        judgement.requirement
    ))
}

/// The worker's build id against the app's: a warning when they differ but the app accepts the
/// worker all the same (as the runtime does), a failure when it does not. `None` when the app
/// carries no build id, so that there is nothing to compare.
pub(super) fn check_build(
    worker: Side<'_>,
    app: Side<'_>,
    judgement: &Judgement,
) -> Option<Verdict> {
    let file = &worker.entry.file;
    let app_file = &app.entry.file;
    let (a, w) = (app.build_id()?, worker.build_id());
    if w == Some(a) {
        return Some(Verdict::Pass);
    }
    if judgement.accepted() {
        let differs = match w {
            Some(w) => {
                format!("built by another build (build id {w}) than {app_file} (build id {a})")
            }
            None => format!(
                "carries no build id, so nothing shows it comes from {app_file}'s build ({a})"
            ),
        };
        return Some(Verdict::Warn(format!(
            "{file}: {differs}, but {app_file} accepts it: it starts {} under the requirement it declares, {} (Compat::Semver, its default), which {file} {} matches. \
             Their request and response types are checked when {app_file} starts it; to be sure they agree, redeploy {file} from the same build as {app_file}",
            worker.entry.binary,
            judgement.requirement,
            worker.version()
        )));
    }
    Some(Verdict::Fail(match w {
        Some(w) => format!(
            "{file}: built by another build (build id {w}) than {app_file} (build id {a}): redeploy {file} from the same build as {app_file}"
        ),
        None => format!(
            "{file}: carries no build id, but {app_file} comes from build {a}: stamp {file} with bincrew-build and redeploy it from the same build as {app_file}"
        ),
    }))
}

/// The bincrew protocol and wire format the worker speaks against the app's: `None` unless both
/// were started, since the manifest does not record them.
pub(super) fn check_protocol(worker: Side<'_>, app: Side<'_>) -> Option<Result<(), String>> {
    let (w, a) = (worker.live?, app.live?);
    if w.protocol == a.protocol && w.wire == a.wire {
        return Some(Ok(()));
    }
    Some(Err(format!(
        "{}: speaks bincrew protocol {} over {} (bincrew {}), but {} speaks protocol {} over {} (bincrew {}): rebuild both against one bincrew and redeploy them together",
        worker.entry.file,
        w.protocol,
        w.wire,
        w.bincrew_version,
        app.entry.file,
        a.protocol,
        a.wire,
        a.bincrew_version
    )))
}

/// The workers `entry` declares that the manifest lists no binary for, each as a problem.
pub(super) fn missing_workers(manifest: &Manifest, entry: &Entry) -> Vec<String> {
    entry
        .requires
        .iter()
        .filter(|(binary, _)| manifest.entry(binary).is_none())
        .map(|(binary, req)| {
            format!(
                "{}: requires worker {binary} {req}, but the manifest lists no binary {binary}: stage again",
                entry.file
            )
        })
        .collect()
}

/// The checks of one row as they are made, and what they found.
#[derive(Debug, Default)]
struct Findings {
    checks: Vec<Check>,
    problems: Vec<String>,
    warnings: Vec<String>,
    notes: Vec<String>,
}

impl Findings {
    /// Adds check `name`, with its problem when it failed.
    fn record(&mut self, name: &'static str, result: Result<(), String>) {
        let ok = self.take(result);
        self.checks.push(check(name, Some(ok)));
    }

    /// Keeps the problem of a failed check; says whether it passed.
    fn take(&mut self, result: Result<(), String>) -> bool {
        match result {
            Ok(()) => true,
            Err(problem) => {
                self.problems.push(problem);
                false
            }
        }
    }

    /// Keeps the warning or the problem of a check; its status.
    fn take_verdict(&mut self, verdict: Verdict) -> Status {
        match verdict {
            Verdict::Pass => Status::Pass,
            Verdict::Warn(warning) => {
                self.warnings.push(warning);
                Status::Warn
            }
            Verdict::Fail(problem) => {
                self.problems.push(problem);
                Status::Fail
            }
        }
    }
}

/// A check made once for each app that declares the binary: its worst status over the apps
/// (a failure over a warning over a pass), and left out of the row when it was made for none.
#[derive(Debug, Default)]
struct PerApp(Option<Status>);

impl PerApp {
    fn add(&mut self, status: Status) {
        let rank = |s: Status| match s {
            Status::Pass | Status::Skipped => 0,
            Status::Warn => 1,
            Status::Fail => 2,
        };
        self.0 = Some(match self.0 {
            Some(seen) if rank(seen) >= rank(status) => seen,
            _ => status,
        });
    }

    fn add_ok(&mut self, ok: bool) {
        self.add(if ok { Status::Pass } else { Status::Fail });
    }
}

/// What the row says of the types of the workers the binary was started as.
fn served_notes(file: &str, served: &[Served]) -> Vec<String> {
    if served.is_empty() {
        return Vec::new();
    }
    let mut notes: Vec<String> = served
        .iter()
        .map(|s| {
            format!(
                "{file}: worker `{}` takes {} and answers {}",
                s.name, s.request_type, s.response_type
            )
        })
        .collect();
    notes.push(format!(
        "{file}: request/response types are checked by the handshake when the app starts the worker: verify cannot know which types an app uses"
    ));
    notes
}

/// Runs every check of entry `index` of the manifest, given what each listed file is
/// (`states`) and what starting each binary found (`lives`, `None` when it was not started).
pub(super) fn check_entry(
    manifest: &Manifest,
    index: usize,
    states: &[FileState],
    lives: &[Option<Live>],
    dir: &Path,
) -> Row {
    let entry = &manifest.binaries[index];
    let state = &states[index];
    let live = lives[index].as_ref();
    let worker = Side {
        entry,
        live: live.and_then(|l| l.build.as_ref()),
    };
    let mut found = Findings::default();

    found.record("file", check_file(entry, state, dir));
    match check_live(live) {
        None => {
            found.checks.push(check("live", None));
            found.notes.extend(identity_unknown(entry, state));
        }
        Some(Ok(())) => found.checks.push(check("live", Some(true))),
        Some(Err(failures)) => {
            found.checks.push(check("live", Some(false)));
            found.problems.extend(failures.iter().cloned());
        }
    }
    if let Some(build) = worker.live {
        found.record("identity", check_identity(entry, build));
    }

    // This binary as the worker of the apps that declare it. A file that is not the one staged
    // and was not started is already failed, and what it is, is not known.
    let known = worker.live.is_some() || matches!(state, FileState::Intact);
    let mut requirement = PerApp::default();
    let mut build = PerApp::default();
    let mut protocol = PerApp::default();
    let mut judged = false;
    for (app_index, app) in manifest.binaries.iter().enumerate() {
        let Some(req) = app.requires.get(&entry.binary) else {
            continue;
        };
        if !known || app_index == index {
            continue;
        }
        let app = Side {
            entry: app,
            live: lives[app_index].as_ref().and_then(|l| l.build.as_ref()),
        };
        let judgement = judge(worker, app, req);
        judged = true;
        requirement.add_ok(found.take(check_requirement(worker, app, &judgement)));
        if let Some(verdict) = check_build(worker, app, &judgement) {
            build.add(found.take_verdict(verdict));
        }
        if let Some(result) = check_protocol(worker, app) {
            protocol.add_ok(found.take(result));
        }
    }
    if let Some(live) = live {
        found.notes.extend(served_notes(&entry.file, &live.served));
    }
    if judged {
        found.notes.push(format!(
            "{}: judged by the policy an app starts a declared worker binary with unless it chooses another in code: Compat::Semver of the requirement the app declares",
            entry.file
        ));
    }
    for (name, per_app) in [
        ("requirement", requirement),
        ("build", build),
        ("protocol", protocol),
    ] {
        if let Some(status) = per_app.0 {
            found.checks.push(Check { name, status });
        }
    }

    found.problems.extend(missing_workers(manifest, entry));

    Row {
        file: entry.file.clone(),
        role: entry.role.as_str(),
        package: Some(entry.package.clone()),
        version: Some(worker.version().to_string()),
        build_id: worker.build_id().map(str::to_owned),
        checks: found.checks,
        passed: found.problems.is_empty(),
        problems: found.problems,
        warnings: found.warnings,
        notes: found.notes,
        workers: live.map(|l| l.served.clone()).unwrap_or_default(),
    }
}

/// A binary's identity, as a message names it.
fn identity(
    package: &str,
    version: &Version,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::manifest::Role;
    use crate::verify::Status;

    const TARGET: &str = "x86_64-unknown-linux-gnu";
    const APP_SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const TOOL_SHA: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const OTHER_SHA: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn version(text: &str) -> Version {
        Version::parse(text).expect("a version")
    }

    fn req(text: &str) -> VersionReq {
        VersionReq::parse(text).expect("a requirement")
    }

    /// App `app` 1.0.0 (build id `b1`), which requires worker binary `tool` ^1.0.
    fn app() -> Entry {
        Entry {
            file: "app".to_owned(),
            binary: "app".to_owned(),
            role: Role::App,
            package: "app".to_owned(),
            version: version("1.0.0"),
            build_id: Some("b1".to_owned()),
            target: Some(TARGET.to_owned()),
            size: 1000,
            sha256: APP_SHA.to_owned(),
            requires: BTreeMap::from([("tool".to_owned(), req("^1.0"))]),
            serves: Vec::new(),
            probe_error: None,
        }
    }

    /// Worker binary `tool` 1.2.0 (build id `b1`), serving worker `tool`.
    fn tool() -> Entry {
        Entry {
            file: "tool".to_owned(),
            binary: "tool".to_owned(),
            role: Role::Worker,
            package: "tool".to_owned(),
            version: version("1.2.0"),
            build_id: Some("b1".to_owned()),
            target: Some(TARGET.to_owned()),
            size: 500,
            sha256: TOOL_SHA.to_owned(),
            requires: BTreeMap::new(),
            serves: vec!["tool".to_owned()],
            probe_error: None,
        }
    }

    fn manifest(binaries: Vec<Entry>) -> Manifest {
        Manifest {
            format: crate::manifest::FORMAT,
            generator: "test".to_owned(),
            profile: "debug".to_owned(),
            target: None,
            binaries,
        }
    }

    /// What `entry` reports when started, if it is what the manifest says.
    fn reported(entry: &Entry) -> Reported {
        Reported {
            package: entry.package.clone(),
            version: entry.version.clone(),
            build_id: entry.build_id.clone(),
            target: TARGET.to_owned(),
            bincrew_version: "0.1.0".to_owned(),
            protocol: 1,
            wire: "ipc-channel-0.23".to_owned(),
        }
    }

    fn result(expected: Option<&str>) -> Result<(), String> {
        expected.map_or(Ok(()), |problem| Err(problem.to_owned()))
    }

    #[test]
    fn file_state_tells_intact_missing_changed_and_swapped_apart() {
        let manifest = manifest(vec![app(), tool()]);
        let tool = tool();
        let cases = [
            ("intact", Some(Some((500, TOOL_SHA))), FileState::Intact),
            ("missing", None, FileState::Missing),
            (
                "a directory in its place",
                Some(None),
                FileState::Changed {
                    size: 0,
                    sha256: "a directory".to_owned(),
                },
            ),
            (
                "other bytes",
                Some(Some((508, OTHER_SHA))),
                FileState::Changed {
                    size: 508,
                    sha256: OTHER_SHA.to_owned(),
                },
            ),
            (
                "the right bytes at another size",
                Some(Some((501, TOOL_SHA))),
                FileState::Changed {
                    size: 501,
                    sha256: TOOL_SHA.to_owned(),
                },
            ),
            (
                "the app's binary",
                Some(Some((1000, APP_SHA))),
                FileState::Swapped("app".to_owned()),
            ),
        ];
        for (case, present, expected) in cases {
            let present = present.map(|p| p.map(|(size, sha)| (size, sha.to_owned())));
            assert_eq!(
                file_state(&manifest, &tool, present.as_ref()),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn check_file_names_what_is_wrong_and_what_to_do() {
        let dir = Path::new("/srv/deploy");
        let cases = [
            (FileState::Intact, None),
            (
                FileState::Missing,
                Some("tool: missing from /srv/deploy: copy it from the staged build, or stage again"),
            ),
            (
                FileState::Swapped("app".to_owned()),
                Some("tool: swapped: it holds the binary of app (its SHA-256 is the one the manifest has for app): put tool's own binary back"),
            ),
            (
                FileState::Changed {
                    size: 508,
                    sha256: OTHER_SHA.to_owned(),
                },
                Some("tool: changed since staging (size 508, SHA-256 cccccccccccccccc…; the manifest has size 500, SHA-256 bbbbbbbbbbbbbbbb…): redeploy tool from the build the manifest describes, or stage again"),
            ),
            (
                FileState::Changed {
                    size: 0,
                    sha256: "a directory".to_owned(),
                },
                Some("tool: changed since staging (size 0, SHA-256 a directory; the manifest has size 500, SHA-256 bbbbbbbbbbbbbbbb…): redeploy tool from the build the manifest describes, or stage again"),
            ),
        ];
        for (state, expected) in cases {
            assert_eq!(
                check_file(&tool(), &state, dir),
                result(expected),
                "{state:?}"
            );
        }
    }

    #[test]
    fn the_probe_of_a_binary_that_serves_no_worker() {
        let build = reported(&app());
        let cases = [
            ("answers", Ok((build.clone(), Vec::new())), Some(&build), None),
            (
                "serves workers now",
                Ok((build.clone(), vec!["a".to_owned(), "b".to_owned()])),
                Some(&build),
                Some("app: serves workers a, b that the manifest does not list: stage again"),
            ),
            (
                "no longer answers",
                Err("it exited with status 3".to_owned()),
                None,
                Some("app: it no longer answers the probe it answered when staged: it exited with status 3: redeploy app from the staged build"),
            ),
        ];
        for (case, probe, expected_build, expected_failure) in cases {
            let live = Live::from_probe("app", probe);
            assert_eq!(live.build.as_ref(), expected_build, "{case}");
            assert_eq!(
                live.failures,
                Vec::from_iter(expected_failure.map(str::to_owned)),
                "{case}"
            );
        }
    }

    #[test]
    fn the_starts_of_a_binary_as_each_worker_it_serves() {
        let first = reported(&tool());
        let second = Reported {
            build_id: Some("b2".to_owned()),
            ..first.clone()
        };
        let started = |build: &Reported, request: &str| {
            Ok(Start {
                build: build.clone(),
                request_type: request.to_owned(),
                response_type: "u64".to_owned(),
            })
        };
        let served = |name: &str, request: &str| Served {
            name: name.to_owned(),
            request_type: request.to_owned(),
            response_type: "u64".to_owned(),
        };
        let failed = || Err("the handshake timed out".to_owned());
        let failure = |name: &str| {
            format!("tool: starting worker `{name}` failed: the handshake timed out: redeploy tool from the staged build")
        };
        let cases = [
            (
                "every start succeeds: the first identity is kept, every worker's types",
                vec![("x", started(&first, "X")), ("y", started(&second, "Y"))],
                Some(&first),
                vec![served("x", "X"), served("y", "Y")],
                vec![],
            ),
            (
                "the first fails: the next identity is kept",
                vec![("x", failed()), ("y", started(&second, "Y"))],
                Some(&second),
                vec![served("y", "Y")],
                vec![failure("x")],
            ),
            (
                "every start fails",
                vec![("x", failed()), ("y", failed())],
                None,
                vec![],
                vec![failure("x"), failure("y")],
            ),
        ];
        for (case, starts, expected_build, expected_served, expected_failures) in cases {
            let live = Live::from_starts("tool", starts);
            assert_eq!(live.build.as_ref(), expected_build, "{case}");
            assert_eq!(live.served, expected_served, "{case}");
            assert_eq!(live.failures, expected_failures, "{case}");
        }
    }

    #[test]
    fn check_live_passes_when_every_start_succeeded_and_is_skipped_without_one() {
        let ok = Live {
            build: Some(reported(&tool())),
            ..Live::default()
        };
        let failed = Live {
            build: None,
            served: Vec::new(),
            failures: vec!["tool: starting worker `tool` failed".to_owned()],
        };
        assert_eq!(check_live(None), None);
        assert_eq!(check_live(Some(&ok)), Some(Ok(())));
        assert_eq!(
            check_live(Some(&failed)),
            Some(Err(failed.failures.as_slice()))
        );
    }

    #[test]
    fn a_binary_of_unknown_identity_that_is_there_gets_a_note() {
        let unknown = Entry {
            probe_error: Some("it printed a usage message".to_owned()),
            ..app()
        };
        let cases = [
            (tool(), FileState::Intact, None),
            (unknown.clone(), FileState::Missing, None),
            (
                unknown.clone(),
                FileState::Intact,
                Some("app: identity unknown, checked by SHA-256 only (it printed a usage message)"),
            ),
            (
                unknown,
                FileState::Swapped("tool".to_owned()),
                Some("app: identity unknown, checked by SHA-256 only (it printed a usage message)"),
            ),
        ];
        for (entry, state, expected) in cases {
            assert_eq!(
                identity_unknown(&entry, &state).as_deref(),
                expected,
                "{state:?}"
            );
        }
    }

    #[test]
    fn check_identity_compares_package_version_build_id_and_target() {
        let same = reported(&tool());
        let expects = format!("the manifest expects tool 1.2.0 (build id b1, {TARGET}): redeploy tool from the build the manifest describes");
        let cases = [
            ("same", same.clone(), None),
            (
                "another package",
                Reported {
                    package: "other".to_owned(),
                    ..same.clone()
                },
                Some(format!(
                    "tool: is other 1.2.0 (build id b1, {TARGET}) but {expects}"
                )),
            ),
            (
                "another version",
                Reported {
                    version: version("1.3.0"),
                    ..same.clone()
                },
                Some(format!(
                    "tool: is tool 1.3.0 (build id b1, {TARGET}) but {expects}"
                )),
            ),
            (
                "another build",
                Reported {
                    build_id: Some("b2".to_owned()),
                    ..same.clone()
                },
                Some(format!(
                    "tool: is tool 1.2.0 (build id b2, {TARGET}) but {expects}"
                )),
            ),
            (
                "no build id",
                Reported {
                    build_id: None,
                    ..same.clone()
                },
                Some(format!(
                    "tool: is tool 1.2.0 (build id none, {TARGET}) but {expects}"
                )),
            ),
            (
                "another target",
                Reported {
                    target: "aarch64-apple-darwin".to_owned(),
                    ..same.clone()
                },
                Some(format!(
                    "tool: is tool 1.2.0 (build id b1, aarch64-apple-darwin) but {expects}"
                )),
            ),
        ];
        for (case, build, expected) in cases {
            assert_eq!(
                check_identity(&tool(), &build),
                result(expected.as_deref()),
                "{case}"
            );
        }

        // A manifest that records no target accepts any.
        let any_target = Entry {
            target: None,
            ..tool()
        };
        let elsewhere = Reported {
            target: "aarch64-apple-darwin".to_owned(),
            ..same
        };
        assert_eq!(check_identity(&any_target, &elsewhere), Ok(()));
    }

    #[test]
    fn judge_uses_the_runtime_default_policy_and_leaves_the_protocol_to_its_own_check() {
        let (app, tool) = (app(), tool());
        let app_build = reported(&app);
        let newer_protocol = Reported {
            protocol: 2,
            ..reported(&tool)
        };
        let cases = [
            ("neither started, as staged", None, None, "^1.0", None),
            (
                "too new for the requirement",
                None,
                None,
                "~1.1",
                Some("the worker is newer than this app supports: update the app, or redeploy a worker matching ~1.1"),
            ),
            (
                "another build id is no matter to Compat::Semver",
                Some(Reported {
                    build_id: Some("b9".to_owned()),
                    ..reported(&tool)
                }),
                Some(&app_build),
                "^1.0",
                None,
            ),
            (
                "another protocol is check_protocol's to report",
                Some(newer_protocol),
                Some(&app_build),
                "^1.0",
                None,
            ),
        ];
        for (case, tool_live, app_live, requirement, expected) in cases {
            let worker = Side {
                entry: &tool,
                live: tool_live.as_ref(),
            };
            let app = Side {
                entry: &app,
                live: app_live,
            };
            let judgement = judge(worker, app, &req(requirement));
            assert_eq!(judgement.requirement, req(requirement), "{case}");
            assert_eq!(
                judgement.verdict,
                expected.map_or(Ok(()), |fix| Err((
                    MismatchKind::Requirement,
                    fix.to_owned()
                ))),
                "{case}"
            );
        }
    }

    #[test]
    fn check_requirement_takes_the_live_version_over_the_manifests() {
        let (app, tool) = (app(), tool());
        let app = Side {
            entry: &app,
            live: None,
        };
        let old = Reported {
            version: version("0.9.0"),
            ..reported(&tool)
        };
        let cases = [
            ("as staged", None, "^1.0", None),
            (
                "staged too new",
                None,
                "~1.1",
                Some("tool: is version 1.2.0, but app requires tool ~1.1, so app refuses it at start: the worker is newer than this app supports: update the app, or redeploy a worker matching ~1.1"),
            ),
            (
                "an older binary in its place",
                Some(&old),
                "^1.0",
                Some("tool: is version 0.9.0, but app requires tool ^1.0, so app refuses it at start: the worker is too old for this app: redeploy a worker matching ^1.0"),
            ),
        ];
        for (case, live, requirement, expected) in cases {
            let worker = Side { entry: &tool, live };
            let judgement = judge(worker, app, &req(requirement));
            assert_eq!(
                check_requirement(worker, app, &judgement),
                result(expected),
                "{case}"
            );
        }
    }

    #[test]
    fn check_build_warns_of_another_build_the_app_accepts_and_fails_one_it_refuses() {
        let with_id = |id: Option<&str>, entry: Entry| Entry {
            build_id: id.map(str::to_owned),
            ..entry
        };
        let accepted = |differs: &str| {
            Verdict::Warn(format!(
                "tool: {differs}, but app accepts it: it starts tool under the requirement it declares, ^1.0 (Compat::Semver, its default), which tool 1.2.0 matches. \
                 Their request and response types are checked when app starts it; to be sure they agree, redeploy tool from the same build as app"
            ))
        };
        let cases = [
            ("same build", "^1.0", Some("b1"), Some("b1"), Some(Verdict::Pass)),
            ("an app without a build id: nothing to compare", "^1.0", None, Some("b1"), None),
            (
                "another build the app accepts",
                "^1.0",
                Some("b1"),
                Some("b2"),
                Some(accepted("built by another build (build id b2) than app (build id b1)")),
            ),
            (
                "a worker without a build id the app accepts",
                "^1.0",
                Some("b1"),
                None,
                Some(accepted("carries no build id, so nothing shows it comes from app's build (b1)")),
            ),
            (
                "another build the app refuses",
                "^2",
                Some("b1"),
                Some("b2"),
                Some(Verdict::Fail("tool: built by another build (build id b2) than app (build id b1): redeploy tool from the same build as app".to_owned())),
            ),
            (
                "a worker without a build id the app refuses",
                "^2",
                Some("b1"),
                None,
                Some(Verdict::Fail("tool: carries no build id, but app comes from build b1: stamp tool with bincrew-build and redeploy it from the same build as app".to_owned())),
            ),
        ];
        for (case, requirement, app_id, tool_id, expected) in cases {
            let (app, tool) = (with_id(app_id, app()), with_id(tool_id, tool()));
            let app = Side {
                entry: &app,
                live: None,
            };
            let worker = Side {
                entry: &tool,
                live: None,
            };
            let judgement = judge(worker, app, &req(requirement));
            assert_eq!(check_build(worker, app, &judgement), expected, "{case}");
        }

        // What a started binary reported wins over the manifest.
        let (app, tool) = (app(), tool());
        let rebuilt = Reported {
            build_id: Some("b9".to_owned()),
            version: version("2.0.0"),
            ..reported(&tool)
        };
        let worker = Side {
            entry: &tool,
            live: Some(&rebuilt),
        };
        let app = Side {
            entry: &app,
            live: None,
        };
        let judgement = judge(worker, app, &req("^1.0"));
        assert_eq!(
            check_build(worker, app, &judgement),
            Some(Verdict::Fail("tool: built by another build (build id b9) than app (build id b1): redeploy tool from the same build as app".to_owned()))
        );
    }

    #[test]
    fn check_protocol_compares_what_both_started_binaries_speak() {
        let (app, tool) = (app(), tool());
        let app_build = reported(&app);
        let tool_build = reported(&tool);
        let newer = Reported {
            protocol: 2,
            bincrew_version: "0.2.0".to_owned(),
            ..tool_build.clone()
        };
        let other_wire = Reported {
            wire: "ipc-channel-0.24".to_owned(),
            ..tool_build.clone()
        };
        let cases = [
            ("same", Some(&tool_build), Some(&app_build), Some(None)),
            ("the worker not started", None, Some(&app_build), None),
            ("the app not started", Some(&tool_build), None, None),
            (
                "another protocol",
                Some(&newer),
                Some(&app_build),
                Some(Some("tool: speaks bincrew protocol 2 over ipc-channel-0.23 (bincrew 0.2.0), but app speaks protocol 1 over ipc-channel-0.23 (bincrew 0.1.0): rebuild both against one bincrew and redeploy them together")),
            ),
            (
                "another wire",
                Some(&other_wire),
                Some(&app_build),
                Some(Some("tool: speaks bincrew protocol 1 over ipc-channel-0.24 (bincrew 0.1.0), but app speaks protocol 1 over ipc-channel-0.23 (bincrew 0.1.0): rebuild both against one bincrew and redeploy them together")),
            ),
        ];
        for (case, tool_live, app_live, expected) in cases {
            let worker = Side {
                entry: &tool,
                live: tool_live,
            };
            let app = Side {
                entry: &app,
                live: app_live,
            };
            assert_eq!(check_protocol(worker, app), expected.map(result), "{case}");
        }
    }

    #[test]
    fn missing_workers_names_each_declared_worker_the_manifest_lacks() {
        let app = Entry {
            requires: BTreeMap::from([
                ("tool".to_owned(), req("^1.0")),
                ("resizer".to_owned(), req("^2")),
            ]),
            ..app()
        };
        assert_eq!(
            missing_workers(&manifest(vec![app.clone(), tool()]), &app),
            ["app: requires worker resizer ^2, but the manifest lists no binary resizer: stage again"]
        );
        assert!(missing_workers(&manifest(vec![app.clone(), tool()]), &tool()).is_empty());
    }

    fn statuses(row: &Row) -> Vec<(&str, Status)> {
        row.checks.iter().map(|c| (c.name, c.status)).collect()
    }

    #[test]
    fn check_entry_runs_every_check_and_reports_every_problem() {
        let dir = Path::new("/srv/deploy");
        let manifest = manifest(vec![app(), tool()]);
        let started = |entry: &Entry| {
            Some(Live {
                build: Some(reported(entry)),
                served: entry
                    .serves
                    .iter()
                    .map(|name| Served {
                        name: name.clone(),
                        request_type: "alloc::string::String".to_owned(),
                        response_type: "usize".to_owned(),
                    })
                    .collect(),
                failures: Vec::new(),
            })
        };
        let intact = [FileState::Intact, FileState::Intact];

        // As staged: the worker passes every check against its app.
        let lives = [started(&app()), started(&tool())];
        let row = check_entry(&manifest, 1, &intact, &lives, dir);
        assert!(row.passed, "{row:?}");
        assert_eq!(
            statuses(&row),
            [
                ("file", Status::Pass),
                ("live", Status::Pass),
                ("identity", Status::Pass),
                ("requirement", Status::Pass),
                ("build", Status::Pass),
                ("protocol", Status::Pass),
            ]
        );
        assert_eq!(
            (row.version.as_deref(), row.build_id.as_deref()),
            (Some("1.2.0"), Some("b1"))
        );
        assert!(row.warnings.is_empty(), "{row:?}");
        assert_eq!(
            row.workers,
            [Served {
                name: "tool".to_owned(),
                request_type: "alloc::string::String".to_owned(),
                response_type: "usize".to_owned(),
            }]
        );
        assert_eq!(
            row.notes,
            [
                "tool: worker `tool` takes alloc::string::String and answers usize",
                "tool: request/response types are checked by the handshake when the app starts the worker: verify cannot know which types an app uses",
                "tool: judged by the policy an app starts a declared worker binary with unless it chooses another in code: Compat::Semver of the requirement the app declares",
            ]
        );
        // The app is nobody's worker.
        let row = check_entry(&manifest, 0, &intact, &lives, dir);
        assert!(row.passed, "{row:?}");
        assert_eq!(
            statuses(&row),
            [
                ("file", Status::Pass),
                ("live", Status::Pass),
                ("identity", Status::Pass)
            ]
        );

        // An older build of the worker in its place: every check it fails says so, the row shows
        // what it reported.
        let old = Reported {
            version: version("0.9.0"),
            build_id: Some("b0".to_owned()),
            ..reported(&tool())
        };
        let states = [
            FileState::Intact,
            FileState::Changed {
                size: 480,
                sha256: OTHER_SHA.to_owned(),
            },
        ];
        let lives = [
            started(&app()),
            Some(Live {
                build: Some(old),
                ..Live::default()
            }),
        ];
        let row = check_entry(&manifest, 1, &states, &lives, dir);
        assert!(!row.passed);
        assert_eq!(
            statuses(&row),
            [
                ("file", Status::Fail),
                ("live", Status::Pass),
                ("identity", Status::Fail),
                ("requirement", Status::Fail),
                ("build", Status::Fail),
                ("protocol", Status::Pass),
            ]
        );
        let expected = [
            "tool: changed since staging (size 480, SHA-256 cccccccccccccccc…; the manifest has size 500, SHA-256 bbbbbbbbbbbbbbbb…)",
            "tool: is tool 0.9.0 (build id b0, x86_64-unknown-linux-gnu) but the manifest expects tool 1.2.0 (build id b1, x86_64-unknown-linux-gnu)",
            "tool: is version 0.9.0, but app requires tool ^1.0",
            "tool: built by another build (build id b0) than app (build id b1)",
        ];
        assert_eq!(row.problems.len(), expected.len(), "{:?}", row.problems);
        for (problem, expected) in row.problems.iter().zip(expected) {
            assert!(
                problem.starts_with(expected),
                "{problem:?} is not {expected:?}…"
            );
        }
        assert_eq!(
            (row.version.as_deref(), row.build_id.as_deref()),
            (Some("0.9.0"), Some("b0"))
        );

        // A deployment that records a worker from another build, which the app accepts: the
        // row passes with a warning that says why.
        let patched = Entry {
            version: version("1.2.5"),
            build_id: Some("b2".to_owned()),
            ..tool()
        };
        let mixed = self::manifest(vec![app(), patched.clone()]);
        let lives = [started(&app()), started(&patched)];
        let row = check_entry(&mixed, 1, &intact, &lives, dir);
        assert!(row.passed, "{row:?}");
        assert_eq!(
            statuses(&row),
            [
                ("file", Status::Pass),
                ("live", Status::Pass),
                ("identity", Status::Pass),
                ("requirement", Status::Pass),
                ("build", Status::Warn),
                ("protocol", Status::Pass),
            ]
        );
        assert!(row.problems.is_empty(), "{row:?}");
        assert_eq!(row.warnings.len(), 1, "{row:?}");
        assert!(
            row.warnings[0].starts_with("tool: built by another build (build id b2) than app (build id b1), but app accepts it"),
            "{row:?}"
        );

        // Swapped, so not started: only the file is checked.
        let states = [FileState::Intact, FileState::Swapped("app".to_owned())];
        let lives = [started(&app()), None];
        let row = check_entry(&manifest, 1, &states, &lives, dir);
        assert_eq!(
            statuses(&row),
            [("file", Status::Fail), ("live", Status::Skipped)]
        );
        assert_eq!(row.problems.len(), 1, "{row:?}");
        assert!(row.notes.is_empty(), "{row:?}");

        // A failed start is the live check's problem.
        let lives = [
            started(&app()),
            Some(Live {
                build: None,
                served: Vec::new(),
                failures: vec!["tool: starting worker `tool` failed: it crashed".to_owned()],
            }),
        ];
        let row = check_entry(&manifest, 1, &intact, &lives, dir);
        assert_eq!(
            statuses(&row),
            [
                ("file", Status::Pass),
                ("live", Status::Fail),
                ("requirement", Status::Pass),
                ("build", Status::Pass),
            ]
        );
        assert_eq!(
            row.problems,
            ["tool: starting worker `tool` failed: it crashed"]
        );
    }
}
