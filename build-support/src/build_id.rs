//! The build id: the hash of what the crate docs list under "What goes into the build id", over
//! a workspace given as plain data (its root and its members' names, versions and directories),
//! so that it can be computed for any directory tree.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use semver::Version;
use sha2::{Digest, Sha256};

use crate::BuildError;

/// First in the hash. Change it whenever what goes into the id, or how, changes.
const FORMAT: &str = "bincrew-build-id/1";

/// A workspace member as the build id sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Member<'a> {
    pub(crate) name: &'a str,
    pub(crate) version: &'a Version,
    /// The directory of its `Cargo.toml`.
    pub(crate) dir: &'a Path,
}

/// The build id of a build for `target` and `profile` of the workspace at `root` with these
/// `members`, given in any order.
///
/// # Errors
///
/// [`BuildError::Read`] when a file that goes into the id cannot be read.
pub(crate) fn build_id(
    target: &str,
    profile: &str,
    root: &Path,
    members: &[Member<'_>],
) -> Result<String, BuildError> {
    let mut hash = Sha256::new();
    // Each field with its length first, so that no two sequences of fields hash alike.
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(FORMAT.as_bytes());
    field(target.as_bytes());
    field(profile.as_bytes());
    for path in [root.join("Cargo.lock"), root.join("Cargo.toml")] {
        if path.is_file() {
            field(&read(&path)?);
        }
    }
    let mut members = members.to_vec();
    members.sort_by(|a, b| a.name.cmp(b.name));
    for member in members {
        field(member.name.as_bytes());
        field(member.version.to_string().as_bytes());
        for file in member_files(member.dir)? {
            let relative = file.strip_prefix(member.dir).unwrap_or(&file);
            field(relative.to_string_lossy().as_bytes());
            field(&read(&file)?);
        }
    }
    let digest = hash.finalize();
    let mut hex = String::new();
    for byte in digest.iter().take(10) {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

/// The files of the member in `dir` that go into the build id, in order: its `Cargo.toml`, its
/// `build.rs` when present, then every file under `src/` in path order.
fn member_files(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut files = vec![dir.join("Cargo.toml")];
    let build_rs = dir.join("build.rs");
    if build_rs.is_file() {
        files.push(build_rs);
    }
    let mut sources = Vec::new();
    walk(&dir.join("src"), &mut sources)?;
    sources.sort();
    files.extend(sources);
    Ok(files)
}

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BuildError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BuildError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| BuildError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A workspace in a temporary directory, removed on drop: a root `Cargo.toml` and
    /// `Cargo.lock`, member `app` 1.0.0 in `app/` (with a `build.rs`) and member `tool` 1.2.0 in
    /// `tools/tool/`, each with sources in `src/`, and the files that do not go into the id.
    struct Tree {
        root: PathBuf,
        app_name: &'static str,
        app_version: Version,
        tool_version: Version,
        app_dir: PathBuf,
        tool_dir: PathBuf,
    }

    const TARGET: &str = "x86_64-unknown-linux-gnu";

    impl Tree {
        fn new() -> Tree {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let root = std::env::temp_dir().join(format!(
                "bincrew-build-id-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&root);
            let tree = Tree {
                app_dir: root.join("app"),
                tool_dir: root.join("tools/tool"),
                root,
                app_name: "app",
                app_version: Version::new(1, 0, 0),
                tool_version: Version::new(1, 2, 0),
            };
            for (path, text) in [
                (
                    "Cargo.toml",
                    "[workspace]\nmembers = [\"app\", \"tools/tool\"]\n",
                ),
                ("Cargo.lock", "version = 4\n"),
                ("README.md", "a workspace\n"),
                ("target/debug/app", "a built binary"),
                ("app/Cargo.toml", "[package]\nname = \"app\"\n"),
                ("app/build.rs", "fn main() { bincrew_build::build(); }\n"),
                ("app/src/main.rs", "fn main() {}\n"),
                ("app/src/jobs/mod.rs", "pub mod resize;\n"),
                ("app/src/jobs/resize.rs", "pub fn resize() {}\n"),
                ("app/tests/it.rs", "#[test]\nfn it() {}\n"),
                ("app/examples/demo.rs", "fn main() {}\n"),
                ("app/benches/speed.rs", "fn main() {}\n"),
                ("app/README.md", "the app\n"),
                ("tools/tool/Cargo.toml", "[package]\nname = \"tool\"\n"),
                ("tools/tool/src/main.rs", "fn main() {}\n"),
            ] {
                tree.write(path, text);
            }
            tree
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.root.join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }

        fn remove(&self, path: &str) {
            std::fs::remove_file(self.root.join(path)).expect("remove");
        }

        fn members(&self) -> Vec<Member<'_>> {
            vec![
                Member {
                    name: self.app_name,
                    version: &self.app_version,
                    dir: &self.app_dir,
                },
                Member {
                    name: "tool",
                    version: &self.tool_version,
                    dir: &self.tool_dir,
                },
            ]
        }

        /// The id of a debug build for x86_64 Linux.
        fn id(&self) -> String {
            self.id_for(TARGET, "debug")
        }

        fn id_for(&self, target: &str, profile: &str) -> String {
            build_id(target, profile, &self.root, &self.members()).expect("a build id")
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    /// A change to a tree, or to what the build id is told of it.
    type Change = fn(&mut Tree);

    #[test]
    fn the_same_inputs_give_the_same_id_of_twenty_hex_digits() {
        let tree = Tree::new();
        let id = tree.id();
        assert_eq!(id.len(), 20, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(tree.id(), id);
        // A copy of the workspace in another directory has the same id.
        assert_eq!(Tree::new().id(), id);
    }

    #[test]
    fn each_input_the_docs_list_changes_the_id() {
        let id = Tree::new().id();
        let changes: [(&str, Change); 14] = [
            ("a source file", |t| {
                t.write("app/src/main.rs", "fn main() { run() }\n")
            }),
            ("a source file in a subdirectory", |t| {
                t.write("app/src/jobs/resize.rs", "pub fn resize(_: u32) {}\n")
            }),
            ("a new source file", |t| {
                t.write("tools/tool/src/lib.rs", "\n")
            }),
            ("a removed source file", |t| {
                t.remove("app/src/jobs/resize.rs")
            }),
            ("a renamed source file", |t| {
                t.remove("app/src/jobs/resize.rs");
                t.write("app/src/jobs/scale.rs", "pub fn resize() {}\n");
            }),
            ("a member's Cargo.toml", |t| {
                t.write("tools/tool/Cargo.toml", "[package]\nname = \"tool\"\n\n")
            }),
            ("a build.rs", |t| t.write("app/build.rs", "fn main() {}\n")),
            ("a new build.rs", |t| {
                t.write("tools/tool/build.rs", "fn main() {}\n")
            }),
            ("Cargo.lock", |t| t.write("Cargo.lock", "version = 3\n")),
            ("no Cargo.lock", |t| t.remove("Cargo.lock")),
            ("the workspace's Cargo.toml", |t| {
                t.write("Cargo.toml", "[workspace]\nmembers = [\"*\"]\n")
            }),
            ("the app's package name", |t| t.app_name = "application"),
            ("the app's version", |t| {
                t.app_version = Version::new(1, 0, 1)
            }),
            ("the tool's version", |t| {
                t.tool_version = Version::parse("1.2.0-rc.1").expect("a version")
            }),
        ];
        for (change, apply) in changes {
            let mut tree = Tree::new();
            apply(&mut tree);
            assert_ne!(tree.id(), id, "{change} left the id as it was");
        }

        let tree = Tree::new();
        assert_ne!(
            tree.id_for("aarch64-unknown-linux-gnu", "debug"),
            id,
            "the target"
        );
        assert_ne!(tree.id_for(TARGET, "release"), id, "the profile");
    }

    #[test]
    fn files_outside_what_the_docs_list_do_not_change_the_id() {
        let id = Tree::new().id();
        let changes: [(&str, Change); 6] = [
            ("a test", |t| {
                t.write("app/tests/it.rs", "#[test]\nfn other() {}\n")
            }),
            ("a new example", |t| {
                t.write("app/examples/more.rs", "fn main() {}\n")
            }),
            ("a bench", |t| t.write("app/benches/speed.rs", "\n")),
            ("a member's README", |t| t.write("app/README.md", "more\n")),
            ("the workspace's README", |t| t.write("README.md", "more\n")),
            ("the target directory", |t| {
                t.write("target/debug/app", "another built binary")
            }),
        ];
        for (change, apply) in changes {
            let mut tree = Tree::new();
            apply(&mut tree);
            assert_eq!(tree.id(), id, "{change} changed the id");
        }
    }

    #[test]
    fn the_order_of_the_members_and_of_the_files_does_not_matter() {
        let tree = Tree::new();
        let id = tree.id();

        let mut members = tree.members();
        members.reverse();
        let reversed = build_id(TARGET, "debug", &tree.root, &members).expect("a build id");
        assert_eq!(reversed, id, "members in another order");

        // The same sources, written in the opposite order.
        let other = Tree::new();
        std::fs::remove_dir_all(other.root.join("app/src")).expect("remove");
        other.write("app/src/jobs/resize.rs", "pub fn resize() {}\n");
        other.write("app/src/jobs/mod.rs", "pub mod resize;\n");
        other.write("app/src/main.rs", "fn main() {}\n");
        assert_eq!(other.id(), id, "files written in another order");
    }

    #[test]
    fn the_files_of_a_member_are_its_manifest_its_build_script_and_its_sources_in_path_order() {
        let tree = Tree::new();
        let relative = |dir: &str| -> Vec<String> {
            let dir = tree.root.join(dir);
            member_files(&dir)
                .expect("the files")
                .iter()
                .map(|f| {
                    f.strip_prefix(&dir)
                        .expect("under the member")
                        .to_string_lossy()
                        .replace('\\', "/")
                })
                .collect()
        };
        assert_eq!(
            relative("app"),
            [
                "Cargo.toml",
                "build.rs",
                "src/jobs/mod.rs",
                "src/jobs/resize.rs",
                "src/main.rs"
            ]
        );
        assert_eq!(relative("tools/tool"), ["Cargo.toml", "src/main.rs"]);
    }

    #[test]
    fn a_file_that_cannot_be_read_fails_with_its_path() {
        let tree = Tree::new();
        tree.remove("tools/tool/Cargo.toml");
        match build_id(TARGET, "debug", &tree.root, &tree.members()) {
            Err(BuildError::Read { path, .. }) => {
                assert_eq!(path, tree.root.join("tools/tool/Cargo.toml"));
            }
            other => panic!("expected a read error, got {other:?}"),
        }
    }
}
