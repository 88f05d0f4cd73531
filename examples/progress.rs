//! Progress reports from a worker, over an IPC channel carried in the request.
//!
//! ```sh
//! cargo run --example progress
//! ```
//!
//! A request may hold IPC channels: the app makes one with `bincrew::channel`, puts the sender
//! in the request, and reads the receiver while the worker works. The channel ends when the
//! worker drops its sender, at the latest when the handler returns.

use std::thread;

use bincrew::{IpcSender, RequestArgs, Worker};
use serde::{Deserialize, Serialize};

const IMPORT: &str = "import";

/// Import `records` records, reporting as it goes.
#[derive(Debug, Serialize, Deserialize)]
struct Import {
    records: u32,
    /// Where the worker reports progress. Any serde type can travel on it.
    progress: IpcSender<Progress>,
}

/// A progress report.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Progress {
    Started { total: u32 },
    Imported { done: u32 },
    Warning(String),
}

/// The handler, in the worker process.
fn import(args: RequestArgs<Import>) -> u32 {
    let Import { records, progress } = args.request;
    // A send fails only when the app dropped its receiver: it stopped listening, and the work
    // goes on regardless.
    let _ = progress.send(Progress::Started { total: records });
    let mut imported = 0;
    for record in 1..=records {
        if record % 7 == 0 {
            let _ = progress.send(Progress::Warning(format!("record {record} looks odd")));
        }
        imported += 1;
        let _ = progress.send(Progress::Imported { done: record });
    }
    imported
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    bincrew::init!();
    bincrew::run_worker_blocking(IMPORT, import);

    let worker = Worker::<Import, u32>::start_blocking(IMPORT)?;
    let records = 20;
    let (progress, reports) = bincrew::channel::<Progress>()?;

    // `IpcReceiver::recv` blocks, so the reports are read on a thread of their own while this
    // thread waits for the answer. (A request goes out when its reply is first waited on or
    // polled: reading the reports first, on this thread, would wait for ever.)
    let listener = thread::spawn(move || {
        let mut received = Vec::new();
        // `recv` fails once every sender is gone: the one in the request went to the worker,
        // which drops it when the handler returns.
        while let Ok(report) = reports.recv() {
            match &report {
                Progress::Started { total } => println!("import: {total} records to go"),
                Progress::Imported { done } => println!("import: {done}/{records}"),
                Progress::Warning(what) => println!("import: warning: {what}"),
            }
            received.push(report);
        }
        received
    });

    // The sender moves into the request: the app keeps no copy, so the channel ends with the
    // worker's.
    let imported = worker.run_blocking(Import { records, progress })?;
    let received = listener.join().expect("the listener does not panic");
    println!("imported {imported} records, {} reports", received.len());

    assert_eq!(imported, records);
    assert_eq!(
        received.first(),
        Some(&Progress::Started { total: records })
    );
    assert_eq!(received.last(), Some(&Progress::Imported { done: records }));
    // Reports on one channel arrive in the order they were sent.
    let done: Vec<u32> = received
        .iter()
        .filter_map(|report| match report {
            Progress::Imported { done } => Some(*done),
            _ => None,
        })
        .collect();
    assert_eq!(done, (1..=records).collect::<Vec<_>>());
    let warnings = received
        .iter()
        .filter(|report| matches!(report, Progress::Warning(_)))
        .count();
    assert_eq!(warnings, 2);

    worker.shutdown_blocking()?;
    Ok(())
}
