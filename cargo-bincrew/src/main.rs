//! `cargo bincrew`: list, stage and verify the apps and worker binaries of a bincrew workspace.
//!
//! - `list` reads `[package.metadata.bincrew] workers` of every workspace package and says
//!   whether each declared app/worker pair holds.
//! - `stage --out DIR` builds the apps and their worker binaries, copies them side by side into
//!   DIR with `bincrew-manifest.json` (versions, build ids, sizes, SHA-256), and verifies DIR.
//! - `verify DIR` checks DIR against its manifest and starts every worker for real (the bincrew
//!   handshake, then a clean shutdown) to check that each is the build the manifest and its apps
//!   expect.
//!
//! Cargo runs it as `cargo-bincrew bincrew <args>`; run directly, the `bincrew` is optional.

mod manifest;
mod probe;
mod stage;
mod verify;
mod workspace;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo-bincrew",
    bin_name = "cargo bincrew",
    version,
    about = "List, stage and verify the app and worker binaries of a bincrew workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// List the apps and worker binaries of the workspace and check that each declared pair holds.
    List {
        /// Path to the workspace's Cargo.toml.
        #[arg(long, value_name = "PATH")]
        manifest_path: Option<PathBuf>,
    },
    /// Build the apps and their worker binaries, copy them into DIR with a manifest, and verify DIR.
    Stage {
        /// The deployment directory to create.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
        /// Build for this target triple.
        #[arg(long, value_name = "TRIPLE")]
        target: Option<String>,
        /// Path to the workspace's Cargo.toml.
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
        Commands::List { manifest_path } => {
            let workspace = workspace::Workspace::read(manifest_path.as_deref())?;
            print!("{}", workspace.render());
            Ok(workspace.problems().is_empty())
        }
        Commands::Stage {
            out,
            release,
            target,
            manifest_path,
            force,
            timeout: seconds,
            cargo_args,
        } => stage::stage(&stage::Options {
            out,
            release,
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
