//! The worker side: [`Workers`], [`run_worker`] and the request loop.
//!
//! A worker process's main thread connects to the app, sends the hello, and then reads requests
//! and queues them for a fixed set of handler threads (the parallelism). Each handler thread sends
//! its own responses. A panic anywhere reports its message to the app and ends the process, since
//! state shared with crash-prone code cannot be trusted after one.
//!
//! The process never returns into the executable's own `main`: it exits when the app shuts it
//! down, when the app goes away, or right after telling the app it serves no such worker.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use ipc_channel::IpcError;

use crate::batch::{Outbox, DEFAULT_MAX_BATCH};
use crate::build::build_info;
use crate::env::WorkerEnv;
use crate::hello::{Hello, RawBytes, Status};
use crate::process::lock;
use crate::protocol::{Answer, Item, Ready, ToAppRef};
use crate::IpcValue;

/// Identifies executables that serve workers (see `process::looks_like_worker`).
pub(crate) static ENTRY_MARKER: &[u8] = b"bincrew-worker-entry-point/1";

/// Exit code of a worker process that cannot serve what it was started for.
pub(crate) const EXIT_CANNOT_SERVE: i32 = 2;
/// Exit code of a worker process whose app broke the protocol.
const EXIT_PROTOCOL: i32 = 3;
/// Exit code after a panic (as Rust's own).
const EXIT_PANIC: i32 = 101;

/// What a handler receives: the request, and details about it.
#[non_exhaustive]
pub struct RequestArgs<I> {
    /// The request.
    pub request: I,
    id: u64,
    cancelled: Arc<AtomicBool>,
}

impl<I> RequestArgs<I> {
    /// The request's id, unique among the requests of one worker process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the app gave up on this request: its reply was dropped or it timed out. The
    /// answer will be thrown away, so a long handler should check this now and then and return
    /// early (with any value). The app may kill a worker whose handler ignores it (see
    /// [`WorkerBuilder::kill_after_timeout`](crate::WorkerBuilder::kill_after_timeout)).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// A handle on [`is_cancelled`](Self::is_cancelled) that outlives `self`, for handlers that
    /// take the request out of the arguments.
    pub fn cancel_token(&self) -> CancelToken {
        CancelToken(self.cancelled.clone())
    }
}

/// Whether the app gave up on a request; from [`RequestArgs::cancel_token`].
#[derive(Clone, Debug)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// Same as [`RequestArgs::is_cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl<I: fmt::Debug> fmt::Debug for RequestArgs<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestArgs")
            .field("request", &self.request)
            .field("id", &self.id)
            .finish()
    }
}

type Handler<I, O> = Arc<dyn Fn(RequestArgs<I>) -> O + Send + Sync>;

/// What a worker needs once its process knows it serves it.
struct Session {
    connection: IpcSender<RawBytes>,
    hello: Hello,
    parallelism: usize,
}

struct Entry {
    name: String,
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
    parallelism: Option<usize>,
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
            .finish()
    }
}

impl Workers {
    /// No workers yet.
    pub fn new() -> Self {
        Workers {
            entries: Vec::new(),
            parallelism: None,
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
        self.blocking_worker(name, move |args| block_on(handler(args)))
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

    /// How many requests the worker process runs at once; the machine's parallelism by
    /// default. The app can override it per start with
    /// [`WorkerBuilder::parallelism`](crate::WorkerBuilder::parallelism).
    pub fn parallelism(mut self, requests: usize) -> Self {
        self.parallelism = Some(requests.max(1));
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
        let served = self.names();
        let connection = match IpcSender::<RawBytes>::connect(env.server.clone()) {
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
            let _ = connection.send(RawBytes(hello.encode()));
            exit_with(EXIT_CANNOT_SERVE, &message);
        }
        let parallelism = env
            .parallelism
            .or(self.parallelism)
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
        let session = Session {
            connection,
            hello,
            parallelism,
        };
        for entry in self.entries {
            if entry.name == env.worker {
                (entry.serve)(session);
                // `serve` exits the process; this is never reached.
                break;
            }
        }
        std::process::exit(0);
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
    Workers::new().worker(name, handler).run();
}

/// Same as [`run_worker`] with a blocking handler: `fn(RequestArgs<I>) -> O`.
pub fn run_worker_blocking<I, O, F>(name: &str, handler: F)
where
    I: IpcValue,
    O: IpcValue,
    F: Fn(RequestArgs<I>) -> O + Send + Sync + 'static,
{
    Workers::new().blocking_worker(name, handler).run();
}

pub(crate) fn exit_with(code: i32, message: &str) -> ! {
    eprintln!("bincrew worker: {message}");
    std::process::exit(code)
}

/// The request loop of a worker process. Never returns.
fn serve<I: IpcValue, O: IpcValue>(session: Session, handler: Handler<I, O>) {
    let Session {
        connection,
        mut hello,
        parallelism,
    } = session;
    let (requests, request_rx) = match ipc::channel::<Vec<Item<I>>>() {
        Ok(pair) => pair,
        Err(e) => exit_with(
            EXIT_CANNOT_SERVE,
            &format!("cannot create the request channel: {e}"),
        ),
    };
    hello.request_type = std::any::type_name::<I>().to_owned();
    hello.response_type = std::any::type_name::<O>().to_owned();
    if let Err(e) = connection.send(RawBytes(hello.encode())) {
        exit_with(EXIT_CANNOT_SERVE, &format!("cannot send the hello: {e}"));
    }
    let connection: IpcSender<Ready> = connection.to_opaque().to();
    // The request sender moves into the message and is closed here once sent: the app must hold
    // the only copy, so that this worker sees the channel close when the app dies.
    let ready = Ready {
        requests: requests.to_opaque(),
    };
    if let Err(e) = connection.send(ready) {
        exit_with(EXIT_CANNOT_SERVE, &format!("cannot send `Ready`: {e}"));
    }
    let answers = connection.to_opaque();
    install_panic_hook(answers.clone().to());

    let loop_ = Arc::new(Loop {
        handler,
        receiver: Mutex::new(request_rx),
        answers,
        outbox: Outbox::new(DEFAULT_MAX_BATCH),
        jobs: Mutex::new(Jobs {
            queue: VecDeque::new(),
            running: HashMap::new(),
            receiving: false,
            closed: false,
        }),
        changed: Condvar::new(),
        drained: Condvar::new(),
        parallelism,
    });
    // One thread more than the parallelism: while `parallelism` handlers run, one thread still
    // reads messages, so cancellations and the shutdown request get through.
    let started = (0..=parallelism)
        .filter(|i| {
            let loop_ = loop_.clone();
            thread::Builder::new()
                .name(format!("bincrew-handler-{i}"))
                .spawn(move || loop_.work())
                .is_ok()
        })
        .count();
    if started < 2 {
        exit_with(EXIT_CANNOT_SERVE, "cannot start the handler threads");
    }
    // Graceful shutdown: once the app asked for it and every request is answered, exit.
    let mut jobs = lock(&loop_.jobs);
    while !jobs.is_drained() {
        jobs = loop_
            .drained
            .wait(jobs)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    drop(jobs);
    loop_.outbox.drain(|batch| loop_.send_answers(batch));
    std::process::exit(0);
}

/// What the threads of a worker process share.
struct Loop<I, O> {
    handler: Handler<I, O>,
    /// Read by one thread at a time: the one that is `receiving`.
    receiver: Mutex<IpcReceiver<Vec<Item<I>>>>,
    /// The worker-to-app channel.
    answers: ipc_channel::ipc::OpaqueIpcSender,
    outbox: Outbox<Answer<O>>,
    jobs: Mutex<Jobs<I>>,
    /// Signalled for the handler threads: a request is queued, or nobody reads.
    changed: Condvar,
    /// Signalled for the main thread once a shutdown has drained every request.
    drained: Condvar,
    parallelism: usize,
}

struct Jobs<I> {
    /// Requests received and not started.
    queue: VecDeque<(u64, I)>,
    /// The cancellation flags of the requests being handled.
    running: HashMap<u64, Arc<AtomicBool>>,
    /// A thread is reading the channel.
    receiving: bool,
    /// The app asked for a shutdown.
    closed: bool,
}

impl<I> Jobs<I> {
    /// A shutdown was asked for and every request is answered.
    fn is_drained(&self) -> bool {
        self.closed && self.queue.is_empty() && self.running.is_empty()
    }
}

enum Next<I> {
    Handle(u64, I, Arc<AtomicBool>),
    Receive,
    Stop,
}

impl<I: IpcValue, O: IpcValue> Loop<I, O> {
    /// One thread's life: handle a queued request when a handler slot is free, else read the
    /// channel if nobody is, else wait. The thread that reads a request usually handles it
    /// itself, so a request reaches its handler without a hand-off between threads.
    fn work(&self) {
        loop {
            let next = {
                let mut jobs = lock(&self.jobs);
                loop {
                    if !jobs.queue.is_empty() && jobs.running.len() < self.parallelism {
                        if let Some((id, request)) = jobs.queue.pop_front() {
                            let cancelled = Arc::new(AtomicBool::new(false));
                            jobs.running.insert(id, cancelled.clone());
                            break Next::Handle(id, request, cancelled);
                        }
                    }
                    if jobs.is_drained() {
                        break Next::Stop;
                    }
                    if !jobs.receiving {
                        jobs.receiving = true;
                        break Next::Receive;
                    }
                    jobs = self
                        .changed
                        .wait(jobs)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            match next {
                Next::Handle(id, request, cancelled) => self.handle(id, request, cancelled),
                Next::Receive => self.receive(),
                Next::Stop => return,
            }
        }
    }

    fn handle(&self, id: u64, request: I, cancelled: Arc<AtomicBool>) {
        let response = (self.handler)(RequestArgs {
            request,
            id,
            cancelled,
        });
        // Queued before the request stops counting as running, so a shutdown waits for it.
        self.outbox.push(Answer::Done { id, response });
        let (more, drained) = {
            let mut jobs = lock(&self.jobs);
            jobs.running.remove(&id);
            (!jobs.queue.is_empty(), jobs.is_drained())
        };
        if more {
            // A handler slot is free for a queued request: another thread may start it while
            // this one sends, and answers finished meanwhile share the message.
            self.changed.notify_one();
        }
        if drained {
            self.drained.notify_all();
        }
        self.outbox.flush(|batch| self.send_answers(batch));
    }

    fn receive(&self) {
        let message = lock(&self.receiver).recv();
        let mut dropped = Vec::new();
        let (queued, drained) = {
            let mut jobs = lock(&self.jobs);
            jobs.receiving = false;
            match message {
                Ok(items) => {
                    for item in items {
                        match item {
                            Item::Request { id, request } => jobs.queue.push_back((id, request)),
                            Item::Cancel(id) => {
                                if let Some(flag) = jobs.running.get(&id) {
                                    flag.store(true, Ordering::Relaxed);
                                } else if let Some(at) =
                                    jobs.queue.iter().position(|(queued, _)| *queued == id)
                                {
                                    jobs.queue.remove(at);
                                    dropped.push(id);
                                }
                            }
                            Item::Shutdown => jobs.closed = true,
                        }
                    }
                }
                // The app is gone: nobody is waiting for answers.
                Err(IpcError::Disconnected) => std::process::exit(0),
                Err(e) => exit_with(
                    EXIT_PROTOCOL,
                    &format!("cannot read a message from the app: {e}"),
                ),
            }
            (jobs.queue.len(), jobs.is_drained())
        };
        // This thread takes one queued request (or reads again); wake one more thread for each
        // other one, and so that someone reads while this thread handles.
        for _ in 0..queued.min(self.parallelism + 1) {
            self.changed.notify_one();
        }
        if drained {
            self.drained.notify_all();
        }
        if !dropped.is_empty() {
            for id in dropped {
                self.outbox.push(Answer::Cancelled { id });
            }
            self.outbox.flush(|batch| self.send_answers(batch));
        }
    }

    fn send_answers(&self, batch: &[Answer<O>]) {
        let sender: IpcSender<ToAppRef<'_, O>> = self.answers.clone().to();
        match sender.send(ToAppRef::Answers(batch)) {
            Ok(()) => {}
            Err(IpcError::SerializationError(e)) => {
                // Nothing was sent; tell the app which requests lost their responses.
                let reason = e.to_string();
                let failed: Vec<Answer<O>> = batch
                    .iter()
                    .map(|answer| Answer::EncodeFailed {
                        id: answer.id(),
                        reason: reason.clone(),
                    })
                    .collect();
                if sender.send(ToAppRef::Answers(&failed)).is_err() {
                    std::process::exit(0);
                }
            }
            // The app is gone.
            Err(_) => std::process::exit(0),
        }
    }
}

/// Reports a panic's message to the app, lets the previous hook print it, and ends the process.
fn install_panic_hook(answers: IpcSender<ToAppRef<'static, ()>>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "Box<dyn Any>".to_owned()
        };
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        let _ = answers.send(ToAppRef::Panicked {
            message: &message,
            location: location.as_deref(),
        });
        previous(info);
        std::process::exit(EXIT_PANIC);
    }));
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
