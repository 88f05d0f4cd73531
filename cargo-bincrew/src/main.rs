//! `cargo bincrew`: list, stage and verify the apps and worker binaries of a bincrew workspace.
//!
//! - `list` reads `[package.metadata.bincrew] workers` of every workspace package, says whether
//!   each declared app/worker pair holds, and probes each binary already built for the workers
//!   it serves (an app's self-spawned workers among them).
//! - `stage --out DIR` builds the apps and their worker binaries, copies them side by side into
//!   DIR with `bincrew-manifest.json` (versions, build ids, sizes, SHA-256), and verifies DIR.
//! - `verify DIR` checks DIR against its manifest and starts every worker for real (the bincrew
//!   handshake, then a clean shutdown) to check that each is the build the manifest and its apps
//!   expect. It needs neither cargo nor the workspace: `cargo-bincrew verify DIR` runs alone.
//!
//! Cargo runs it as `cargo-bincrew bincrew <args>`; run directly, the `bincrew` is optional.

mod list;
mod manifest;
mod probe;
mod profile;
mod stage;
mod verify;
mod workspace;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::profile::Profile;

const EXAMPLES: &str = "\
Examples:
  cargo bincrew list                             # in any directory of the workspace
  cargo bincrew list --manifest-path ../shop/Cargo.toml --json
  cargo bincrew stage --out dist --release       # build, copy, write the manifest, verify
  cargo bincrew stage --out dist --profile dist -- --locked
  cargo bincrew verify /opt/shop                 # on the target machine
  cargo-bincrew verify /opt/shop --json          # the same where cargo is not installed

Install: cargo install --path cargo-bincrew (from a checkout of bincrew)";

const LIST_EXAMPLES: &str = "\
Examples:
  cargo bincrew list
  cargo bincrew list --manifest-path ../shop/Cargo.toml
  cargo bincrew list --release --json            # probe the release binaries, print JSON

Exits with 1 when a declared pair does not hold.";

const STAGE_EXAMPLES: &str = "\
Examples:
  cargo bincrew stage --out dist --release
  cargo bincrew stage --out dist --profile dist --force
  cargo bincrew stage --out dist --manifest-path ../shop/Cargo.toml -- --locked --features gpu

Exits with 1 when the staged directory does not verify.";

const VERIFY_EXAMPLES: &str = "\
Examples:
  cargo bincrew verify /opt/shop
  cargo-bincrew verify /opt/shop --json --timeout 30

Needs neither cargo nor the workspace: copy the cargo-bincrew binary to the target machine and
run it there. Exits with 1 when a check fails; warnings (a worker from another build that its
apps accept) do not fail it.";

#[derive(Parser)]
#[command(
    name = "cargo-bincrew",
    bin_name = "cargo bincrew",
    version,
    about = "List, stage and verify the app and worker binaries of a bincrew workspace",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// List the apps and worker binaries of the workspace, check that each declared pair holds,
    /// and show the workers each built binary serves.
    #[command(after_help = LIST_EXAMPLES)]
    List {
        /// Path to the workspace's Cargo.toml (by default, the workspace of the current
        /// directory).
        #[arg(long, value_name = "PATH")]
        manifest_path: Option<PathBuf>,
        /// Print the listing as JSON.
        #[arg(long)]
        json: bool,
        /// Probe the binaries built with the release profile.
        #[arg(long, conflicts_with = "profile")]
        release: bool,
        /// Probe the binaries built with this cargo profile (dev by default).
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// Probe the binaries built for this target triple.
        #[arg(long, value_name = "TRIPLE")]
        target: Option<String>,
        /// Seconds each built binary has to answer the probe.
        #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
        timeout: f64,
    },
    /// Build the apps and their worker binaries, copy them into DIR with a manifest, and verify DIR.
    #[command(after_help = STAGE_EXAMPLES)]
    Stage {
        /// The deployment directory to create.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Build with the release profile.
        #[arg(long, conflicts_with = "profile")]
        release: bool,
        /// Build with this cargo profile (dev by default).
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// Build for this target triple.
        #[arg(long, value_name = "TRIPLE")]
        target: Option<String>,
        /// Path to the workspace's Cargo.toml (by default, the workspace of the current
        /// directory).
        #[arg(long, value_name = "PATH")]
        manifest_path: Option<PathBuf>,
        /// Replace the files of a DIR that is not empty.
        #[arg(long)]
        force: bool,
        /// Seconds each binary has to complete the handshake (and to exit when probed).
        #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
        timeout: f64,
        /// Further arguments for `cargo build`, after `--` (such as --offline, --locked,
        /// --config KEY=VALUE, --features F).
        #[arg(last = true, value_name = "CARGO_BUILD_ARGS")]
        cargo_args: Vec<OsString>,
    },
    /// Check DIR against its manifest and start each worker to check its live identity.
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify {
        /// The deployment directory, made by `cargo bincrew stage`.
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds each binary has to complete the handshake (and to exit when probed).
        #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
        timeout: f64,
    },
}

fn timeout(seconds: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("--timeout {seconds} is not a positive number of seconds"))
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Commands::List {
            manifest_path,
            json,
            release,
            profile,
            target,
            timeout: seconds,
        } => {
            let listing = list::list(&list::Options {
                manifest_path,
                profile: Profile::from_args(release, profile),
                target,
                timeout: timeout(seconds)?,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listing)?);
            } else {
                print!("{}", listing.render());
            }
            Ok(listing.passed)
        }
        Commands::Stage {
            out,
            release,
            profile,
            target,
            manifest_path,
            force,
            timeout: seconds,
            cargo_args,
        } => stage::stage(&stage::Options {
            out,
            profile: Profile::from_args(release, profile),
            target,
            manifest_path,
            force,
            timeout: timeout(seconds)?,
            cargo_args,
        }),
        Commands::Verify {
            dir,
            json,
            timeout: seconds,
        } => {
            let report = verify::verify(&dir, timeout(seconds)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(report.passed)
        }
    }
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    // `cargo bincrew ...` runs `cargo-bincrew bincrew ...`.
    if args.get(1).is_some_and(|a| a == "bincrew") {
        args.remove(1);
    }
    let cli = Cli::parse_from(args);
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_shows_examples_for_every_command() {
        let mut cli = Cli::command();
        let help = cli.render_long_help().to_string();
        assert!(help.contains("Examples:"), "{help}");
        assert!(
            help.contains("cargo install --path cargo-bincrew"),
            "{help}"
        );
        for (name, example) in [
            ("list", "cargo bincrew list --manifest-path"),
            ("stage", "cargo bincrew stage --out dist --profile dist"),
            ("verify", "cargo-bincrew verify /opt/shop --json"),
        ] {
            let sub = cli.find_subcommand_mut(name).expect("subcommand");
            let help = sub.render_long_help().to_string();
            assert!(help.contains(example), "{name}: {help}");
        }
    }

    #[test]
    fn release_and_profile_exclude_each_other() {
        for command in ["list", "stage"] {
            let mut args = vec!["cargo-bincrew", command, "--release", "--profile", "dist"];
            if command == "stage" {
                args.extend(["--out", "dist"]);
            }
            let error = Cli::try_parse_from(&args).err().expect("refused");
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{command}"
            );
        }
        let cli =
            Cli::try_parse_from(["cargo-bincrew", "stage", "--out", "d", "--profile", "dist"])
                .expect("parses");
        let Commands::Stage { profile, .. } = cli.command else {
            panic!("not stage");
        };
        assert_eq!(profile.as_deref(), Some("dist"));
    }
}
