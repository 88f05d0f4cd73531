//! What the `dedicated_app` and `dedicated_worker` examples share: the worker's name and its
//! request and response types.
//!
//! In a real project this is a small library crate that both the app and the worker binary depend
//! on (as `worker-bins/hasher/src/lib.rs` is in this repository). Examples cannot depend on each
//! other, so the two examples include this file with `#[path]`. Either way both sides are built
//! from one definition of the types, which the handshake checks.

use serde::{Deserialize, Serialize};

/// The worker's name.
pub const WORKER: &str = "rpn";

/// Evaluate an expression in reverse Polish notation, such as `3 4 + 2 *`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Eval {
    pub expression: String,
}

/// The value, or why the expression is wrong. A wrong expression is an answer like any other;
/// only a worker that crashes, hangs or breaks the protocol makes the request fail.
pub type EvalResponse = Result<i64, String>;
