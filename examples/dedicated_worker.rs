//! A dedicated worker binary: an executable of its own that only serves workers. Its app is the
//! `dedicated_app` example, which starts it.
//!
//! ```sh
//! cargo build --examples                # builds this worker and its app
//! cargo run --example dedicated_app     # the app starts this worker
//! ```
//!
//! Run by hand, `run_dedicated` explains what the binary is and exits with code 2
//! (`--version` prints its package, version, build id and the workers it serves, and exits 0).

#[path = "dedicated/protocol.rs"]
mod protocol;

use bincrew::RequestArgs;
use protocol::{Eval, EvalResponse};

/// The handler: a plain function, run on one of the worker's handler threads. Native code that
/// may crash belongs here, in the worker, rather than in the app.
fn eval(args: RequestArgs<Eval>) -> EvalResponse {
    let mut stack: Vec<i64> = Vec::new();
    for token in args.request.expression.split_whitespace() {
        let value = match token {
            "+" | "-" | "*" | "/" => {
                let (Some(b), Some(a)) = (stack.pop(), stack.pop()) else {
                    return Err(format!("`{token}` needs two operands"));
                };
                let value = match token {
                    "+" => a.checked_add(b),
                    "-" => a.checked_sub(b),
                    "*" => a.checked_mul(b),
                    _ => a.checked_div(b),
                };
                value.ok_or_else(|| format!("{a} {token} {b} has no value in i64"))?
            }
            number => number
                .parse()
                .map_err(|_| format!("`{number}` is neither a number nor an operator"))?,
        };
        stack.push(value);
    }
    match stack[..] {
        [value] => Ok(value),
        [] => Err("the expression is empty".to_owned()),
        _ => Err(format!("{} values are left over", stack.len())),
    }
}

fn main() {
    // Records the binary's identity for the handshake, as in every bincrew executable.
    bincrew::init!();
    // Serves the worker the app started this process as, and never returns.
    bincrew::Workers::new()
        .blocking_worker(protocol::WORKER, eval)
        .run_dedicated();
}
