//! Tests of `build.rs`: the `Compat` policies, as tables.

use super::*;

/// Package `pkg` at `version`, with `build_id`, not a known executable.
fn info(version: &str, build_id: Option<&str>) -> BuildInfo {
    BuildInfo {
        package: "pkg".to_owned(),
        version: Version::parse(version).expect("a version"),
        build_id: build_id.map(str::to_owned),
        target: "x86_64-unknown-linux-gnu".to_owned(),
        bincrew_version: "0.1.0".to_owned(),
        protocol: PROTOCOL,
        wire: WIRE.to_owned(),
        exe_id: None,
        workers: Vec::new(),
        apps: Vec::new(),
        manifest_dir: None,
    }
}

/// The same, as the executable file `exe`.
fn exe(version: &str, build_id: Option<&str>, exe: &str) -> BuildInfo {
    BuildInfo {
        exe_id: Some(exe.to_owned()),
        ..info(version, build_id)
    }
}

fn semver(req: &str) -> Compat {
    Compat::Semver(VersionReq::parse(req).expect("a requirement"))
}

/// What a check should give: `None` when it passes, else the kind of mismatch and a part of
/// the fix that names what to rebuild or redeploy.
type Expected = Option<(MismatchKind, &'static str)>;

/// A case: its name, the policy, the app, the worker and what the check should give.
type Case = (&'static str, Compat, BuildInfo, BuildInfo, Expected);

fn check_all(cases: &[Case]) {
    for (case, compat, app, worker, expected) in cases {
        let result = compat.check(app, worker);
        match (expected, result) {
            (None, Ok(())) => {}
            (Some((kind, fix)), Err((found_kind, found_fix))) => {
                assert_eq!(found_kind, *kind, "{compat}, {case}: {found_fix}");
                assert!(
                    found_fix.contains(fix),
                    "{compat}, {case}: {found_fix:?} does not say {fix:?}"
                );
            }
            (expected, found) => {
                panic!("{compat}, {case}: expected {expected:?}, got {found:?}")
            }
        }
    }
}

#[test]
fn same_build_passes_for_one_build_id_or_one_executable() {
    use MismatchKind::Build;
    let b = Compat::SameBuild;
    check_all(&[
        (
            "the same build id",
            b.clone(),
            info("1.2.0", Some("b1")),
            info("1.2.0", Some("b1")),
            None,
        ),
        (
            "the same build id, other executables at other versions",
            b.clone(),
            exe("1.2.0", Some("b1"), "app"),
            exe("1.3.0", Some("b1"), "tool"),
            None,
        ),
        (
            "another build of the same version",
            b.clone(),
            info("1.2.0", Some("b1")),
            info("1.2.0", Some("b2")),
            Some((
                Build,
                "rebuild the workspace and redeploy the app and its workers together",
            )),
        ),
        (
            "another build, the worker older",
            b.clone(),
            info("1.2.0", Some("b1")),
            info("1.1.0", Some("b2")),
            Some((Build, "redeploy the worker from the app's build (1.2.0)")),
        ),
        (
            "another build, the worker newer",
            b.clone(),
            info("1.2.0", Some("b1")),
            info("1.3.0", Some("b2")),
            Some((
                Build,
                "redeploy the app from the worker's build (1.3.0), or the worker from the app's",
            )),
        ),
        (
            "a worker without a build id",
            b.clone(),
            info("1.2.0", Some("b1")),
            info("1.2.0", None),
            Some((
                Build,
                "the worker carries no build id: rebuild it together with the app",
            )),
        ),
        (
            "an app without a build id",
            b.clone(),
            info("1.2.0", None),
            info("1.2.0", Some("b1")),
            Some((
                Build,
                "stamp the app with bincrew-build in its build.rs and rebuild both",
            )),
        ),
        (
            "neither with a build id",
            b.clone(),
            exe("1.2.0", None, "app"),
            exe("1.2.0", None, "tool"),
            Some((Build, "stamp both with bincrew-build in build.rs")),
        ),
        (
            "neither with a build id nor a known executable",
            b.clone(),
            info("1.2.0", None),
            info("1.2.0", None),
            Some((Build, "stamp both with bincrew-build in build.rs")),
        ),
        (
            "the app's own executable, without build ids",
            b.clone(),
            exe("1.2.0", None, "app"),
            exe("1.2.0", None, "app"),
            None,
        ),
        (
            "the app's own executable, its build id since replaced",
            b.clone(),
            exe("1.2.0", Some("b1"), "app"),
            exe("1.2.0", Some("b2"), "app"),
            None,
        ),
    ]);
}

#[test]
fn same_version_compares_precedence_and_ignores_build_ids() {
    use MismatchKind::Version;
    let v = Compat::SameVersion;
    check_all(&[
        (
            "equal versions",
            v.clone(),
            info("1.2.3", Some("b1")),
            info("1.2.3", Some("b2")),
            None,
        ),
        (
            "equal versions, no build ids",
            v.clone(),
            info("1.2.3", None),
            info("1.2.3", None),
            None,
        ),
        (
            "build metadata ignored",
            v.clone(),
            info("1.2.3+linux.5", None),
            info("1.2.3+linux.7", None),
            None,
        ),
        (
            "the same pre-release",
            v.clone(),
            info("1.2.3-rc.1", None),
            info("1.2.3-rc.1", None),
            None,
        ),
        (
            "an older worker",
            v.clone(),
            info("1.2.3", None),
            info("1.2.2", None),
            Some((Version, "the worker is older than the app: redeploy the worker at version 1.2.3")),
        ),
        (
            "a newer worker",
            v.clone(),
            info("1.2.3", None),
            info("1.3.0", None),
            Some((
                Version,
                "the worker is newer than the app: update the app to 1.3.0, or redeploy the worker at version 1.2.3",
            )),
        ),
        (
            "a pre-release of the app's version is older",
            v.clone(),
            info("1.2.3", None),
            info("1.2.3-rc.1", None),
            Some((Version, "redeploy the worker at version 1.2.3")),
        ),
        (
            "the release of the app's pre-release is newer",
            v.clone(),
            info("1.2.3-rc.1", None),
            info("1.2.3", None),
            Some((Version, "update the app to 1.2.3, or redeploy the worker at version 1.2.3-rc.1")),
        ),
        (
            "a later pre-release is newer",
            v.clone(),
            info("1.2.3-rc.1", None),
            info("1.2.3-rc.2", None),
            Some((Version, "update the app to 1.2.3-rc.2")),
        ),
    ]);
}

#[test]
fn semver_matches_the_requirement_with_its_pre_release_rules() {
    use MismatchKind::Requirement;
    let app = || info("1.0.0", Some("b1"));
    check_all(&[
        ("a match", semver("^1.2"), app(), info("1.4.0", Some("b2")), None),
        ("the floor", semver("^1.2"), app(), info("1.2.0", None), None),
        ("build metadata", semver("=1.2.0"), app(), info("1.2.0+linux", None), None),
        (
            "too old",
            semver("^1.2"),
            app(),
            info("1.1.9", None),
            Some((Requirement, "the worker is too old for this app: redeploy a worker matching ^1.2")),
        ),
        (
            "too new",
            semver("^1.2"),
            app(),
            info("2.0.0", None),
            Some((
                Requirement,
                "the worker is newer than this app supports: update the app, or redeploy a worker matching ^1.2",
            )),
        ),
        (
            "a range",
            semver(">=1.2, <1.5"),
            app(),
            info("1.5.0", None),
            Some((Requirement, "update the app, or redeploy a worker matching >=1.2, <1.5")),
        ),
        (
            "a pre-release of the floor is older",
            semver("^1.2"),
            app(),
            info("1.2.0-rc.1", None),
            Some((Requirement, "too old for this app: redeploy a worker matching ^1.2")),
        ),
        (
            "a pre-release in range, not asked for",
            semver("^1.2"),
            app(),
            info("1.3.0-rc.1", None),
            Some((Requirement, "redeploy a worker matching ^1.2")),
        ),
        (
            "a pre-release asked for",
            semver("^1.3.0-rc.1"),
            app(),
            info("1.3.0-rc.2", None),
            None,
        ),
        (
            "the release of a pre-release asked for",
            semver("^1.3.0-rc.1"),
            app(),
            info("1.3.0", None),
            None,
        ),
        (
            "a pre-release of another version than asked for",
            semver("^1.3.0-rc.1"),
            app(),
            info("1.4.0-rc.1", None),
            Some((Requirement, "redeploy a worker matching ^1.3.0-rc.1")),
        ),
    ]);
}

#[test]
fn every_policy_needs_the_same_protocol_and_wire() {
    use MismatchKind::Protocol;
    let speaking = |protocol: u32, wire: &str| BuildInfo {
        protocol,
        wire: wire.to_owned(),
        ..info("1.2.0", Some("b1"))
    };
    for compat in [Compat::SameBuild, Compat::SameVersion, semver("^1")] {
        check_all(&[
            (
                "an older worker protocol",
                compat.clone(),
                speaking(2, WIRE),
                speaking(1, WIRE),
                Some((
                    Protocol,
                    "rebuild the worker against the other's bincrew version",
                )),
            ),
            (
                "an older app protocol",
                compat.clone(),
                speaking(1, WIRE),
                speaking(2, WIRE),
                Some((
                    Protocol,
                    "rebuild the app against the other's bincrew version",
                )),
            ),
            (
                "another wire",
                compat.clone(),
                speaking(1, WIRE),
                speaking(1, "ipc-channel-0.20"),
                Some((Protocol, "rebuild the side built against the older bincrew")),
            ),
        ]);
    }
}
