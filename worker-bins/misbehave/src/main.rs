//! The `misbehave` worker binary. Run with a subcommand it is an app instead, which starts
//! itself as a worker (self-spawn): `selfspawn` runs a few requests and shuts down, `hold` prints
//! its worker's pid and waits to be killed, `start-silent` starts a copy that never connects.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use bincrew::{IpcSender, RequestArgs, Worker};
use misbehave::{Request, Response, WORKER};

static RELEASED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
/// How many `Busy` requests saw their cancellation.
static CANCELLED: AtomicU64 = AtomicU64::new(0);
/// How many bytes `Leak` requests leaked.
static LEAKED: AtomicU64 = AtomicU64::new(0);
static RELEASE: Condvar = Condvar::new();
/// Set by the slow panic hook: every `WaitFor` is released.
static RELEASE_ALL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Waits until a `Release` of `key` has arrived (or every wait is released).
fn wait_for(key: &str) {
    let mut released = RELEASED.lock().unwrap_or_else(|e| e.into_inner());
    while !released.get_or_insert_with(HashSet::new).contains(key)
        && !RELEASE_ALL.load(Ordering::SeqCst)
    {
        released = RELEASE.wait(released).unwrap_or_else(|e| e.into_inner());
    }
}

fn handle(args: RequestArgs<Request>) -> Response {
    let cancel = args.cancel_token();
    let answer_messages = args.answer_messages_sent();
    match args.request {
        Request::Echo(text) | Request::EchoWithChannel { text, .. } => Response::Text(text),
        Request::WaitFor(key) => {
            wait_for(&key);
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
        Request::Sockets => Response::Number(count_sockets()),
        Request::ChildSockets => {
            let out = std::process::Command::new(std::env::current_exe().unwrap_or_default())
                .arg("count-sockets")
                .stderr(std::process::Stdio::inherit())
                .output();
            match out {
                Ok(out) => Response::Number(
                    String::from_utf8_lossy(&out.stdout)
                        .trim()
                        .parse()
                        .unwrap_or(u64::MAX),
                ),
                Err(e) => Response::Text(format!("cannot start a child: {e}")),
            }
        }
        Request::Stdout(text) => {
            println!("{text}");
            let _ = std::io::stdout().flush();
            Response::Text(text)
        }
        Request::Cwd => Response::Text(
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        ),
        Request::Env(key) => {
            Response::Text(std::env::var(&key).unwrap_or_else(|_| "<unset>".into()))
        }
        Request::Increment(mut buffer) => {
            for byte in buffer.iter_mut() {
                *byte = byte.wrapping_add(1);
            }
            Response::Buffer(buffer)
        }
        Request::Stamp { mut buffer, after } => {
            if let Some(key) = after {
                wait_for(&key);
            }
            let address = buffer.as_ptr() as u64;
            let marked = misbehave::mapping_is_marked(&buffer);
            misbehave::mark_mapping(&buffer);
            for byte in buffer.iter_mut() {
                *byte = byte.wrapping_add(1);
            }
            Response::Stamped {
                buffer,
                address,
                marked,
            }
        }
        Request::Sum(buffer) => Response::Number(buffer.iter().map(|b| u64::from(*b)).sum()),
        Request::CancelledCount => Response::Number(CANCELLED.load(Ordering::Relaxed)),
        Request::AnswerMessages => Response::Number(answer_messages),
        Request::CrashOnce(marker) => {
            if std::fs::create_dir(&marker).is_ok() {
                let p: *mut u8 = std::hint::black_box(std::ptr::null_mut());
                // SAFETY: none; crashing is the point.
                unsafe { p.write_volatile(1) };
            }
            Response::Text("survived".into())
        }
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
        Request::Busy { ms } => {
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                if cancel.is_cancelled() {
                    CANCELLED.fetch_add(1, Ordering::Relaxed);
                    return Response::Text("cancelled".into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Response::Text("finished".into())
        }
        Request::AllocateForever => {
            let mut held: Vec<Vec<u8>> = Vec::new();
            loop {
                held.push(touched(1 << 20));
                std::hint::black_box(&held);
            }
        }
        Request::Leak(bytes) => {
            let leaked = touched(usize::try_from(bytes).unwrap_or(usize::MAX));
            std::mem::forget(std::hint::black_box(leaked));
            Response::Number(LEAKED.fetch_add(bytes, Ordering::Relaxed) + bytes)
        }
        Request::Spin => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        Request::Burn { ms } => {
            let until = Instant::now() + Duration::from_millis(ms);
            let mut x = 0u64;
            while Instant::now() < until {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            Response::Text("burnt".into())
        }
        Request::ChildHog(mib) => {
            use std::io::BufRead;
            let child = std::process::Command::new(std::env::current_exe().unwrap_or_default())
                .arg("hog")
                .arg(mib.to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .spawn();
            match child {
                Ok(mut child) => {
                    let pid = child.id();
                    let mut line = String::new();
                    if let Some(out) = child.stdout.take() {
                        let _ = std::io::BufReader::new(out).read_line(&mut line);
                    }
                    std::mem::forget(child);
                    Response::Number(u64::from(pid))
                }
                Err(e) => Response::Text(format!("cannot start the hog: {e}")),
            }
        }
        Request::Grandchild => match std::process::Command::new("sleep")
            .arg("1000")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
        {
            Ok(child) => {
                let pid = child.id();
                // Never waited for: it lives until something kills it.
                std::mem::forget(child);
                Response::Number(u64::from(pid))
            }
            Err(e) => Response::Text(format!("cannot start sleep: {e}")),
        },
        Request::NoDescriptors(len) => {
            use_up_descriptors();
            Response::Text("x".repeat(usize::try_from(len).unwrap_or(0)))
        }
        Request::Allocate(bytes) => {
            let mut block = vec![0u8; usize::try_from(bytes).unwrap_or(usize::MAX)];
            let len = block.len();
            for i in (0..len).step_by(4096) {
                block[i] = 1;
            }
            Response::Number(std::hint::black_box(block).len() as u64)
        }
    }
}

/// Lowers this process's soft limit of open descriptors to what it has open, and fills any
/// gap below it, so that opening one more fails (`EMFILE`). Linux only; elsewhere nothing.
fn use_up_descriptors() {
    #[cfg(target_os = "linux")]
    {
        let highest = std::fs::read_dir("/proc/self/fd")
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
                    .max()
                    .unwrap_or(2)
            })
            .unwrap_or(2);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write the struct given.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = highest + 1;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        // Each open takes the lowest free number: the gaps fill, then opening fails.
        let mut held = Vec::new();
        while let Ok(file) = std::fs::File::open("/dev/null") {
            held.push(file);
        }
        std::mem::forget(held);
    }
}

/// A buffer of `bytes` with every page written, so that it is resident.
fn touched(bytes: usize) -> Vec<u8> {
    let mut block = vec![0u8; bytes];
    for i in (0..bytes).step_by(4096) {
        block[i] = 1;
    }
    block
}

fn recurse(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 64]);
    if n == 0 {
        return 0;
    }
    frame[3].wrapping_add(recurse(std::hint::black_box(n - 1)))
}

/// How many of this process's descriptors are sockets.
fn count_sockets() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return u64::MAX;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count() as u64
}

/// Breaks the handshake when asked to by the environment.
fn misbehave_before_serving() {
    if std::env::var_os("MISBEHAVE_SQUATTER").is_some() {
        // A copy started by `MISBEHAVE_SQUAT`: take the handshake connection, send nothing.
        if let Ok(server) = std::env::var("BINCREW_SERVER") {
            let held = bincrew::IpcSender::<String>::connect(server);
            std::thread::sleep(Duration::from_secs(30));
            drop(held);
        }
        std::process::exit(0);
    }
    if std::env::var_os("BINCREW_WORKER").is_none() {
        return;
    }
    if std::env::var_os("MISBEHAVE_SLOW_PANIC").is_some() {
        // While a panic is reported, the requests waiting for any key finish: their answers
        // must not reach the app as successes.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            RELEASE_ALL.store(true, Ordering::SeqCst);
            RELEASE.notify_all();
            std::thread::sleep(Duration::from_millis(500));
            default(info);
        }));
    }
    if std::env::var_os("MISBEHAVE_SQUAT").is_some() {
        // In a process group of its own: another process, which the worker's death (its group
        // is killed with it) does not take along.
        let mut squatter = std::process::Command::new(std::env::current_exe().unwrap_or_default());
        squatter
            .env("MISBEHAVE_SQUATTER", "1")
            .env_remove("MISBEHAVE_SQUAT");
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut squatter, 0);
        let squatter = squatter.spawn();
        if squatter.is_ok() {
            // Let it connect first.
            std::thread::sleep(Duration::from_millis(300));
        }
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
    if std::env::var_os("MISBEHAVE_TRUNCATED_HELLO").is_some() {
        send_raw_hello(b"bincrew-worker-hello/1\ntoken=x\nsta");
        std::thread::sleep(Duration::from_secs(3600));
    }
    if let Ok(kind) = std::env::var("MISBEHAVE_FAKE") {
        fake_worker(&kind);
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
    // `MISBEHAVE_SKIP_SERVE=1`: a worker process that goes on into app code instead of serving.
    if std::env::var_os("MISBEHAVE_SKIP_SERVE").is_none() {
        bincrew::Workers::new()
            .blocking_worker(WORKER, handle)
            .blocking_worker("echo-string", |args: RequestArgs<String>| args.request)
            .run();
    }

    let command = std::env::args().nth(1).unwrap_or_default();
    match command.as_str() {
        "selfspawn" => selfspawn(),
        "hold" => hold(),
        "start-silent" => start_silent(),
        "upgrade-check" => upgrade_check(),
        "locate" => locate(
            &std::env::args().nth(2).unwrap_or_default(),
            std::env::args().nth(3).as_deref() == Some("--search-path"),
        ),
        "count-sockets" => println!("{}", count_sockets()),
        "core-limits" => core_limits(),
        "no-descriptors" => no_descriptors(),
        "memory-limit" => memory_limit(),
        "hog" => {
            let mib: usize = std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let held = touched(mib << 20);
            println!("holding {mib} MiB");
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_secs(1000));
            drop(held);
        }
        "flood-stderr" => flood_stderr(),
        "timer-residue" => timer_residue(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1_000_000),
        ),
        "soak" => soak(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000),
            std::env::args()
                .nth(3)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1_000_000),
        ),
        _ => {
            eprintln!("misbehave is a bincrew worker binary: its app starts it (or run it with selfspawn, hold, start-silent, upgrade-check or soak)");
            std::process::exit(2);
        }
    }
}

/// The resident memory of this process, from `/proc/self/statm`.
fn own_rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// An app that starts a worker with a 256 MiB memory limit, has it allocate without end, and
/// prints the mechanism, the crash report's limit and the report, its own resident memory before
/// and after, and whether a new worker then serves.
fn memory_limit() {
    let builder = || {
        Worker::<Request, Response>::builder(WORKER)
            .forward_stderr(false)
            .memory_limit(256 << 20)
    };
    let before = own_rss();
    let worker = match builder().start_blocking() {
        Ok(worker) => worker,
        Err(e) => {
            println!("start failed: {e}");
            std::process::exit(1);
        }
    };
    println!("mechanism {:?}", worker.memory_mechanism());
    match worker.run_blocking(Request::AllocateForever) {
        Err(bincrew::RunError::Crashed(report)) => {
            println!("limit {:?}", report.limit);
            println!("report {report}");
        }
        other => println!("unexpected {other:?}"),
    }
    println!("app-rss-before {before}");
    println!("app-rss-after {}", own_rss());
    let again = builder()
        .start_blocking()
        .map_err(|e| e.to_string())
        .and_then(|w| {
            w.run_blocking(Request::Echo("ok".into()))
                .map_err(|e| e.to_string())
        });
    println!("a new worker answers {again:?}");
}

/// An app that raises its own soft core dump limit to its hard limit, starts a worker with the
/// default settings and one with `core_dumps(true)`, and prints the soft core dump limit of each
/// (`app`, `default`, `allowed`), as `/proc/<pid>/limits` shows it.
fn core_limits() {
    #[cfg(unix)]
    // SAFETY: getrlimit and setrlimit with a valid rlimit.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_CORE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_CORE, &limit);
    }
    let soft = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/limits"))
            .ok()
            .and_then(|limits| {
                limits
                    .lines()
                    .find(|l| l.starts_with("Max core file size"))
                    .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
            })
            .unwrap_or_else(|| "unknown".into())
    };
    println!("app {}", soft(std::process::id()));
    for (label, allow) in [("default", None), ("allowed", Some(true))] {
        let mut builder = Worker::<Request, Response>::builder(WORKER).forward_stderr(false);
        if let Some(allow) = allow {
            builder = builder.core_dumps(allow);
        }
        match builder.start_blocking() {
            Ok(worker) => println!("{label} {}", soft(worker.id())),
            Err(e) => println!("{label} start failed: {e}"),
        }
    }
}

/// An app that uses up its descriptors (see `use_up_descriptors`) once its worker serves, then
/// sends a request of 1 MiB, too large for the socket, the same with a channel inside, and a
/// small one; prints `large: `, `large-with-channel: ` and `after: ` with what each got.
fn no_descriptors() {
    let worker = match Worker::<Request, Response>::start_blocking(WORKER) {
        Ok(worker) => worker,
        Err(e) => {
            println!("start failed: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = worker.run_blocking(Request::Echo("before".into())) {
        println!("before: {e}");
    }
    let (channel, _receiver) = match bincrew::channel::<u32>() {
        Ok(pair) => pair,
        Err(e) => {
            println!("channel failed: {e}");
            std::process::exit(1);
        }
    };
    use_up_descriptors();
    match worker.run_blocking(Request::Echo("x".repeat(1 << 20))) {
        Ok(response) => println!("large: answered {} bytes", format!("{response:?}").len()),
        Err(e) => println!("large: {e}"),
    }
    // The channel is taken into the message as it is encoded, before the message fails: it
    // must not ride along with the next one.
    let with_channel = Request::EchoWithChannel {
        text: "x".repeat(1 << 20),
        channel,
    };
    match worker.run_blocking(with_channel) {
        Ok(response) => println!(
            "large-with-channel: answered {} bytes",
            format!("{response:?}").len()
        ),
        Err(e) => println!("large-with-channel: {e}"),
    }
    match worker.run_blocking(Request::Echo("after".into())) {
        Ok(response) => println!("after: {response:?}"),
        Err(e) => println!("after: {e}"),
    }
}

/// An app that starts itself as its worker, runs requests in parallel and shuts down.
fn selfspawn() {
    let worker = match Worker::<Request, Response>::start_blocking(WORKER) {
        Ok(worker) => worker,
        Err(e) => {
            println!("start failed: {e}");
            eprintln!("start failed: {e}");
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
    let worker = match Worker::<Request, Response>::builder(WORKER)
        .parallelism(4)
        .start_blocking()
    {
        Ok(worker) => worker,
        Err(e) => {
            println!("start failed: {e}");
            std::process::exit(1);
        }
    };
    // `hold hang`: the worker is stuck in a handler when the app dies.
    if std::env::args().nth(2).as_deref() == Some("hang") {
        let stuck = worker.run(Request::Hang);
        // Waiting sends it; the thread waits forever.
        std::thread::spawn(move || stuck.wait());
        // Sent after the hang, answered by another handler thread: the hang is under way.
        if worker.run_blocking(Request::Echo(String::new())).is_err() {
            println!("the worker failed");
            std::process::exit(1);
        }
    }
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

/// Bytes sent through ipc-channel exactly as they are: a tuple of `u8` has no length prefix.
struct Raw(Vec<u8>);

impl serde::Serialize for Raw {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

impl<'de> serde::Deserialize<'de> for Raw {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("send only"))
    }
}

fn connect_raw() -> Option<IpcSender<Raw>> {
    let server = std::env::var("BINCREW_SERVER").ok()?;
    IpcSender::<Raw>::connect(server).ok()
}

fn send_raw_hello(bytes: &[u8]) {
    if let Some(tx) = connect_raw() {
        let _ = tx.send(Raw(bytes.to_vec()));
    }
}

/// The `Ready` message, as the library encodes it: two senders.
#[derive(serde::Serialize, serde::Deserialize)]
struct Ready {
    requests: IpcSender<Vec<u8>>,
    control: IpcSender<Vec<u8>>,
}

/// The descriptor of an ipc-channel handle, from its `Debug` form (ipc-channel 0.23).
fn raw_fd(handle: &dyn std::fmt::Debug) -> Option<i32> {
    let text = format!("{handle:?}");
    let after = &text[text.find("SharedFileDescriptor(")? + "SharedFileDescriptor(".len()..];
    after[..after.find(')')?].parse().ok()
}

/// Completes the handshake by hand, with the hello the library would send, then sends a message
/// that does not decode as answers.
fn fake_worker(kind: &str) -> ! {
    let Some(info) = bincrew::build_info() else {
        std::process::exit(4)
    };
    let Some(tx) = connect_raw() else {
        std::process::exit(4)
    };
    // `bad-index` answers as worker `stream`, whose responses are channels.
    let (name, request_type, response_type) = if kind == "bad-index" {
        (
            "stream",
            std::any::type_name::<u32>(),
            std::any::type_name::<IpcSender<u32>>(),
        )
    } else {
        (
            WORKER,
            std::any::type_name::<Request>(),
            std::any::type_name::<Response>(),
        )
    };
    let field = |k: &str, v: &str| format!("{k}={v}\n");
    let mut hello = String::from("bincrew-worker-hello/1\n");
    hello += &field("token", &std::env::var("BINCREW_TOKEN").unwrap_or_default());
    hello += &field("status", "ready");
    hello += &field("worker", name);
    hello += &field("served", name);
    hello += &field("request-type", request_type);
    hello += &field("response-type", response_type);
    hello += &field("package", &info.package);
    hello += &field("version", &info.version.to_string());
    hello += &field("build-id", info.build_id.as_deref().unwrap_or(""));
    hello += &field("target", &info.target);
    hello += &field("bincrew", &info.bincrew_version);
    hello += &field("protocol", &info.protocol.to_string());
    hello += &field("wire", &info.wire);
    if kind == "broken-ready" {
        // A `ready=` line (protocol 4) whose `Ready` is cut short: a varint with no end.
        let mut bytes = hello.into_bytes();
        bytes.extend_from_slice(b"ready=\x80");
        let _ = tx.send(Raw(bytes));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let _ = tx.send(Raw(hello.into_bytes()));
    let (Ok((requests, _requests_rx)), Ok((control, _control_rx))) =
        (bincrew::channel::<Vec<u8>>(), bincrew::channel::<Vec<u8>>())
    else {
        std::process::exit(4)
    };
    if kind == "bad-ready" {
        // `Ready` naming channel 0 without sending any.
        let _ = tx.send(Raw(vec![0x00]));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let ready: IpcSender<Ready> = tx.clone().to_opaque().to();
    let _ = ready.send(Ready { requests, control });
    if kind == "huge-header" {
        // A packet whose header claims a message of 1 TiB: ipc-channel would reserve that much
        // before reading the rest.
        let mut packet = Vec::new();
        packet.extend_from_slice(&16usize.to_ne_bytes());
        packet.extend_from_slice(&(1usize << 40).to_ne_bytes());
        if let Some(fd) = raw_fd(&tx.clone().to_opaque()) {
            // SAFETY: a send on this process's own socket, from a buffer that outlives it.
            unsafe { libc::send(fd, packet.as_ptr().cast(), packet.len(), 0) };
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if kind == "region-unsent" || kind == "region-past-end" {
        // A frame placed in shared memory (kind `2`: sequence number, offset, length) with no
        // region ever sent; or one in a new region (kind `3`: the region first) that ends past it.
        let _ = if kind == "region-unsent" {
            let tx: IpcSender<(u8, u64, u64, u64)> = tx.to_opaque().to();
            tx.send((2, 1, 0, 100))
        } else {
            let tx: IpcSender<(u8, bincrew::IpcSharedMemory, u64, u64, u64)> = tx.to_opaque().to();
            tx.send((
                3,
                bincrew::IpcSharedMemory::from_byte(0, 4096),
                1,
                0,
                1 << 20,
            ))
        };
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    // Messages after the handshake travel in frames: an inline frame is `0`, a length, bytes.
    // Its bytes: a flags byte, the message kind (`0`: answers), then answers: an id (u64 LE),
    // a tag (`0`: done), a payload length (u32 LE) and the payload.
    let message = match kind {
        // A frame of a kind no frame has.
        "garbage" => vec![0xff, 0xff, 0xff, 0x7f, 1, 2, 3],
        // One answer to request 0 whose response names channel 0, sending none.
        "bad-index" => {
            let mut body = vec![0x00, 0x00];
            body.extend_from_slice(&0u64.to_le_bytes());
            body.push(0x00);
            body.extend_from_slice(&1u32.to_le_bytes());
            body.push(0x00);
            let mut frame = vec![0x00, body.len() as u8];
            frame.extend_from_slice(&body);
            frame
        }
        // Answers cut short: an id, then nothing.
        _ => vec![0x00, 0x04, 0x00, 0x00, 0x05, 0x00],
    };
    let _ = tx.send(Raw(message));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// An app whose executable file is replaced while it runs (the test does it, then writes a
/// line to stdin): a self-spawned worker is still its own build, and a worker started from the
/// file on disk fails the handshake.
fn upgrade_check() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    match Worker::<Request, Response>::start_blocking(WORKER) {
        Ok(worker) => match worker.run_blocking(Request::Echo("same build".into())) {
            Ok(Response::Text(text)) => println!("self-spawn: {text}"),
            other => println!("self-spawn: unexpected {other:?}"),
        },
        Err(e) => println!("self-spawn failed: {e}"),
    }
    // The path it was started from, now holding the new file (`current_exe` would name the
    // running, deleted one).
    let on_disk = std::env::args_os().next().unwrap_or_default();
    match Worker::<Request, Response>::builder("hasher")
        .exe(on_disk)
        .compat(bincrew::Compat::SameVersion)
        .forward_stderr(false)
        .start_blocking()
    {
        Ok(_) => println!("from disk: started?"),
        Err(e) => println!("from disk: {e}"),
    }
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map_or(0, |d| d.count())
}

/// Child processes of this process, zombies included.
fn children() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(|p| p == me))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

fn resources() -> (usize, usize, usize) {
    (
        count_dir("/proc/self/fd"),
        count_dir("/proc/self/task"),
        children(),
    )
}

/// One start, request, crash and drop of a self-spawned worker.
fn cycle() {
    let worker = Worker::<Request, Response>::builder(WORKER)
        .forward_stderr(false)
        .start_blocking()
        .unwrap_or_else(|e| {
            println!("soak: start failed: {e}");
            std::process::exit(1)
        });
    if worker.run_blocking(Request::Echo(String::new())).is_err() {
        println!("soak: a request failed");
        std::process::exit(1);
    }
    if worker.run_blocking(Request::Segfault).is_ok() {
        println!("soak: the segfault was answered");
        std::process::exit(1);
    }
}

/// A pool of two workers under a memory limit, recycled every 100 requests, rolled twice while
/// it serves `requests` requests, and one worker killed by its memory limit and restarted; what
/// it saw.
fn containment_phase(requests: usize) -> String {
    let fail = |what: String| -> ! {
        println!("soak: {what}");
        std::process::exit(1)
    };
    let pool = bincrew::WorkerPool::<Request, Response>::builder(WORKER)
        .size(2)
        .configure(|w| {
            w.forward_stderr(false)
                .memory_limit(256 << 20)
                .recycle_after_requests(100)
        })
        .start_blocking()
        .unwrap_or_else(|e| fail(format!("containment pool start failed: {e}")));
    let mut done = 0;
    while done < requests {
        let window = (requests - done).min(100);
        let replies: Vec<_> = (0..window)
            .map(|_| pool.run(Request::Echo(String::new())))
            .collect();
        if done % 2000 == 0 {
            if let Err(e) = pool.roll_blocking() {
                fail(format!("a roll failed: {e}"));
            }
        }
        for reply in replies {
            if let Err(e) = reply.wait() {
                fail(format!("a request failed while recycling or rolling: {e}"));
            }
        }
        done += window;
    }
    match pool.run_blocking(Request::AllocateForever) {
        Err(bincrew::RunError::Crashed(report)) if report.limit.is_some() => {}
        other => fail(format!(
            "the memory limit did not stop the worker: {other:?}"
        )),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats().workers < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = pool.stats();
    if let Err(e) = pool.shutdown_blocking() {
        fail(format!("containment pool shutdown failed: {e}"));
    }
    format!(
        "containment: {requests} requests, {} recycles, {} rolls, {} limit kills, {} restarts",
        stats.recycles, stats.rolls, stats.limit_kills, stats.restarts
    )
}

/// Start, crash and restart `cycles` times, then `requests` requests through a two-worker pool,
/// counting file descriptors, threads and child processes before and after.
fn soak(cycles: usize, requests: usize) {
    // The first cycle and a short frozen phase start the process-wide threads (spawner, timer,
    // reaper, stderr) for good; reader and writer threads end a moment after their worker.
    cycle();
    let _ = frozen_phase(100);
    // A worker under a memory limit starts the memory watcher (when the limit is watched), and
    // one started off the main thread the spawner thread, as recycling and restarts do.
    let _ = std::thread::spawn(|| {
        drop(
            Worker::<Request, Response>::builder(WORKER)
                .forward_stderr(false)
                .memory_limit(1 << 30)
                .start_blocking(),
        )
    })
    .join();
    let settle = Instant::now() + Duration::from_secs(5);
    let mut before = resources();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = resources();
        if now == before || Instant::now() > settle {
            break;
        }
        before = now;
    }
    let started = Instant::now();
    for _ in 0..cycles {
        cycle();
    }
    let cycle_time = started.elapsed();

    let pool = bincrew::WorkerPool::<Request, Response>::builder(WORKER)
        .size(2)
        .configure(|w| w.forward_stderr(false))
        .start_blocking()
        .unwrap_or_else(|e| {
            println!("soak: pool start failed: {e}");
            std::process::exit(1)
        });
    let started = Instant::now();
    let mut done = 0;
    while done < requests {
        let window = (requests - done).min(1000);
        let replies: Vec<_> = (0..window)
            .map(|_| pool.run(Request::Echo(String::new())))
            .collect();
        for reply in replies {
            if reply.wait().is_err() {
                println!("soak: a pool request failed");
                std::process::exit(1);
            }
        }
        done += window;
    }
    let request_time = started.elapsed();
    if let Err(e) = pool.shutdown_blocking() {
        println!("soak: pool shutdown failed: {e}");
        std::process::exit(1);
    }
    drop(pool);
    let lateness = frozen_phase(1000);
    let contained = containment_phase(requests.min(5000));

    // Reader and stderr threads end a moment after their worker: let them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let leaked = |after: (usize, usize, usize)| {
        after.0 > before.0 || after.1 > before.1 || after.2 > before.2
    };
    let mut after = resources();
    while leaked(after) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        after = resources();
    }
    println!(
        "cycles: {cycles} start+crash+restart in {:.2} s ({:.2} ms each)",
        cycle_time.as_secs_f64(),
        cycle_time.as_secs_f64() * 1000.0 / cycles.max(1) as f64
    );
    println!(
        "requests: {requests} through a 2-worker pool in {:.2} s ({:.0} per second)",
        request_time.as_secs_f64(),
        requests as f64 / request_time.as_secs_f64().max(1e-9)
    );
    println!(
        "frozen worker: 1000 requests with timeouts settled while another worker answered; worst lateness of a timeout {:.1} ms",
        lateness.as_secs_f64() * 1000.0
    );
    println!("{contained}");
    println!("fds: {} before, {} after", before.0, after.0);
    println!("threads: {} before, {} after", before.1, after.1);
    println!("children: {} before, {} after", before.2, after.2);
    if !leaked(after) {
        println!("no leaks");
    } else {
        println!("LEAK");
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.filter_map(Result::ok) {
                let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                println!("thread: {}", name.trim());
            }
        }
        std::process::exit(1);
    }
}

/// The soak's frozen-worker phase: `requests` requests with timeouts against a stopped worker,
/// while another worker keeps answering. Every request must settle as timed out; returns the
/// worst lateness of a timeout.
fn frozen_phase(requests: usize) -> Duration {
    let start = || {
        Worker::<Request, Response>::builder(WORKER)
            .forward_stderr(false)
            .start_blocking()
            .unwrap_or_else(|e| {
                println!("soak: start failed: {e}");
                std::process::exit(1)
            })
    };
    let (frozen, healthy) = (start(), start());
    // SAFETY: a signal to a child process of this app.
    unsafe { libc::kill(frozen.id() as i32, libc::SIGSTOP) };
    // The signal takes effect a moment later: wait until the process is stopped.
    let stat = format!("/proc/{}/stat", frozen.id());
    while !std::fs::read_to_string(&stat).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            == Some("T")
    }) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let worst = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if healthy.run_blocking(Request::Echo(String::new())).is_err() {
                    println!("soak: the healthy worker failed while the other was stopped");
                    std::process::exit(1);
                }
            }
        });
        let timeout = Duration::from_millis(20);
        let mut worst = Duration::ZERO;
        for window in 0..requests / 100 {
            let sent = Instant::now();
            let replies: Vec<_> = (0..100)
                .map(|i| {
                    frozen.run_with(
                        Request::Echo(format!("{window}-{i}")),
                        bincrew::RunOptions::new().timeout(timeout),
                    )
                })
                .collect();
            for reply in replies {
                match reply.wait() {
                    Err(bincrew::RunError::TimedOut { .. }) => {}
                    other => {
                        println!("soak: a request to the stopped worker ended with {other:?}");
                        std::process::exit(1);
                    }
                }
                worst = worst.max(sent.elapsed().saturating_sub(timeout));
            }
        }
        stop.store(true, Ordering::Relaxed);
        worst
    });
    drop(frozen);
    drop(healthy);
    worst
}

/// An app whose worker writes 4 MiB to stderr and then panics: run with an app stderr that
/// nobody reads, it must still print the crash report on stdout.
fn flood_stderr() {
    let worker = match Worker::<Request, Response>::start_blocking(WORKER) {
        Ok(w) => w,
        Err(e) => {
            println!("start failed: {e}");
            std::process::exit(1)
        }
    };
    let line = "x".repeat(1023);
    for _ in 0..4096 {
        if let Err(e) = worker.run_blocking(Request::Stderr(line.clone())) {
            println!("stderr request failed: {e}");
            std::process::exit(1)
        }
    }
    match worker.run_blocking(Request::Panic("flooded and panicked".into())) {
        Ok(r) => println!("answered? {r:?}"),
        Err(e) => println!("crash: {e}"),
    }
}

/// Runs `requests` requests with a one-hour timeout, answered at once, and prints how much the
/// app's resident memory grew (in KiB) once the first 200,000 have warmed it up.
fn timer_residue(requests: usize) {
    let worker = Worker::<Request, Response>::builder(WORKER)
        .forward_stderr(false)
        .start_blocking()
        .unwrap_or_else(|e| {
            println!("start failed: {e}");
            std::process::exit(1)
        });
    let hour = if std::env::var_os("MISBEHAVE_NO_TIMEOUT").is_some() {
        bincrew::RunOptions::new()
    } else {
        bincrew::RunOptions::new().timeout(Duration::from_secs(3600))
    };
    let run = |n: usize| {
        let mut done = 0;
        while done < n {
            let window = (n - done).min(10_000);
            let replies: Vec<_> = (0..window)
                .map(|_| worker.run_with(Request::Echo(String::new()), hour.clone()))
                .collect();
            for reply in replies {
                if reply.wait().is_err() {
                    println!("a request failed");
                    std::process::exit(1);
                }
            }
            done += window;
        }
    };
    // Warm up: every thread's allocator arena and every table at its working size.
    run(200_000);
    let before = rss_kib();
    run(requests);
    let after = rss_kib();
    println!("rss-growth-kib {}", after.saturating_sub(before));
}

/// This process's resident memory in KiB, after giving freed memory back to the system (so
/// that what is measured is what is still in use, not how the allocator keeps its free pages).
fn rss_kib() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// An app that starts worker `misbehave` from the binary the locator finds under `binary`.
fn locate(binary: &str, search_path: bool) {
    let started = Worker::<Request, Response>::builder(WORKER)
        .binary(binary)
        .search_path(search_path)
        .compat(bincrew::Compat::SameVersion)
        .forward_stderr(false)
        .start_blocking();
    match started {
        Ok(worker) => println!("started pid {}", worker.id()),
        Err(e) => println!("error: {e}"),
    }
}
