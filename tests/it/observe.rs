//! What bincrew tells a `tracing` subscriber: the locator's choice, the start and its handshake,
//! the type comparison's fallback, a crash.

use std::sync::{Mutex, OnceLock};

use bincrew::Worker;
use misbehave::{Request, Response};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use crate::support::init;

/// Every event of the process, as `message field=value ...` lines.
static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Recorder;

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        let mut events = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() < 100_000 {
            events.push(line.0);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn recorded(what: &str, pid: u32) -> Option<String> {
    let pid = format!("pid={pid}");
    EVENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|line| line.starts_with(what) && line.contains(&pid))
        .cloned()
}

#[test]
fn starts_choices_and_crashes_are_traced() {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    assert!(*INSTALLED.get_or_init(|| tracing::subscriber::set_global_default(Recorder).is_ok()));
    init();
    let worker = Worker::<Request, Response>::builder("misbehave")
        .binary("misbehave")
        .compat(bincrew::Compat::SameVersion)
        .forward_stderr(false)
        .start_blocking()
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = worker.id();

    let found = EVENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|l| l.starts_with("worker binary found") && l.contains("binary=misbehave"))
        .cloned()
        .expect("the locator's choice");
    assert!(
        found.contains("in the cargo target dir the app runs from"),
        "{found}"
    );

    let started = recorded("worker started", pid).expect("the start");
    assert!(started.contains("worker=misbehave"), "{started}");
    assert!(started.contains("handshake_ms="), "{started}");

    // misbehave's request type carries IPC handles: compared by name, with a warning.
    assert!(EVENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(
            |l| l.starts_with("the handshake compares these types by name only")
                && l.contains("misbehave::Request")
        ));

    let _ = worker.run_blocking(Request::Abort).expect_err("aborts");
    crate::support::eventually("the crash is traced", || {
        recorded("worker crashed", pid).is_some_and(|l| l.contains("SIGABRT"))
    });
}
