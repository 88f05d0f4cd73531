//! An app that runs a dedicated worker binary, the `dedicated_worker` example, found beside the
//! app's own executable.
//!
//! ```sh
//! cargo build --examples                # builds the worker binary and this app
//! cargo run --example dedicated_app
//! ```
//!
//! `cargo run --example dedicated_app` alone builds only the app: when the worker binary is
//! missing, the app says so and exits with code 1.

#[path = "dedicated/protocol.rs"]
mod protocol;

use std::process::ExitCode;

use bincrew::{Compat, StartError, Worker};
use protocol::{Eval, EvalResponse};

/// The worker binary's name: its target name (a `[[bin]]` in a real project, here an example).
const BINARY: &str = "dedicated_worker";

fn main() -> ExitCode {
    // The app records its identity too: the handshake compares both sides'.
    bincrew::init!();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dedicated_app: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let started = Worker::<Eval, EvalResponse>::builder(protocol::WORKER)
        // Look for the binary by name: `$BINCREW_EXE_DEDICATED_WORKER`, then beside this
        // executable. Cargo builds examples into `target/<profile>/examples/`, side by side, just
        // as a shipped app has its workers beside it. (In a workspace whose worker is a `[[bin]]`,
        // `.cargo_build(true)` would also let cargo build it in development; cargo cannot build
        // an example that way.)
        .binary(BINARY)
        // The default policy, `Compat::SameBuild`, wants a build id that shows both binaries come
        // from one build, stamped by `bincrew_build::build()` in the build script of each
        // binary's package; do that in your project and keep the default. The examples of this
        // repository are not stamped, so they settle for the same package version.
        .compat(Compat::SameVersion)
        .start_blocking();
    let worker = match started {
        Ok(worker) => worker,
        Err(e @ StartError::NotFound { .. }) => {
            let hint =
                "build the worker binary first: `cargo build --examples` builds it and this app";
            return Err(format!("{e}\n\n{hint}").into());
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "worker `{}` started: pid {}, {}",
        worker.name(),
        worker.id(),
        worker.build_info()
    );

    let cases: [(&str, EvalResponse); 5] = [
        ("3 4 + 2 *", Ok(14)),
        ("100 7 /", Ok(14)),
        ("1 2 3 * + 4 -", Ok(3)),
        ("1 +", Err("`+` needs two operands".into())),
        ("1 0 /", Err("1 / 0 has no value in i64".into())),
    ];
    // `run` queues each request; the first `wait` sends all of them in one go, and the worker
    // runs them side by side. `wait` blocks the calling thread: this app is not async.
    let replies: Vec<_> = cases
        .iter()
        .map(|(expression, _)| {
            worker.run(Eval {
                expression: (*expression).to_owned(),
            })
        })
        .collect();
    for ((expression, expected), reply) in cases.iter().zip(replies) {
        // The outer `?` is bincrew's (the worker crashed, ...); the inner `Result` is the
        // worker's own answer.
        let answer = reply.wait()?;
        match &answer {
            Ok(value) => println!("{expression:>14} = {value}"),
            Err(why) => println!("{expression:>14}: {why}"),
        }
        assert_eq!(&answer, expected, "{expression}");
    }

    worker.shutdown_blocking()?;
    println!("worker `{}` shut down cleanly", worker.name());
    Ok(())
}
