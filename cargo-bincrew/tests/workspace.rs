//! Checks of the bincrew repository's own workspace that no single crate owns: one minimum Rust
//! version for every crate, and what crates.io needs of each published one. Not part of the
//! published package.

use cargo_metadata::{Metadata, MetadataCommand, Package};

fn workspace() -> Metadata {
    MetadataCommand::new()
        .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .no_deps()
        .other_options(vec!["--offline".to_owned()])
        .exec()
        .expect("cargo metadata of the bincrew workspace")
}

/// Whether `cargo publish` may publish it (`publish = false` is an empty list).
fn published(package: &Package) -> bool {
    package.publish.as_ref().is_none_or(|to| !to.is_empty())
}

#[test]
fn every_member_has_the_same_rust_version() {
    let metadata = workspace();
    let members = metadata.workspace_packages();
    assert!(members.len() >= 3, "{members:?}");
    let versions: Vec<(&str, Option<String>)> = members
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.rust_version.as_ref().map(|v| v.to_string()),
            )
        })
        .collect();
    let first = &versions[0].1;
    assert!(
        first.is_some(),
        "every member names its rust-version: {versions:?}"
    );
    assert!(
        versions.iter().all(|(_, v)| v == first),
        "the members' rust-versions differ (set rust-version.workspace = true in each): {versions:?}"
    );
}

#[test]
fn every_published_crate_has_what_crates_io_shows() {
    let metadata = workspace();
    let published: Vec<&Package> = metadata
        .workspace_packages()
        .into_iter()
        .filter(|p| published(p))
        .collect();
    let mut names: Vec<&str> = published.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["bincrew", "bincrew-build", "cargo-bincrew"]);
    for package in published {
        let name = &package.name;
        assert_eq!(
            package.license.as_deref(),
            Some("MIT OR Apache-2.0"),
            "{name}"
        );
        assert!(package.description.is_some(), "{name} has no description");
        let readme = package.readme.as_ref().expect("a readme");
        let dir = package.manifest_path.parent().expect("package dir");
        assert!(dir.join(readme).is_file(), "{name}: no {readme}");
        for license in ["LICENSE-MIT", "LICENSE-APACHE"] {
            assert!(dir.join(license).is_file(), "{name}: no {license}");
        }
        assert!(!package.keywords.is_empty(), "{name} has no keywords");
        assert!(!package.categories.is_empty(), "{name} has no categories");
    }
}
