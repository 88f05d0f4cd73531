//! This binary's build identity (set by [`init!`](crate::init)) and the [`Compat`] policy that
//! decides whether a worker's identity is acceptable to the app.

use std::cmp::Ordering;
use std::fmt;
use std::sync::OnceLock;

use std::path::PathBuf;

use semver::{Version, VersionReq};

/// Version of the messages exchanged after the handshake. Bump it whenever `wire/messages.rs` or
/// the way it is encoded changes, or that of a type bincrew encodes inside requests and
/// responses (2: frame bodies encode their items one by one; 3: a `SharedBuffer` carries its
/// token; 4: large frame bodies travel in a region of shared memory each channel keeps).
pub(crate) const PROTOCOL: u32 = 4;

/// The serialization line of the messages after the handshake: they are encoded by
/// `ipc-channel`, whose format changes between minor versions (0.20 used bincode, 0.23 postcard).
pub(crate) const WIRE: &str = "ipc-channel-0.23";

/// The target triple this library was compiled for.
pub(crate) const TARGET: &str = env!("BINCREW_TARGET");

static THIS_BUILD: OnceLock<BuildInfo> = OnceLock::new();

/// The identity of one binary, exchanged in the handshake.
///
/// [`build_info`] gives this binary's own; [`Worker::build_info`](crate::Worker::build_info) the
/// worker's.
///
/// ```
/// bincrew::init!();
/// let me = bincrew::build_info().expect("init!() was called");
/// println!("{} {} (build {:?}) for {}", me.package, me.version, me.build_id, me.target);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuildInfo {
    /// The name of the package whose binary this is (the crate that called [`init!`](crate::init)).
    pub package: String,
    /// That package's version.
    pub version: Version,
    /// The build id stamped at compile time through `BINCREW_BUILD_ID`, if any.
    pub build_id: Option<String>,
    /// The target triple the binary was compiled for.
    pub target: String,
    /// The version of bincrew the binary was built with.
    pub bincrew_version: String,
    /// The bincrew protocol version the binary speaks after the handshake.
    pub protocol: u32,
    /// The serialization line of the messages after the handshake.
    pub wire: String,
    /// Identity of the executable file (device, inode, size and modification time), used by
    /// [`Compat::SameBuild`] to recognise the app's own executable.
    pub(crate) exe_id: Option<String>,
    /// The worker binaries this package declares in `[package.metadata.bincrew]`, with their
    /// version requirements (checked at build time by bincrew-build).
    pub(crate) workers: Vec<(String, VersionReq)>,
    /// The workspace packages that declare this package's binaries as their workers.
    pub(crate) apps: Vec<String>,
    /// The package's directory at compile time, to find the cargo target dir in development.
    pub(crate) manifest_dir: Option<PathBuf>,
}

impl BuildInfo {
    /// The identity of a binary known from a record rather than from the binary itself (a
    /// deployment manifest, say), to judge with [`Compat::check`] without starting anything.
    ///
    /// It has no build id and speaks this bincrew's protocol and wire format for this target;
    /// set the public fields to what the record says. Matches no executable file (so
    /// [`Compat::SameBuild`] compares build ids only), declares no workers and belongs to no
    /// app.
    ///
    /// ```
    /// use bincrew::semver::{Version, VersionReq};
    /// use bincrew::{BuildInfo, Compat};
    ///
    /// let app = BuildInfo::new("app", Version::new(1, 0, 0));
    /// let mut worker = BuildInfo::new("tool", Version::new(1, 0, 3));
    /// worker.build_id = Some("b2".to_owned());
    /// let req = VersionReq::parse("^1.0").unwrap();
    /// assert!(Compat::Semver(req).check(&app, &worker).is_ok());
    /// assert!(Compat::SameBuild.check(&app, &worker).is_err());
    /// ```
    pub fn new(package: impl Into<String>, version: Version) -> BuildInfo {
        BuildInfo {
            package: package.into(),
            version,
            build_id: None,
            target: TARGET.to_owned(),
            bincrew_version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL,
            wire: WIRE.to_owned(),
            exe_id: None,
            workers: Vec::new(),
            apps: Vec::new(),
            manifest_dir: None,
        }
    }

    /// The version requirement this package declares for worker binary `binary` in
    /// `[package.metadata.bincrew] workers`, as embedded by bincrew-build.
    pub fn worker_requirement(&self, binary: &str) -> Option<&VersionReq> {
        self.workers
            .iter()
            .find(|(name, _)| name == binary)
            .map(|(_, req)| req)
    }

    /// The apps of the workspace that declare this package's binaries as their workers, as
    /// embedded by bincrew-build.
    pub fn apps(&self) -> &[String] {
        &self.apps
    }
}

/// What [`init!`](crate::init) captures in the calling crate.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub package: &'static str,
    pub version: &'static str,
    pub manifest_dir: &'static str,
    /// `BINCREW_BUILD_ID`, set by bincrew-build.
    pub build_id: Option<&'static str>,
    /// `BINCREW_WORKERS`: `binary=requirement` entries separated by `;`.
    pub workers: Option<&'static str>,
    /// `BINCREW_APPS`: package names separated by `,`.
    pub apps: Option<&'static str>,
}

impl fmt::Display for BuildInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.package, self.version)?;
        match &self.build_id {
            Some(id) => write!(f, " (build {id})"),
            None => write!(f, " (no build id)"),
        }
    }
}

/// Records this binary's identity. Called through [`init!`](crate::init).
#[doc(hidden)]
pub fn init(stamp: Stamp) {
    THIS_BUILD.get_or_init(|| BuildInfo {
        package: stamp.package.to_owned(),
        // Cargo validates package versions, so this parses; never panic on it regardless.
        version: Version::parse(stamp.version).unwrap_or(Version::new(0, 0, 0)),
        build_id: stamp
            .build_id
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
        workers: stamp
            .workers
            .unwrap_or_default()
            .split(';')
            .filter_map(|entry| {
                let (binary, req) = entry.split_once('=')?;
                Some((
                    binary.trim().to_owned(),
                    VersionReq::parse(req.trim()).ok()?,
                ))
            })
            .collect(),
        apps: stamp
            .apps
            .unwrap_or_default()
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
        manifest_dir: Some(PathBuf::from(stamp.manifest_dir)),
        target: TARGET.to_owned(),
        bincrew_version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol: PROTOCOL,
        wire: WIRE.to_owned(),
        exe_id: crate::os::exe_identity(),
    });
}

/// This binary's identity, or `None` when [`init!`](crate::init) was not called.
pub fn build_info() -> Option<&'static BuildInfo> {
    THIS_BUILD.get()
}

/// Which identity check of the handshake failed.
///
/// ```no_run
/// use bincrew::{MismatchKind, StartError, Worker};
///
/// match Worker::<String, u64>::builder("hash").binary("hasher").start_blocking() {
///     Err(StartError::VersionMismatch(m)) if m.kind == MismatchKind::Build => {
///         eprintln!("{} comes from another build: {}", m.exe.display(), m.fix)
///     }
///     Err(e) => eprintln!("{e}"),
///     Ok(_worker) => {}
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MismatchKind {
    /// The two sides speak different bincrew protocols or wire formats.
    Protocol,
    /// [`Compat::SameBuild`] failed.
    Build,
    /// [`Compat::SameVersion`] failed.
    Version,
    /// [`Compat::Semver`] failed.
    Requirement,
}

/// What a worker must share with the app for the handshake to accept it.
///
/// The versions compared are those of the two binaries' own packages (see
/// [`init!`](crate::init)). Whatever the policy, both sides must speak the same bincrew protocol
/// and wire format, or the start fails with [`StartError::VersionMismatch`](crate::StartError).
///
/// ```no_run
/// use bincrew::semver::VersionReq;
/// use bincrew::{Compat, Worker};
///
/// // Any hasher 0.2.x will do, whichever build it comes from.
/// let worker = Worker::<Vec<u8>, u64>::builder("hash")
///     .binary("hasher")
///     .compat(Compat::Semver(VersionReq::parse("^0.2").unwrap()))
///     .start_blocking()?;
/// # Ok::<(), bincrew::StartError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compat {
    /// The worker comes from the same build as the app (the default).
    ///
    /// Passes when both binaries carry the same stamped build id, or when the worker is the
    /// app's own executable file (a self-spawned worker: same device, inode, size and
    /// modification time). Two different binaries without a build id fail it, even at the same
    /// version, because nothing shows they were built together: stamp them with the
    /// build-support crate, or choose [`Compat::SameVersion`] or [`Compat::Semver`].
    #[default]
    SameBuild,
    /// The worker's package version equals the app's package version (build metadata ignored).
    SameVersion,
    /// The worker's package version matches this requirement.
    Semver(VersionReq),
}

impl fmt::Display for Compat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compat::SameBuild => f.write_str("same build"),
            Compat::SameVersion => f.write_str("same version"),
            Compat::Semver(req) => write!(f, "version {req}"),
        }
    }
}

impl Compat {
    /// Checks a worker's identity against the app's, as the handshake does: the protocol and
    /// wire format first, then this policy. Deployment checks (`cargo bincrew verify`) use it to
    /// judge a pair of binaries without starting the app; see [`BuildInfo::new`].
    ///
    /// # Errors
    ///
    /// The kind of mismatch and what to do about it: the `kind` and `fix` of the
    /// [`VersionMismatch`](crate::VersionMismatch) a start of this worker would fail with.
    pub fn check(&self, app: &BuildInfo, worker: &BuildInfo) -> Result<(), (MismatchKind, String)> {
        if app.protocol != worker.protocol || app.wire != worker.wire {
            let older = match app.protocol.cmp(&worker.protocol) {
                Ordering::Less => "the app",
                Ordering::Greater => "the worker",
                Ordering::Equal => "the side built against the older bincrew",
            };
            return Err((
                MismatchKind::Protocol,
                format!(
                    "they speak different bincrew protocols (app: protocol {} over {}, bincrew {}; \
                     worker: protocol {} over {}, bincrew {}): rebuild {older} against the other's bincrew version",
                    app.protocol,
                    app.wire,
                    app.bincrew_version,
                    worker.protocol,
                    worker.wire,
                    worker.bincrew_version
                ),
            ));
        }
        match self {
            Compat::SameBuild => same_build(app, worker),
            Compat::SameVersion => {
                match worker.version.cmp_precedence(&app.version) {
                    Ordering::Equal => Ok(()),
                    Ordering::Less => Err((
                        MismatchKind::Version,
                        format!(
                            "the worker is older than the app: redeploy the worker at version {}",
                            app.version
                        ),
                    )),
                    Ordering::Greater => Err((
                        MismatchKind::Version,
                        format!(
                            "the worker is newer than the app: update the app to {}, or redeploy the worker at version {}",
                            worker.version, app.version
                        ),
                    )),
                }
            }
            Compat::Semver(req) => {
                if req.matches(&worker.version) {
                    return Ok(());
                }
                let older = req.comparators.first().is_some_and(|c| {
                    let floor = Version::new(c.major, c.minor.unwrap_or(0), c.patch.unwrap_or(0));
                    worker.version.cmp_precedence(&floor) == Ordering::Less
                });
                let fix = if older {
                    format!("the worker is too old for this app: redeploy a worker matching {req}")
                } else {
                    format!(
                        "the worker is newer than this app supports: update the app, or redeploy a worker matching {req}"
                    )
                };
                Err((MismatchKind::Requirement, fix))
            }
        }
    }
}

fn same_build(app: &BuildInfo, worker: &BuildInfo) -> Result<(), (MismatchKind, String)> {
    match (&app.build_id, &worker.build_id) {
        (Some(a), Some(w)) if a == w => return Ok(()),
        _ => {}
    }
    if app.exe_id.is_some() && app.exe_id == worker.exe_id {
        return Ok(());
    }
    let fix = match (&app.build_id, &worker.build_id) {
        (None, None) => {
            "they are different executables and neither carries a build id, so nothing \
            shows they come from one build: stamp both with bincrew-build in build.rs, or start \
            this worker with Compat::SameVersion or Compat::Semver"
                .to_owned()
        }
        (Some(_), None) => "the worker carries no build id: rebuild it together with the app \
            (stamped by bincrew-build) and redeploy it beside the app"
            .to_owned(),
        (None, Some(_)) => "the app carries no build id: stamp the app with bincrew-build in its \
            build.rs and rebuild both together"
            .to_owned(),
        (Some(_), Some(_)) => match worker.version.cmp_precedence(&app.version) {
            Ordering::Less => format!(
                "they come from different builds and the worker is older: redeploy the worker \
                 from the app's build ({})",
                app.version
            ),
            Ordering::Greater => format!(
                "they come from different builds and the worker is newer: redeploy the app from \
                 the worker's build ({}), or the worker from the app's",
                worker.version
            ),
            Ordering::Equal => "they come from different builds of the same version: rebuild the \
                workspace and redeploy the app and its workers together"
                .to_owned(),
        },
    };
    Err((MismatchKind::Build, fix))
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
