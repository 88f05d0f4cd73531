//! [`WorkerBuilder`]: where the worker binary is, how it is started and checked.

use std::ffi::OsString;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use super::connection::{Connection, Settings};
use super::lane::DEFAULT_MAX_BATCH;
use super::recycle::RecyclePolicy;
use super::stats::Counters;
use super::worker::Worker;
use crate::build::{BuildInfo, Compat};
use crate::contain::{Limits, MemoryMechanism};
use crate::error::StartError;
use crate::locate::Locate;
use crate::os::{WorkerStdin, WorkerStdout};
use crate::process::{self, Check, Spec, Started};
use crate::wire::transport::DEFAULT_MAX_MESSAGE;
use crate::IpcValue;

const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Configures and starts a [`Worker`]. Made by [`Worker::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use bincrew::{Worker, WorkerStdout};
///
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let worker = Worker::<Vec<u8>, String>::builder("ocr")
///     .binary("ocr-worker")                      // a dedicated binary beside the app
///     .args(["--lang", "en"])
///     .env("OMP_NUM_THREADS", "1")
///     .current_dir("/var/lib/app")
///     .stdout(WorkerStdout::Null)
///     .connect_timeout(Duration::from_secs(5))
///     .parallelism(2)
///     .kill_after_timeout(Duration::from_secs(1))
///     .memory_limit(512 << 20)
///     .recycle_after_requests(1_000)
///     .start_blocking()?;
/// let text = worker.run_blocking(std::fs::read("scan.png")?)?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until started"]
pub struct WorkerBuilder<I, O> {
    name: String,
    exe: Option<PathBuf>,
    locate: Option<Locate>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_clear: bool,
    env_remove: Vec<OsString>,
    current_dir: Option<PathBuf>,
    stdin: WorkerStdin,
    stdout: WorkerStdout,
    compat: Option<Compat>,
    connect_timeout: Option<Duration>,
    shutdown_grace: Duration,
    forward_stderr: bool,
    parallelism: Option<usize>,
    max_batch: usize,
    kill_after_timeout: Option<Duration>,
    max_pending: Option<usize>,
    max_message: usize,
    /// Set by `in_test`: the name of the thread it was called on.
    test: Option<Option<String>>,
    limits: Limits,
    recycle: RecyclePolicy,
    /// Where the worker counts; a pool's, for the workers of a pool.
    counters: Option<Arc<Counters>>,
    types: PhantomData<fn(I) -> O>,
}

// Not derived: `I` and `O` need not be `Clone`.
impl<I, O> Clone for WorkerBuilder<I, O> {
    fn clone(&self) -> Self {
        WorkerBuilder {
            name: self.name.clone(),
            exe: self.exe.clone(),
            locate: self.locate.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            env_clear: self.env_clear,
            env_remove: self.env_remove.clone(),
            current_dir: self.current_dir.clone(),
            stdin: self.stdin,
            stdout: self.stdout,
            compat: self.compat.clone(),
            connect_timeout: self.connect_timeout,
            shutdown_grace: self.shutdown_grace,
            forward_stderr: self.forward_stderr,
            parallelism: self.parallelism,
            max_batch: self.max_batch,
            kill_after_timeout: self.kill_after_timeout,
            max_pending: self.max_pending,
            max_message: self.max_message,
            test: self.test.clone(),
            limits: self.limits.clone(),
            recycle: self.recycle,
            counters: self.counters.clone(),
            types: PhantomData,
        }
    }
}

impl<I: IpcValue, O: IpcValue> Worker<I, O> {
    /// A builder for worker `name`, to set a dedicated binary, arguments, environment,
    /// [`Compat`](crate::Compat) policy or timeouts.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), bincrew::StartError> {
    /// use std::time::Duration;
    /// let worker = bincrew::Worker::<Vec<u8>, u64>::builder("hash")
    ///     .binary("hasher")
    ///     .compat(bincrew::Compat::SameVersion)
    ///     .connect_timeout(Duration::from_secs(5))
    ///     .start_blocking()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(name: impl Into<String>) -> WorkerBuilder<I, O> {
        WorkerBuilder::new(name.into())
    }
}

impl<I, O> WorkerBuilder<I, O> {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn new(name: String) -> Self {
        WorkerBuilder {
            name,
            exe: None,
            locate: None,
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            env_remove: Vec::new(),
            current_dir: None,
            stdin: WorkerStdin::Null,
            stdout: WorkerStdout::Stderr,
            compat: None,
            connect_timeout: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            forward_stderr: true,
            parallelism: None,
            max_batch: DEFAULT_MAX_BATCH,
            kill_after_timeout: None,
            max_pending: None,
            max_message: DEFAULT_MAX_MESSAGE,
            test: None,
            limits: Limits::default(),
            recycle: RecyclePolicy::default(),
            counters: None,
            types: PhantomData,
        }
    }

    /// Has the workers started from this builder count into `counters` (a pool's).
    pub(crate) fn count_into(mut self, counters: Arc<Counters>) -> Self {
        self.counters = Some(counters);
        self
    }
}

impl<I: IpcValue, O: IpcValue> WorkerBuilder<I, O> {
    /// Runs the worker from this executable instead of the app's own: a dedicated worker binary.
    /// It takes precedence over [`binary`](Self::binary).
    pub fn exe(mut self, path: impl Into<PathBuf>) -> Self {
        self.exe = Some(path.into());
        self
    }

    /// Runs the worker from the dedicated worker binary named `binary` (a cargo binary target's
    /// name, without `.exe`), found when the worker starts in this order:
    ///
    /// 1. the path given to [`exe`](Self::exe), if any;
    /// 2. the environment variable `BINCREW_EXE_<BINARY>` (the name in upper case, `-` as `_`);
    /// 3. beside the app's own executable (the deployed layout), as `binary` or as
    ///    `binary-<target-triple>` (the form bundlers use);
    /// 4. `CARGO_BIN_EXE_<binary>`, which cargo sets for tests;
    /// 5. in development, the cargo target dir of the app's workspace, found with `cargo
    ///    metadata` (so it honours `CARGO_TARGET_DIR`), in the app's profile; with
    ///    [`cargo_build`](Self::cargo_build) cargo first builds the binary's package when it is
    ///    missing or older than its sources. Only when the app itself runs from that target dir
    ///    (tests, examples, `cargo run`, `cargo bench`): a shipped app never touches a build
    ///    tree;
    /// 6. `PATH`, only with [`search_path`](Self::search_path).
    ///
    /// Never the current directory. When it is nowhere, the start fails with
    /// [`StartError::NotFound`] listing every place tried.
    ///
    /// When the app declares `binary` in `[package.metadata.bincrew] workers` and stamps its
    /// build with bincrew-build, the default policy is [`Compat::Semver`] with the declared
    /// requirement instead of [`Compat::SameBuild`].
    ///
    /// ```no_run
    /// // Development: found in the cargo target dir (and built first, when asked); shipped:
    /// // found beside the app, or where BINCREW_EXE_HASHER points.
    /// let worker = bincrew::Worker::<Vec<u8>, u64>::builder("hash")
    ///     .binary("hasher")
    ///     .cargo_build(true)
    ///     .start_blocking()?;
    /// # Ok::<(), bincrew::StartError>(())
    /// ```
    pub fn binary(mut self, binary: impl Into<String>) -> Self {
        self.locate = Some(Locate {
            binary: binary.into(),
            cargo_build: false,
            search_path: false,
        });
        self
    }

    /// In development, lets [`binary`](Self::binary) run `cargo build` for the worker's package
    /// before using the binary from the target dir (cargo does nothing when it is up to date).
    pub fn cargo_build(mut self, build: bool) -> Self {
        if let Some(locate) = &mut self.locate {
            locate.cargo_build = build;
        }
        self
    }

    /// Lets [`binary`](Self::binary) search `PATH` when every other place failed.
    pub fn search_path(mut self, search: bool) -> Self {
        if let Some(locate) = &mut self.locate {
            locate.search_path = search;
        }
        self
    }

    /// Adds a command-line argument for the worker process.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds command-line arguments for the worker process, as [`arg`](Self::arg) one by one.
    pub fn args<A: Into<OsString>>(mut self, args: impl IntoIterator<Item = A>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the worker process (it inherits the app's others).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Keeps a variable of the app's environment from the worker process. (Variables set with
    /// [`env`](Self::env) are set all the same.)
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Starts the worker process with none of the app's environment: only what
    /// [`env`](Self::env) sets, and bincrew's own variables for the handshake.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// The worker process's working directory; the app's by default. (On Linux this needs
    /// glibc 2.29 or later; the start fails with [`StartError::Spawn`] otherwise.)
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Where the worker's standard input comes from: the null device by default.
    pub fn stdin(mut self, stdin: WorkerStdin) -> Self {
        self.stdin = stdin;
        self
    }

    /// Where the worker's standard output goes. By default with its stderr
    /// ([`WorkerStdout::Stderr`]): to the app's stderr and into crash reports, never into the
    /// app's stdout, which may be a protocol.
    pub fn stdout(mut self, stdout: WorkerStdout) -> Self {
        self.stdout = stdout;
        self
    }

    /// What the worker must share with the app; [`Compat::SameBuild`] by default.
    pub fn compat(mut self, compat: Compat) -> Self {
        self.compat = Some(compat);
        self
    }

    /// How long the worker has to complete the handshake before it is killed.
    ///
    /// Defaults to the `BINCREW_CONNECT_TIMEOUT` environment variable (seconds, or a number
    /// followed by `s` or `ms`), or else 10 seconds.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long [`Worker::shutdown`] waits for the worker to exit before killing it (10 seconds
    /// by default).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Whether the worker's stderr is copied to the app's stderr (the default). Its last 16 KiB
    /// are kept for crash reports either way.
    pub fn forward_stderr(mut self, forward: bool) -> Self {
        self.forward_stderr = forward;
        self
    }

    /// How many requests the worker process runs at once. Defaults to what the worker sets with
    /// [`Workers::parallelism`](crate::Workers::parallelism), or else the machine's parallelism.
    pub fn parallelism(mut self, requests: usize) -> Self {
        self.parallelism = Some(requests.max(1));
        self
    }

    /// The most requests one message to the worker carries (16 by default; at least 1).
    ///
    /// Requests queued while a message is being sent go out together in the next one. A message
    /// can carry at most 64 IPC channels and shared-memory regions (an `ipc-channel` limit that
    /// panics beyond it): with requests that carry more than 4 of them, lower the cap.
    pub fn max_batch(mut self, requests: usize) -> Self {
        self.max_batch = requests.max(1);
        self
    }

    /// Kills the worker when a request timed out (see [`RunOptions::timeout`](crate::RunOptions::timeout)) and the worker
    /// has not answered it within `grace` of being told to give it up: a handler that ignores
    /// cancellation then ends like a crash, failing the other requests in flight, instead of
    /// occupying the worker forever. Off by default.
    pub fn kill_after_timeout(mut self, grace: Duration) -> Self {
        self.kill_after_timeout = Some(grace);
        self
    }

    /// Fails further requests at once with [`RunError::Overloaded`](crate::RunError::Overloaded)
    /// while `requests` of this worker's requests wait to be sent (the worker is not taking
    /// them: busy, stopped or flooded). Off by default: requests wait in the app, however many.
    ///
    /// Requests the worker has received are not counted: the worker takes at most its own queue
    /// limit (see [`Workers::max_queue`](crate::Workers::max_queue)) and leaves the rest here.
    pub fn max_pending(mut self, requests: usize) -> Self {
        self.max_pending = Some(requests.max(1));
        self
    }

    /// The largest message the app accepts from the worker, and the largest shared memory one
    /// may carry (1 GiB by default). A worker that sends more, or whose message declares more,
    /// is killed as having broken the protocol before the app allocates or maps anything for it.
    /// The shared memory a worker keeps for its large answers holds several of them, so it may be
    /// up to 2 MiB over this; each answer in it is held to the limit itself.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message = bytes.max(4096);
        self
    }

    /// For a self-spawned worker started from a `#[test]` of a test binary (`cargo test`,
    /// `cargo nextest`): starts the test binary again running only this test, which serves the
    /// worker at its top. Call it from the test's own thread.
    ///
    /// A test binary has no `main` of its own: each test that starts a self-spawned worker
    /// serves it first thing, the way a `main` would. In the worker process only that test
    /// runs (libtest's `--exact` filter), reaches [`run_worker`](crate::run_worker) and serves;
    /// in the test process `run_worker` returns at once and the test goes on. Tests that serve
    /// different workers live side by side in one binary. Arguments set with [`arg`](Self::arg)
    /// are not passed (they would be test filters), and the worker's stdout (libtest's report)
    /// is discarded unless [`stdout`](Self::stdout) is set after this call. Dedicated worker
    /// binaries need none of this.
    ///
    /// ```no_run
    /// # use serde::{Deserialize, Serialize};
    /// async fn double(args: bincrew::RequestArgs<u32>) -> u32 {
    ///     args.request * 2
    /// }
    ///
    /// #[test]
    /// fn doubles() {
    ///     bincrew::init!();
    ///     bincrew::run_worker("double", double);
    ///
    ///     let worker = bincrew::Worker::<u32, u32>::builder("double")
    ///         .in_test()
    ///         .start_blocking()
    ///         .expect("worker");
    ///     assert_eq!(worker.run_blocking(21).expect("answered"), 42);
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The start fails with [`StartError::NotATest`] when called from a thread that is not a
    /// test's (libtest names each test's thread after the test).
    pub fn in_test(mut self) -> Self {
        self.test = Some(std::thread::current().name().map(str::to_owned));
        self.stdout = WorkerStdout::Null;
        self
    }

    /// Limits the worker's resident memory to `bytes`, its process tree included where the
    /// mechanism counts it. A worker that goes past it is killed (or, under `RLIMIT_DATA`, fails
    /// to allocate and aborts); its requests fail with a crash report whose
    /// [`limit`](crate::WorkerCrashError::limit) names the limit and the mechanism, and a pool does
    /// not retry them (see [`WorkerPool::run_retryable`](crate::WorkerPool::run_retryable)). The
    /// app and the rest of the machine are untouched.
    ///
    /// The mechanism is the best this machine offers (see [`MemoryMechanism`]): a cgroup v2 of
    /// the worker's own where one can be made (see [`cgroup`](Self::cgroup)), else (Linux) the
    /// app watching the worker's resident memory. Elsewhere the start fails with
    /// [`StartError::Limit`] unless the limits are [best effort](Self::limits_best_effort).
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), bincrew::StartError> {
    /// let worker = bincrew::Worker::<Vec<u8>, Vec<u8>>::builder("decode")
    ///     .memory_limit(256 << 20)
    ///     .cpu_limit_per_request(std::time::Duration::from_secs(2))
    ///     .start_blocking()?;
    /// # Ok(()) }
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.limits.memory = Some(bytes);
        self
    }

    /// Enforces the [`memory_limit`](Self::memory_limit) with this mechanism only, instead of the
    /// best available. The start fails with [`StartError::Limit`] where it cannot be applied,
    /// unless the limits are [best effort](Self::limits_best_effort) (then a cgroup that cannot
    /// be made falls back to [`MemoryMechanism::Watch`]).
    pub fn memory_mechanism(mut self, mechanism: MemoryMechanism) -> Self {
        self.limits.mechanism = Some(mechanism);
        self
    }

    /// The cgroup v2 directory under which each worker gets a cgroup of its own for its
    /// [`memory_limit`](Self::memory_limit): one delegated to the app, without processes of its
    /// own (for example a systemd service's cgroup with `Delegate=yes` and
    /// `DelegateSubgroup=app`: give the service's cgroup here). Without it, bincrew uses the
    /// app's own cgroup when its children may have the memory controller (an app in the root
    /// cgroup), and otherwise watches the worker's memory instead.
    pub fn cgroup(mut self, dir: impl Into<PathBuf>) -> Self {
        self.limits.cgroup = Some(dir.into());
        self
    }

    /// Limits the CPU time one request's handler may use: the time of the thread that runs it,
    /// measured by a watchdog thread in the worker, not the process's whole life (which
    /// `RLIMIT_CPU` would count, so that a long-lived worker would die of old age). Time spent
    /// waiting does not count (use [`RunOptions::timeout`](crate::RunOptions::timeout) for
    /// that), nor threads the handler starts. A handler past it ends its worker (exit code 152);
    /// the requests in flight fail with a crash report whose
    /// [`limit`](crate::WorkerCrashError::limit) is [`LimitExceeded::Cpu`](crate::LimitExceeded::Cpu)
    /// with the request's id. Linux only; the worker must be built with this version of bincrew
    /// or later (the start checks that it runs the watchdog).
    pub fn cpu_limit_per_request(mut self, limit: Duration) -> Self {
        self.limits.cpu_per_request = Some(limit.max(Duration::from_millis(1)));
        self
    }

    /// Whether the worker may write core dumps. Off by default (a soft `RLIMIT_CORE` of 0, set
    /// before the worker runs any handler): a worker that crashes in a loop would otherwise fill
    /// the disk. With `true` the worker keeps the app's limit. Where the limit cannot be set (a
    /// sandbox that forbids `prlimit`), the default only warns; `core_dumps(false)` fails the
    /// start with [`StartError::Limit`] unless the limits are best effort.
    pub fn core_dumps(mut self, allow: bool) -> Self {
        self.limits.core_dumps = Some(allow);
        self
    }

    /// Whether a limit that cannot be applied on this platform is left out (with a `tracing`
    /// warning) instead of failing the start with [`StartError::Limit`]. Off by default.
    pub fn limits_best_effort(mut self, best_effort: bool) -> Self {
        self.limits.best_effort = best_effort;
        self
    }

    /// Replaces the worker's process after it was sent `requests` requests (at least 1), as
    /// gunicorn's `max_requests` does: for code that leaks. The replacement starts in the
    /// background while the process serves on; once it is ready it takes the new requests, and
    /// the old process answers those it took and exits. No request fails for it, and a pool does
    /// not count it as a restart. Each worker of a pool is recycled on its own.
    pub fn recycle_after_requests(mut self, requests: u64) -> Self {
        self.recycle.after_requests = Some(requests.max(1));
        self
    }

    /// Replaces the worker's process, as [`recycle_after_requests`](Self::recycle_after_requests)
    /// does, when its resident memory (with its descendants') is above `bytes`: read as requests
    /// are made, at most every 100 ms. Set it below the [`memory_limit`](Self::memory_limit), if
    /// any, to replace a slowly leaking worker before the limit kills it. Linux only: elsewhere
    /// the memory is not read and only [`recycle_after_requests`](Self::recycle_after_requests)
    /// recycles.
    pub fn recycle_above_memory(mut self, bytes: u64) -> Self {
        self.recycle.above_memory = Some(bytes);
        self
    }

    /// How long a replaced process (recycled, or retired by
    /// [`WorkerPool::roll`](crate::WorkerPool::roll)) may take to answer the requests it took
    /// before it is killed (and those requests fail). Unlimited by default.
    pub fn recycle_drain_timeout(mut self, timeout: Duration) -> Self {
        self.recycle.drain_timeout = Some(timeout);
        self
    }

    /// Starts the worker and completes the handshake, waiting on a thread of a thread of its own.
    ///
    /// # Errors
    ///
    /// Every way the start can fail is a [`StartError`]; no process is left behind.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let worker = bincrew::Worker::<String, usize>::builder("words").start().await?;
    /// assert_eq!(worker.run("a b".to_owned()).await?, 2);
    /// worker.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(self) -> Result<Worker<I, O>, StartError> {
        crate::sync::on_thread("bincrew-start", move || self.start_blocking()).await
    }

    /// Same as [`start`](Self::start), blocking the calling thread.
    ///
    /// # Errors
    ///
    /// Same as [`start`](Self::start).
    pub fn start_blocking(self) -> Result<Worker<I, O>, StartError> {
        let (current, build) = self.start_process()?;
        let counters = self.counters.clone().unwrap_or_default();
        let policy = self.recycle;
        Ok(Worker::new(self, current, build, policy, counters))
    }

    /// Starts one worker process and completes the handshake.
    pub(crate) fn start_process(&self) -> Result<(Arc<Connection<I, O>>, BuildInfo), StartError> {
        let mut compat = self.compat.clone();
        let self_spawn = self.exe.is_none() && self.locate.is_none();
        let (exe, program) = match (&self.exe, &self.locate) {
            (Some(exe), _) => (exe.clone(), exe.clone()),
            (None, Some(locate)) => {
                let app = crate::build::build_info();
                let exe = locate.find(app).map_err(|tried| StartError::NotFound {
                    worker: self.name.clone(),
                    binary: locate.binary.clone(),
                    tried,
                })?;
                if compat.is_none() {
                    compat = app
                        .and_then(|a| a.worker_requirement(&locate.binary))
                        .map(|req| Compat::Semver(req.clone()));
                }
                (exe.clone(), exe)
            }
            (None, None) => {
                let program = crate::os::self_exe().map_err(|source| StartError::Spawn {
                    worker: self.name.clone(),
                    exe: PathBuf::from("<current executable>"),
                    source,
                })?;
                (
                    std::env::current_exe().unwrap_or_else(|_| program.clone()),
                    program,
                )
            }
        };
        let mut args = self.args.clone();
        if let (true, Some(test)) = (self_spawn, &self.test) {
            match test {
                Some(test) if test != "main" => {
                    args = ["--exact", "--test-threads=1", "-q"]
                        .into_iter()
                        .map(OsString::from)
                        .chain([OsString::from(test)])
                        .collect();
                }
                thread => {
                    return Err(StartError::NotATest {
                        worker: self.name.clone(),
                        thread: thread.clone(),
                    })
                }
            }
        }
        let spec = Spec {
            name: self.name.clone(),
            exe,
            program,
            self_spawn,
            args,
            env: self.env.clone(),
            check: Check::App {
                compat: compat.unwrap_or_default(),
                request: crate::wire::shape::of::<I>(),
                response: crate::wire::shape::of::<O>(),
            },
            connect_timeout: self.connect_timeout,
            forward_stderr: self.forward_stderr,
            stdin: self.stdin,
            stdout: self.stdout,
            current_dir: self.current_dir.clone(),
            env_clear: self.env_clear,
            env_remove: self.env_remove.clone(),
            parallelism: self.parallelism,
            limits: self.limits.clone(),
        };
        let Started::Connected(connected) = process::start(&spec)? else {
            return Err(StartError::Handshake {
                worker: spec.name,
                exe: spec.exe,
                reason: "it listed its workers instead of serving".into(),
            });
        };
        let build = connected.build.clone();
        let current = super::worker::open(
            &spec.name,
            *connected,
            Settings {
                worker_types: (String::new(), String::new()),
                shutdown_grace: self.shutdown_grace,
                max_batch: self.max_batch,
                kill_after_timeout: self.kill_after_timeout,
                max_pending: self.max_pending,
                max_message: self.max_message,
            },
        )?;
        Ok((current, build))
    }
}
