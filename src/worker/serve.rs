//! What a worker executable calls: [`Workers`], [`run_worker`], and what a handler receives.
//!
//! A worker process's main thread connects to the app, sends the hello, and then serves in
//! `request_loop.rs`. A panic anywhere reports its message to the app and ends the process,
//! since state shared with crash-prone code cannot be trusted after one.
//!
//! The process never returns into the executable's own `main`: it exits when the app shuts it
//! down, when the app goes away, or right after telling the app it serves no such worker.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

use ipc_channel::ipc::IpcSender;

use super::exit::{exit_with, EXIT_CANNOT_SERVE};
use super::request_loop::{serve, Handler, QueueLimit, Session};
use super::RequestArgs;
use crate::build::build_info;
use crate::env::WorkerEnv;
use crate::wire::hello::{Greeting, Hello, Status};
use crate::IpcValue;

/// Identifies executables that serve workers (see `process::looks_like_worker`).
pub(crate) static ENTRY_MARKER: &[u8] = b"bincrew-worker-entry-point/1";

struct Entry {
    name: String,
    /// Serves the worker; it never returns (its type cannot say so on stable Rust).
    serve: Box<dyn FnOnce(Session)>,
}

/// The workers one executable serves.
///
/// Call [`run`](Self::run) near the top of `main`, after [`init!`](crate::init). In a process the
/// app started as a worker it serves that worker and never returns; when that name is not
/// registered it tells the app ([`StartError::UnknownWorker`](crate::StartError)) and exits. In
/// any other process it returns at once.
///
/// ```no_run
/// fn main() {
///     bincrew::init!();
///     bincrew::Workers::new()
///         .worker("upper", |args: bincrew::RequestArgs<String>| async move {
///             args.request.to_uppercase()
///         })
///         .blocking_worker("len", |args: bincrew::RequestArgs<String>| args.request.len())
///         .run();
///     // The app's own main continues here, never in a worker process.
/// }
/// ```
#[must_use = "workers are served only by `run`"]
pub struct Workers {
    entries: Vec<Entry>,
    /// Where async handlers run: set when the process serves, read by each handler call.
    executor: Arc<Executor>,
    /// Made by `run_worker`: one name, one call.
    single: bool,
    /// Set by `tokio`.
    #[cfg(feature = "tokio")]
    use_tokio: bool,
    parallelism: Option<usize>,
    queue_limit: QueueLimit,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers")
            .field("names", &self.names())
            .field("parallelism", &self.parallelism)
            .field("queue_limit", &self.queue_limit)
            .finish()
    }
}

impl Workers {
    /// No workers yet.
    pub fn new() -> Self {
        Workers {
            entries: Vec::new(),
            executor: Arc::new(Executor::default()),
            #[cfg(feature = "tokio")]
            use_tokio: false,
            single: false,
            parallelism: None,
            queue_limit: QueueLimit::default(),
        }
    }

    /// Serves worker `name` with an async handler. Each request runs on one of the worker's
    /// threads, which drives the handler's future to completion.
    pub fn worker<I, O, F, Fut>(self, name: impl Into<String>, handler: F) -> Self
    where
        I: IpcValue,
        O: IpcValue,
        F: Fn(RequestArgs<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O>,
    {
        let executor = self.executor.clone();
        self.blocking_worker(name, move |args| executor.block_on(handler(args)))
    }

    /// Serves worker `name` with a blocking handler, which runs on one of the worker's threads.
    pub fn blocking_worker<I, O, F>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        I: IpcValue,
        O: IpcValue,
        F: Fn(RequestArgs<I>) -> O + Send + Sync + 'static,
    {
        let handler: Handler<I, O> = Arc::new(handler);
        self.entries.push(Entry {
            name: name.into(),
            serve: Box::new(move |session| serve(session, handler)),
        });
        self
    }

    /// Runs the async handlers inside a Tokio runtime, so that they can use Tokio's timers,
    /// I/O and `spawn`; requires the `tokio` feature.
    ///
    /// The worker process (and only it: the app's process builds nothing) builds a multi-thread
    /// runtime with every driver this build of Tokio has (`enable_all`) and as many worker
    /// threads as the worker's parallelism, and each handler thread drives its request's future
    /// with [`Handle::block_on`](tokio::runtime::Handle::block_on). Blocking handlers are not
    /// affected. Without it, async handlers run on a minimal executor of bincrew's, where Tokio's
    /// timers and I/O panic ("there is no reactor running").
    ///
    /// ```no_run
    /// async fn slow_upper(args: bincrew::RequestArgs<String>) -> String {
    ///     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    ///     args.request.to_uppercase()
    /// }
    ///
    /// fn main() {
    ///     bincrew::init!();
    ///     bincrew::Workers::new().tokio().worker("upper", slow_upper).run();
    /// }
    /// ```
    #[cfg(feature = "tokio")]
    pub fn tokio(mut self) -> Self {
        self.use_tokio = true;
        self
    }

    /// How many requests the worker process runs at once; the machine's parallelism by
    /// default. The app can override it per start with
    /// [`WorkerBuilder::parallelism`](crate::WorkerBuilder::parallelism).
    pub fn parallelism(mut self, requests: usize) -> Self {
        self.parallelism = Some(requests.max(1));
        self
    }

    /// How many received requests the worker process queues, in requests and in bytes of their
    /// messages, before it stops reading more (1024 requests and 16 MiB by default). The rest
    /// waits in the app, so an app that floods a busy worker grows its own memory, not the
    /// worker's. Cancellations and the shutdown request get through whatever the queue holds.
    pub fn max_queue(mut self, requests: usize, bytes: usize) -> Self {
        self.queue_limit = QueueLimit {
            requests: requests.max(1),
            bytes: bytes.max(1),
        };
        self
    }

    fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name.clone()).collect()
    }

    /// For the `main` of a dedicated worker binary: serves the worker this process was started
    /// as, and never returns.
    ///
    /// Run by hand, the binary prints what it is (package, version, build id, target, the
    /// workers it serves and the apps it belongs to) for `--version` and exits with code 0;
    /// otherwise it explains that its app starts it and exits with code 2. It never waits for a
    /// handshake nobody will send.
    pub fn run_dedicated(self) -> ! {
        let names = self.names();
        self.run();
        let package = build_info().map_or_else(
            || "this bincrew worker binary".to_owned(),
            |b| format!("{} {}", b.package, b.version),
        );
        if std::env::args()
            .skip(1)
            .any(|a| a == "--version" || a == "-V")
        {
            println!("{package}");
            if let Some(b) = build_info() {
                match &b.build_id {
                    Some(id) => println!("build id: {id}"),
                    None => println!("build id: none (not stamped by bincrew-build)"),
                }
                println!("target: {}", b.target);
                println!(
                    "bincrew: {} (protocol {}, {})",
                    b.bincrew_version, b.protocol, b.wire
                );
                if b.apps.is_empty() {
                    println!("belongs to: no app of its workspace declares it");
                } else {
                    println!("belongs to: {}", b.apps.join(", "));
                }
            }
            println!("serves workers: {}", names.join(", "));
            std::process::exit(0);
        }
        eprintln!(
            "{package} is a bincrew worker binary, serving {}: the app that uses it starts it. \
             Run it with --version to see what it is.",
            names.join(", ")
        );
        std::process::exit(EXIT_CANNOT_SERVE)
    }

    /// Serves the worker this process was started as, and never returns; returns at once when
    /// the process is not a worker.
    pub fn run(self) {
        std::hint::black_box(ENTRY_MARKER);
        let Some(env) = WorkerEnv::take() else {
            return;
        };
        // Shown by `ps` and `top` (a self-spawned worker would show as `exe`).
        crate::os::name_process(&format!("bincrew:{}", env.worker));
        // Before the handshake, so that the app finds it running once connected.
        if let Some(limit) = env.cpu_limit {
            if let Err(e) = super::limits::start(limit) {
                exit_with(
                    EXIT_CANNOT_SERVE,
                    &format!("cannot start the CPU watchdog for its limit of {limit:?}: {e}"),
                );
            }
        }
        let served = self.names();
        let connection = match IpcSender::<Greeting>::connect(env.server.clone()) {
            Ok(connection) => connection,
            Err(e) => exit_with(
                EXIT_CANNOT_SERVE,
                &format!("worker `{}` cannot connect to its app: {e}", env.worker),
            ),
        };
        let mut hello = Hello {
            token: env.token,
            status: Status::Ready,
            worker: env.worker.clone(),
            served,
            build: build_info().cloned(),
            request_type: String::new(),
            response_type: String::new(),
            request_shape: None,
            response_shape: None,
            single: self.single,
        };
        let status = if hello.build.is_none() {
            Some((
                Status::NotInitialized,
                "this executable does not call bincrew::init!() at the top of main".to_owned(),
            ))
        } else if !self.entries.iter().any(|e| e.name == env.worker) {
            Some((
                Status::UnknownWorker,
                format!(
                    "this executable serves no worker `{}` (it serves: {})",
                    env.worker,
                    hello.served.join(", ")
                ),
            ))
        } else {
            None
        };
        if let Some((status, message)) = status {
            hello.status = status;
            let _ = connection.send(Greeting::bare(hello.encode()));
            exit_with(EXIT_CANNOT_SERVE, &message);
        }
        let parallelism = env
            .parallelism
            .or(self.parallelism)
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
        #[cfg(feature = "tokio")]
        if self.use_tokio {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .worker_threads(parallelism)
                .thread_name(format!("bincrew-tokio-{}", env.worker))
                .build();
            match runtime {
                // Serving never returns: the runtime lives as long as the process.
                Ok(runtime) => {
                    let _ = self.executor.tokio.set(runtime);
                }
                Err(e) => exit_with(
                    EXIT_CANNOT_SERVE,
                    &format!(
                        "worker `{}` cannot build its Tokio runtime: {e}",
                        env.worker
                    ),
                ),
            }
        }
        let session = Session {
            connection,
            hello,
            parallelism,
            queue_limit: self.queue_limit,
        };
        if let Some(entry) = self.entries.into_iter().find(|e| e.name == env.worker) {
            (entry.serve)(session);
        }
        // `serve` exits the process: this is reached only if the name was not served, which the
        // hello already told the app.
        std::process::exit(EXIT_CANNOT_SERVE)
    }
}

/// Serves worker `name` with an async handler if this process was started as that worker, and
/// never returns then; returns at once if this process is not a worker.
///
/// Call it near the top of `main`, after [`init!`](crate::init). A process started as another
/// worker name tells the app and exits, so it never runs the app's `main`: to serve several
/// workers from one executable use [`Workers`].
///
/// The handler is an `async fn(RequestArgs<I>) -> O`, or any closure returning a future; see
/// [`run_worker_blocking`] for a plain function.
pub fn run_worker<I, O, F, Fut>(name: &str, handler: F)
where
    I: IpcValue,
    O: IpcValue,
    F: Fn(RequestArgs<I>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = O>,
{
    Workers {
        single: true,
        ..Workers::new()
    }
    .worker(name, handler)
    .run();
}

/// Same as [`run_worker`] with a blocking handler: `fn(RequestArgs<I>) -> O`.
///
/// ```no_run
/// fn checksum(args: bincrew::RequestArgs<Vec<u8>>) -> u32 {
///     args.request.iter().map(|&b| u32::from(b)).sum()
/// }
///
/// fn main() {
///     bincrew::init!();
///     bincrew::run_worker_blocking("checksum", checksum);
///     // The app's own main continues here.
/// }
/// ```
pub fn run_worker_blocking<I, O, F>(name: &str, handler: F)
where
    I: IpcValue,
    O: IpcValue,
    F: Fn(RequestArgs<I>) -> O + Send + Sync + 'static,
{
    Workers {
        single: true,
        ..Workers::new()
    }
    .blocking_worker(name, handler)
    .run();
}

/// Where async handlers run.
#[derive(Default)]
struct Executor {
    /// Set when the process serves with [`Workers::tokio`].
    #[cfg(feature = "tokio")]
    tokio: std::sync::OnceLock<tokio::runtime::Runtime>,
}

impl Executor {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        #[cfg(feature = "tokio")]
        if let Some(runtime) = self.tokio.get() {
            return runtime.handle().block_on(future);
        }
        block_on(future)
    }
}

/// Drives a handler's future on the current thread.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}
