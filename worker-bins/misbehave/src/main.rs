//! The `misbehave` worker binary. Run with a subcommand it is an app instead, which starts
//! itself as a worker (self-spawn): `selfspawn` runs a few requests and shuts down, `hold` prints
//! its worker's pid and waits to be killed, `start-silent` starts a copy that never connects.

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use bincrew::{RequestArgs, Worker};
use misbehave::{Request, Response, WORKER};

static RELEASED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static RELEASE: Condvar = Condvar::new();

fn handle(args: RequestArgs<Request>) -> Response {
    match args.request {
        Request::Echo(text) => Response::Text(text),
        Request::WaitFor(key) => {
            let mut released = RELEASED.lock().unwrap_or_else(|e| e.into_inner());
            while !released.get_or_insert_with(HashSet::new).contains(&key) {
                released = RELEASE.wait(released).unwrap_or_else(|e| e.into_inner());
            }
            Response::Text(key)
        }
        Request::Release(key) => {
            RELEASED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(HashSet::new)
                .insert(key.clone());
            RELEASE.notify_all();
            Response::Text(key)
        }
        Request::Sleep { ms, reply } => {
            std::thread::sleep(Duration::from_millis(ms));
            Response::Text(reply)
        }
        Request::Stderr(text) => {
            eprintln!("{text}");
            Response::Text(text)
        }
        Request::Progress { steps, progress } => {
            for step in 1..=steps {
                let _ = progress.send(step);
            }
            Response::Number(u64::from(steps))
        }
        Request::Checksum(blob) => {
            let sum = blob.iter().map(|b| u64::from(*b)).sum::<u64>();
            Response::Text(format!("{} {sum}", blob.len()))
        }
        Request::Pid => Response::Number(u64::from(std::process::id())),
        Request::Panic(message) => panic!("{message}"),
        Request::Abort => std::process::abort(),
        Request::Segfault => {
            let p: *mut u8 = std::hint::black_box(std::ptr::null_mut());
            // SAFETY: none; crashing is the point.
            unsafe { p.write_volatile(1) };
            Response::Text("survived a segfault?".into())
        }
        Request::StackOverflow => Response::Number(recurse(u64::MAX)),
        Request::Exit(code) => std::process::exit(code),
        Request::Hang => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}

fn recurse(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 64]);
    if n == 0 {
        return 0;
    }
    frame[3].wrapping_add(recurse(std::hint::black_box(n - 1)))
}

/// Breaks the handshake when asked to by the environment.
fn misbehave_before_serving() {
    if std::env::var_os("BINCREW_WORKER").is_none() {
        return;
    }
    if let Ok(code) = std::env::var("MISBEHAVE_EXIT_EARLY") {
        eprintln!("misbehave: exiting before the handshake, as asked");
        std::process::exit(code.parse().unwrap_or(1));
    }
    if std::env::var_os("MISBEHAVE_NEVER_CONNECT").is_some() {
        eprintln!("misbehave: never connecting, as asked");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if std::env::var_os("MISBEHAVE_WRONG_TOKEN").is_some() {
        std::env::set_var("BINCREW_TOKEN", "not-the-token");
    }
    if std::env::var_os("MISBEHAVE_GARBAGE_HELLO").is_some() {
        if let Ok(server) = std::env::var("BINCREW_SERVER") {
            if let Ok(tx) = bincrew::IpcSender::<String>::connect(server) {
                let _ = tx.send("GET / HTTP/1.1".to_owned());
            }
        }
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    if std::env::var_os("MISBEHAVE_NO_INIT").is_none() {
        bincrew::init!();
    }
    misbehave_before_serving();
    bincrew::Workers::new()
        .blocking_worker(WORKER, handle)
        .blocking_worker("echo-string", |args: RequestArgs<String>| args.request)
        .run();

    let command = std::env::args().nth(1).unwrap_or_default();
    match command.as_str() {
        "selfspawn" => selfspawn(),
        "hold" => hold(),
        "start-silent" => start_silent(),
        _ => {
            eprintln!("misbehave is a bincrew worker binary: its app starts it (or run it with selfspawn, hold or start-silent)");
            std::process::exit(2);
        }
    }
}

/// An app that starts itself as its worker, runs requests in parallel and shuts down.
fn selfspawn() {
    let worker = match Worker::<Request, Response>::start_blocking(WORKER) {
        Ok(worker) => worker,
        Err(e) => {
            println!("start failed: {e}");
            std::process::exit(1);
        }
    };
    let info = worker.build_info();
    println!(
        "worker {} {} pid {}",
        info.package,
        info.version,
        worker.id()
    );
    let replies: Vec<_> = (0..8)
        .map(|i| worker.run(Request::Echo(format!("hello {i}"))))
        .collect();
    for reply in replies {
        match reply.wait() {
            Ok(Response::Text(text)) => println!("ok: {text}"),
            other => println!("unexpected: {other:?}"),
        }
    }
    match worker.shutdown_blocking() {
        Ok(()) => println!("shutdown ok"),
        Err(e) => println!("shutdown failed: {e}"),
    }
}

/// An app that starts its worker, prints the worker's pid and waits to be killed.
fn hold() {
    let worker = match Worker::<Request, Response>::start_blocking(WORKER) {
        Ok(worker) => worker,
        Err(e) => {
            println!("start failed: {e}");
            std::process::exit(1);
        }
    };
    println!("worker-pid {}", worker.id());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// An app whose worker never connects: shows the connect timeout taken from the environment.
fn start_silent() {
    let result = Worker::<Request, Response>::builder(WORKER)
        .env("MISBEHAVE_NEVER_CONNECT", "1")
        .start_blocking();
    match result {
        Ok(_) => println!("started?"),
        Err(e) => println!("start failed: {e}"),
    }
}
