//! [`Worker`]: the public handle on a worker, over its `Core` (`recycle.rs`): the current
//! process (a `Connection`) and the replaced ones still draining.

use std::fmt;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::builder::WorkerBuilder;
use super::connection::{Channels, Connection, Settings};
use super::read::ReadTurns;
use super::recycle::{Core, RecyclePolicy};
use super::reply::Reply;
use super::stats::{Counters, WorkerStats};
use crate::build::BuildInfo;
use crate::error::{RunError, ShutdownError, StartError, WorkerCrashError};
use crate::process::Connected;
use crate::wire::transport::Socket;
use crate::IpcValue;

/// Options for one request, for [`Worker::run_with`].
///
/// ```no_run
/// use std::time::Duration;
/// use bincrew::{RunError, RunOptions};
///
/// # let worker = bincrew::Worker::<String, usize>::start_blocking("words").unwrap();
/// let reply = worker.run_with("text".to_owned(), RunOptions::new().timeout(Duration::from_millis(500)));
/// if let Err(RunError::TimedOut { timeout, .. }) = reply.wait() {
///     eprintln!("no answer within {timeout:?}: the worker was told to give it up");
/// }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// Fail the request with [`RunError::TimedOut`] if it is not answered within this time.
    pub timeout: Option<Duration>,
}

impl RunOptions {
    /// No timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A running worker that answers requests of type `I` with responses of type `O`.
///
/// `Worker` is `Send + Sync`: share it (for example in an `Arc`) and call [`run`](Self::run) from
/// any number of tasks or threads; the worker runs several requests at once.
///
/// A worker is one process at a time, unless it is recycled (see
/// [`WorkerBuilder::recycle_after_requests`]): then a replacement process takes its requests
/// once it is ready, while the replaced one answers those it took and exits.
///
/// Dropping a `Worker` without [`shutdown`](Self::shutdown) kills its processes and reaps them;
/// the requests still in flight fail with [`RunError::ShutDown`].
///
/// ```no_run
/// use bincrew::{RequestArgs, RunError, Worker};
///
/// fn parse(args: RequestArgs<String>) -> Result<u64, String> {
///     args.request.trim().parse().map_err(|e| format!("{e}"))
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     bincrew::init!();
///     bincrew::run_worker_blocking("parse", parse);
///
///     let worker = Worker::<String, Result<u64, String>>::start_blocking("parse")?;
///     assert_eq!(worker.run_blocking(" 42 ".to_owned())?, Ok(42));
///     match worker.run_blocking("x".to_owned()) {
///         Ok(parsed) => println!("{parsed:?}"),        // the handler's own error is a value
///         Err(RunError::Crashed(crash)) => eprintln!("{crash}"), // the process died
///         Err(e) => eprintln!("{e}"),
///     }
///     worker.shutdown_blocking()?;
///     Ok(())
/// }
/// ```
pub struct Worker<I, O> {
    core: Arc<Core<I, O>>,
    build: BuildInfo,
}

impl<I, O> fmt::Debug for Worker<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.core.name)
            .field("pid", &self.core.current().process.pid())
            .field("build", &self.build)
            .finish_non_exhaustive()
    }
}

/// Starts the reader thread of a worker process that completed the handshake.
pub(super) fn open<I: IpcValue, O: IpcValue>(
    name: &str,
    connected: Connected,
    settings: Settings,
) -> Result<Arc<Connection<I, O>>, StartError> {
    let settings = Settings {
        worker_types: (
            connected.hello.request_type.clone(),
            connected.hello.response_type.clone(),
        ),
        ..settings
    };
    let pid = connected.process.pid();
    let channels = Channels {
        turns_socket: Socket::find(&connected.receiver, pid),
        request_socket: Socket::find(&connected.requests, pid),
        control_socket: Socket::find(&connected.control, pid),
        requests: connected.requests,
        control: connected.control,
    };
    if channels.request_socket.is_none() {
        tracing::debug!(worker = %name, "the channel's socket is not known: requests go through a writer thread");
    }
    let inner = Connection::new(connected.process, channels, connected.receiver, settings);
    let reader_inner = inner.clone();
    // The reader reports the worker's end: its events carry the worker's name and pid.
    let span = tracing::info_span!("bincrew_worker", worker = %name, pid);
    let read: Box<dyn FnOnce() + Send> = Box::new(move || {
        let _entered = span.enter();
        ReadTurns::read_loop(reader_inner)
    });
    // On the thread that accepted the connection (named for this already), which waits for
    // it; on a thread of its own if that one is gone.
    let reader = match connected.next_job.send(read) {
        Ok(()) => Ok(()),
        Err(std::sync::mpsc::SendError(read)) => thread::Builder::new()
            .name(format!("bincrew-reader-{name}"))
            .spawn(read)
            .map(drop),
    };
    if let Err(source) = reader {
        inner.close();
        return Err(StartError::Thread {
            worker: name.to_owned(),
            source,
        });
    }
    Ok(inner)
}

impl<I: IpcValue, O: IpcValue> Worker<I, O> {
    /// Starts this executable again as worker `name` (self-spawn) with the default settings.
    ///
    /// The executable's `main` must call [`init!`](crate::init) and then serve `name` with
    /// [`run_worker`](crate::run_worker) or [`Workers`](crate::Workers) before doing anything
    /// else. On Linux the worker is started from `/proc/self/exe`, so it is the very build that
    /// is running even if the file on disk was replaced since.
    ///
    /// # Errors
    ///
    /// Every way the start can fail is a [`StartError`]; no process is left behind.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let worker = bincrew::Worker::<String, usize>::start("count").await?;
    /// let n = worker.run("some text".to_owned()).await?;
    /// worker.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(name: &str) -> Result<Self, StartError> {
        Self::builder(name).start().await
    }

    /// Same as [`start`](Self::start), blocking the calling thread.
    ///
    /// # Errors
    ///
    /// Same as [`start`](Self::start).
    pub fn start_blocking(name: &str) -> Result<Self, StartError> {
        Self::builder(name).start_blocking()
    }

    /// Wraps a worker process that completed the handshake.
    pub(super) fn new(
        builder: WorkerBuilder<I, O>,
        current: Arc<Connection<I, O>>,
        build: BuildInfo,
        policy: RecyclePolicy,
        counters: Arc<Counters>,
    ) -> Self {
        Worker {
            core: Core::new(
                builder.name().to_owned(),
                current,
                builder,
                policy,
                counters,
            ),
            build,
        }
    }

    /// Queues a request and returns its reply: a future of the response, or
    /// [`Reply::wait`] to block for it.
    ///
    /// Requests go out when their reply is first polled or waited on, together with everything
    /// queued by then (and at once when a full batch is queued), so call `run` many times before
    /// awaiting to have many requests in flight. Responses come back in the order the worker
    /// finishes them. Dropping a reply cancels its request: it is not sent if it was still
    /// queued, and otherwise the worker is told to give it up (see [`RequestArgs::is_cancelled`](crate::RequestArgs::is_cancelled)).
    ///
    /// The reply fails with [`RunError::Crashed`] if the worker dies before answering.
    pub fn run(&self, request: I) -> Reply<O> {
        self.run_with(request, RunOptions::default())
    }

    /// Same as [`run`](Self::run), with a timeout.
    pub fn run_with(&self, request: I, options: RunOptions) -> Reply<O> {
        self.core.run(request, options.timeout)
    }

    /// Same as [`run_with`](Self::run_with), giving the request back when the worker takes no
    /// requests (shut down, dropped, or retired from its pool).
    pub(crate) fn dispatch(&self, request: I, options: &RunOptions) -> Result<Reply<O>, I> {
        self.core.try_run(request, options.timeout)
    }

    /// Same as [`run`](Self::run), blocking the calling thread until the response comes.
    ///
    /// # Errors
    ///
    /// Same as the future of [`run`](Self::run).
    pub fn run_blocking(&self, request: I) -> Result<O, RunError> {
        self.run(request).wait()
    }

    /// Calls `hook` whenever one of the worker's processes has exited and its requests were
    /// settled (at once if the current one already crashed).
    pub(crate) fn on_exit(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        self.core.on_exit(hook);
    }

    pub(crate) fn begin_shutdown(&self) -> Result<(), ShutdownError> {
        self.core.begin_shutdown()
    }

    pub(crate) fn wait_shutdown(&self) -> Result<(), ShutdownError> {
        self.core.wait_shutdown()
    }

    /// Takes the worker out of service: no new requests; its processes answer what they took
    /// and exit (a pool's rolling replacement).
    pub(crate) fn retire(&self) {
        self.core.retire();
    }

    /// Whether every process of the worker has ended and every request it took is settled.
    pub(crate) fn is_drained(&self) -> bool {
        self.core.is_drained()
    }

    /// Shuts the worker down gracefully: it takes no new requests, answers those in flight and
    /// exits with code 0. Waits for the exit, and kills the worker if it takes longer than the
    /// grace period. Calling it again waits for the same exit. Replaced processes still
    /// draining get the same grace period.
    ///
    /// # Errors
    ///
    /// [`ShutdownError::Crashed`] if the worker died while draining (or had crashed before),
    /// [`ShutdownError::Killed`] if it did not exit in time.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        self.core.begin_shutdown()?;
        let core = self.core.clone();
        crate::sync::on_thread("bincrew-shutdown", move || core.wait_shutdown()).await
    }

    /// Same as [`shutdown`](Self::shutdown), blocking the calling thread.
    ///
    /// # Errors
    ///
    /// Same as [`shutdown`](Self::shutdown).
    pub fn shutdown_blocking(&self) -> Result<(), ShutdownError> {
        self.core.begin_shutdown()?;
        self.core.wait_shutdown()
    }

    /// The crash report, once the worker has died unexpectedly.
    pub fn crash_error(&self) -> Option<Arc<WorkerCrashError>> {
        self.core.crash_error()
    }

    /// Whether the worker takes requests: not crashed, not shutting down.
    pub fn is_running(&self) -> bool {
        self.core.is_running()
    }

    /// How many requests are in flight (sent or queued, not yet answered), on its current
    /// process and on replaced ones still draining.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }

    /// Kills the worker's processes now. Requests in flight fail with [`RunError::Crashed`],
    /// whose report says the app killed it and why.
    pub fn kill(&self, reason: &str) {
        self.core.kill(reason);
    }

    /// The process id of the worker's current process (it changes when the worker is
    /// recycled).
    pub fn id(&self) -> u32 {
        self.core.current().process.pid()
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The worker binary's identity, as it reported it in the handshake of the worker's first
    /// process. (Replacements started by recycling come from the same builder and pass the same
    /// [`Compat`](crate::Compat) check.)
    pub fn build_info(&self) -> &BuildInfo {
        &self.build
    }

    /// How the worker's [memory limit](WorkerBuilder::memory_limit) is enforced, if it has one:
    /// the mechanism this machine offered when its current process started.
    pub fn memory_mechanism(&self) -> Option<crate::MemoryMechanism> {
        self.core
            .current()
            .process
            .contained
            .memory
            .map(|(_, mechanism)| mechanism)
    }

    /// The worker's counters: requests, crashes, limit kills, recycles.
    pub fn stats(&self) -> WorkerStats {
        self.core.counters.worker()
    }
}

impl<I, O> Drop for Worker<I, O> {
    fn drop(&mut self) {
        // Fails what is in flight and kills the processes; never waits for them.
        self.core.close();
    }
}
