//! The cargo profile a command builds with (`stage`) or looks in for built binaries (`list`).

/// A cargo profile, as `--release` or `--profile NAME` chose it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    name: String,
}

impl Profile {
    /// The profile `--release` and `--profile` ask for: `dev` when neither is given. Clap keeps
    /// the two from being given together.
    pub fn from_args(release: bool, profile: Option<String>) -> Profile {
        let name = match profile {
            Some(name) => name,
            None if release => "release".to_owned(),
            None => "dev".to_owned(),
        };
        Profile { name }
    }

    /// The directory of the target dir (or of its `<triple>/` directory) its binaries go to:
    /// `debug` for `dev` and `test`, `release` for `release` and `bench`, else its name.
    pub fn dir(&self) -> &str {
        match self.name.as_str() {
            "dev" | "test" => "debug",
            "release" | "bench" => "release",
            custom => custom,
        }
    }

    /// The arguments that make `cargo build` build with it.
    pub fn cargo_args(&self) -> Vec<String> {
        match self.name.as_str() {
            "dev" => Vec::new(),
            "release" => vec!["--release".to_owned()],
            name => vec!["--profile".to_owned(), name.to_owned()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_profile_has_its_directory_and_cargo_arguments() {
        let cases = [
            (false, None, "debug", &[][..]),
            (true, None, "release", &["--release"][..]),
            (false, Some("dev"), "debug", &[][..]),
            (false, Some("test"), "debug", &["--profile", "test"][..]),
            (false, Some("release"), "release", &["--release"][..]),
            (false, Some("bench"), "release", &["--profile", "bench"][..]),
            (false, Some("dist"), "dist", &["--profile", "dist"][..]),
        ];
        for (release, name, dir, args) in cases {
            let profile = Profile::from_args(release, name.map(str::to_owned));
            assert_eq!(profile.dir(), dir, "{profile:?}");
            assert_eq!(profile.cargo_args(), args, "{profile:?}");
        }
    }
}
