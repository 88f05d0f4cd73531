//! [`Worker`]: the public handle on one worker process, over its `Connection`.

use std::fmt;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::connection::{Channels, Connection, Settings};
use super::read::ReadTurns;
use super::reply::Reply;
use crate::build::BuildInfo;
use crate::error::{RunError, ShutdownError, StartError, WorkerCrashError};
use crate::process::Connected;
use crate::wire::transport::Socket;
use crate::IpcValue;

/// Options for one request, for [`Worker::run_with`].
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

/// A running worker process that answers requests of type `I` with responses of type `O`.
///
/// `Worker` is `Send + Sync`: share it (for example in an `Arc`) and call [`run`](Self::run) from
/// any number of tasks or threads; the worker runs several requests at once.
///
/// Dropping a `Worker` without [`shutdown`](Self::shutdown) kills the process and reaps it; the
/// requests still in flight fail with [`RunError::ShutDown`].
pub struct Worker<I, O> {
    inner: Arc<Connection<I, O>>,
    build: BuildInfo,
}

impl<I, O> fmt::Debug for Worker<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.inner.process.name)
            .field("pid", &self.inner.process.pid())
            .field("build", &self.build)
            .finish_non_exhaustive()
    }
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

    /// Wraps a worker that completed the handshake, and starts its reader thread.
    pub(crate) fn connected(
        name: String,
        connected: Connected,
        settings: Settings,
    ) -> Result<Self, StartError> {
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
        let reader = thread::Builder::new()
            .name(format!("bincrew-reader-{name}"))
            .spawn(move || {
                let _entered = span.enter();
                ReadTurns::read_loop(reader_inner)
            });
        if let Err(source) = reader {
            inner.close();
            return Err(StartError::Thread {
                worker: name,
                source,
            });
        }
        Ok(Worker {
            inner,
            build: connected.build,
        })
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
        match self.inner.run(request, options.timeout) {
            Ok(made) => Reply::pending(made.slot, made.id, made.deadline, self.inner.clone()),
            Err(error) => Reply::done(Err(error)),
        }
    }

    /// Same as [`run`](Self::run), blocking the calling thread until the response comes.
    ///
    /// # Errors
    ///
    /// Same as the future of [`run`](Self::run).
    pub fn run_blocking(&self, request: I) -> Result<O, RunError> {
        self.run(request).wait()
    }

    /// Calls `hook` once the worker has exited and its requests were failed (at once if that
    /// already happened).
    pub(crate) fn on_exit(&self, hook: Box<dyn FnOnce() + Send>) {
        self.inner.on_exit(hook);
    }

    pub(crate) fn begin_shutdown(&self) -> Result<(), ShutdownError> {
        self.inner.begin_shutdown()
    }

    pub(crate) fn wait_shutdown(&self) -> Result<(), ShutdownError> {
        self.inner.wait_shutdown()
    }

    /// Shuts the worker down gracefully: it takes no new requests, answers those in flight and
    /// exits with code 0. Waits for the exit, and kills the worker if it takes longer than the
    /// grace period. Calling it again waits for the same exit.
    ///
    /// # Errors
    ///
    /// [`ShutdownError::Crashed`] if the worker died while draining (or had crashed before),
    /// [`ShutdownError::Killed`] if it did not exit in time.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        self.inner.begin_shutdown()?;
        let inner = self.inner.clone();
        crate::sync::on_thread("bincrew-shutdown", move || inner.wait_shutdown()).await
    }

    /// Same as [`shutdown`](Self::shutdown), blocking the calling thread.
    ///
    /// # Errors
    ///
    /// Same as [`shutdown`](Self::shutdown).
    pub fn shutdown_blocking(&self) -> Result<(), ShutdownError> {
        self.inner.begin_shutdown()?;
        self.inner.wait_shutdown()
    }

    /// The crash report, once the worker has died unexpectedly.
    pub fn crash_error(&self) -> Option<Arc<WorkerCrashError>> {
        self.inner.crash_error()
    }

    /// Whether the worker takes requests: not crashed, not shutting down.
    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    /// How many requests are in flight (sent or queued, not yet answered).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// Kills the worker process now. Requests in flight fail with [`RunError::Crashed`], whose
    /// report says the app killed it and why.
    pub fn kill(&self, reason: &str) {
        self.inner.kill(reason.to_owned());
    }

    /// The worker's process id.
    pub fn id(&self) -> u32 {
        self.inner.process.pid()
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.inner.process.name
    }

    /// The worker binary's identity, as it reported it in the handshake.
    pub fn build_info(&self) -> &BuildInfo {
        &self.build
    }
}

impl<I, O> Drop for Worker<I, O> {
    fn drop(&mut self) {
        // Fails what is in flight and kills the process; never waits for it.
        self.inner.close();
    }
}
