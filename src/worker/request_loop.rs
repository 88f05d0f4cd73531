//! The request loop of a worker process.
//!
//! Threads and what each owns:
//! - `parallelism + 1` handler threads take turns reading the request channel (the one that is
//!   `receiving` holds it); the thread that reads a request usually runs it itself, so a request
//!   reaches its handler without a hand-off. At most `parallelism` handlers run at once. A thread
//!   reads only while the queue of received requests has room (in requests and in bytes), so a
//!   flooding app fills its own memory, not the worker's.
//! - the control thread always reads the control channel: cancellations and the shutdown
//!   request reach the worker even when every handler is busy and the queue is full. When the
//!   channel closes, the app is gone and the process exits. With a watch (Linux) it also sends
//!   answers that a handler thread held back for `HOLD_FOR` (see `outbox.rs`).
//! - the main thread waits for a shutdown to drain (the request channel's `End` read, every
//!   request answered), sends what is left and exits with code 0.
//!
//! A panic anywhere reports its message to the app and ends the process: from the moment the
//! panic hook starts, no other answer is sent, and the report's own send is bounded in time.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcReceiver, IpcSender, OpaqueIpcSender};
use ipc_channel::IpcError;

use super::exit::{exit_now, exit_with, EXIT_CANNOT_SERVE, EXIT_PANIC, EXIT_PROTOCOL};
use super::outbox::{Deadline, Outbox, MAX_BATCH};
use super::RequestArgs;
use crate::os::socket::Watch;
use crate::sync::lock;
use crate::wire::hello::{Greeting, Hello};
use crate::wire::messages::{recv_guarded, Answer, Control, Job, Ready, ToAppRef};
use crate::wire::region::{with_incoming, Incoming, Region};
use crate::wire::shape;
use crate::wire::transport::{self, Framed, FramedRef, PacketReader, Received, Socket};
use crate::IpcValue;

/// How long a panicking worker tries to report its panic before it exits anyway.
const PANIC_REPORT_GRACE: Duration = Duration::from_secs(2);

/// Set when the panic hook starts: nothing more is sent to the app.
static PANICKING: AtomicBool = AtomicBool::new(false);

/// How many answer messages this process sent (for bincrew's own tests, through
/// `RequestArgs::answer_messages_sent`).
pub(super) static ANSWER_MESSAGES: AtomicU64 = AtomicU64::new(0);

/// The longest an answer is held back while its thread runs the next queued request, and the
/// longest a handler may have taken for its answer to be held at all. Short enough to hide
/// behind the app's own costs of one request (a round trip is tens of microseconds); long
/// enough that a batch of fast handlers fills a message before it expires.
const HOLD_FOR: Duration = Duration::from_micros(200);

/// The control thread's timer bounds how long answers are held.
impl Deadline for Watch {
    fn start(&self, after: Duration) {
        self.start_deadline(after);
    }
}

/// How much a worker process queues of what it received before it stops reading requests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueLimit {
    pub(crate) requests: usize,
    pub(crate) bytes: usize,
}

impl Default for QueueLimit {
    fn default() -> Self {
        QueueLimit {
            requests: 1024,
            bytes: 16 << 20,
        }
    }
}

/// One message of the request channel.
type Batch<I> = Framed<Vec<(u64, Job<I>)>>;
type Requests<I> = IpcReceiver<Batch<I>>;

/// The request channel's receiving end, read with bincrew's own read where its socket is known
/// (one `recvmsg` into a buffer kept between messages), else by `ipc-channel`.
struct RequestReader<I> {
    receiver: Requests<I>,
    own: Option<PacketReader<Batch<I>>>,
    /// The app's region, for requests it places there.
    incoming: Incoming,
}

impl<I: IpcValue> RequestReader<I> {
    fn recv(&mut self) -> Result<Batch<I>, IpcError> {
        let RequestReader {
            receiver,
            own,
            incoming,
        } = self;
        with_incoming(incoming, || Self::read(receiver, own.as_mut()))
    }

    fn read(
        receiver: &Requests<I>,
        own: Option<&mut PacketReader<Batch<I>>>,
    ) -> Result<Batch<I>, IpcError> {
        let Some(own) = own else {
            return recv_guarded(receiver);
        };
        // The app is trusted with the size of what it sends: the worker's queue limits what it
        // holds.
        match own.read(usize::MAX, true) {
            Received::Message(message) => Ok(message),
            Received::End => Err(IpcError::Disconnected),
            Received::Refused(reason) => Err(IpcError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                reason,
            ))),
            // A read that waits is never empty; read as `ipc-channel` would.
            Received::Empty => recv_guarded(receiver),
        }
    }
}

pub(crate) type Handler<I, O> = Arc<dyn Fn(RequestArgs<I>) -> O + Send + Sync>;

/// What a worker needs once its process knows it serves it.
pub(super) struct Session {
    pub(super) connection: IpcSender<Greeting>,
    pub(super) hello: Hello,
    pub(super) parallelism: usize,
    pub(super) queue_limit: QueueLimit,
}

/// Serves requests until the app shuts the worker down or goes away. Never returns.
pub(super) fn serve<I: IpcValue, O: IpcValue>(session: Session, handler: Handler<I, O>) -> ! {
    let Session {
        connection,
        mut hello,
        parallelism,
        queue_limit,
    } = session;
    let channels = ipc::channel::<Framed<Vec<(u64, Job<I>)>>>()
        .and_then(|requests| Ok((requests, ipc::channel::<Vec<(u64, Control)>>()?)));
    let ((requests, request_rx), (control, control_rx)) = match channels {
        Ok(pair) => pair,
        Err(e) => exit_with(
            EXIT_CANNOT_SERVE,
            &format!("cannot create the request channels: {e}"),
        ),
    };
    hello.request_type = std::any::type_name::<I>().to_owned();
    hello.response_type = std::any::type_name::<O>().to_owned();
    hello.request_shape = shape::of::<I>().shape.as_ref().ok().map(|(_, t)| t.clone());
    hello.response_shape = shape::of::<O>().shape.as_ref().ok().map(|(_, t)| t.clone());
    // The senders move into the message and are closed here once sent: the app must hold the
    // only copies, so that this worker sees the channels close when the app dies.
    let greeting = Greeting {
        hello: hello.encode(),
        ready: Some(Ready {
            requests: requests.to_opaque(),
            control: control.to_opaque(),
        }),
        ready_error: None,
    };
    if let Err(e) = connection.send(greeting) {
        exit_with(
            EXIT_CANNOT_SERVE,
            &format!("cannot send the hello and `Ready`: {e}"),
        );
    }
    // The app waits for the greeting, and nothing below is needed before it has read it: on a
    // CPU the two processes share, let the app go first.
    thread::yield_now();
    let answers = connection.to_opaque();
    install_panic_hook(answers.clone());
    transport::prepare_discard();
    transport::allow_probing();
    // Where the platform allows, the control thread also notices requests that wait while no
    // handler thread reads, so a thread that reads a request can run it without first waking
    // another to read in its place.
    let me = std::process::id();
    let request_socket = Socket::find(&request_rx, me);
    let watch = Socket::find(&control_rx, me)
        .zip(request_socket)
        .and_then(|(control, requests)| control.watch_with(requests))
        .map(Arc::new);

    let loop_ = Arc::new(Loop {
        handler,
        receiver: Mutex::new(RequestReader {
            own: request_socket.map(PacketReader::new),
            receiver: request_rx,
            incoming: Incoming::default(),
        }),
        answers,
        answer_region: Region::new(),
        // With a watch, its timer bounds how long answers are held; without, none are.
        outbox: Outbox::new(
            MAX_BATCH,
            watch.clone().map(|w| (w as Arc<dyn Deadline>, HOLD_FOR)),
        ),
        jobs: Mutex::new(Jobs {
            queue: VecDeque::new(),
            queued_bytes: 0,
            running: HashMap::new(),
            receiving: false,
            closing: false,
            ended: false,
            reader_armed: false,
            threads: 0,
            idle: 0,
            last_id: None,
            early_cancels: std::collections::HashSet::new(),
        }),
        changed: Condvar::new(),
        drained: Condvar::new(),
        parallelism,
        limit: queue_limit,
        watch,
    });
    // Handler threads start when requests wait for one, up to one more than the parallelism:
    // while `parallelism` handlers run, one thread still reads requests (as long as the queue
    // has room). With a watch, the first starts with the first request: until then the control
    // thread watches the request channel, so a worker that is started and not yet used costs
    // no thread of its own.
    if let Some(watch) = &loop_.watch {
        lock(&loop_.jobs).reader_armed = true;
        watch.arm();
        // This thread reads the control channel and watches the request channel, until a
        // shutdown has drained.
        loop_.control(control_rx);
    }
    // Elsewhere one thread reads from the start.
    lock(&loop_.jobs).threads = 1;
    let first = loop_.clone();
    let first = thread::Builder::new()
        .name("bincrew-handler".into())
        .spawn(move || first.work());
    if first.is_err() {
        exit_with(EXIT_CANNOT_SERVE, "cannot start the worker's threads");
    }
    let control_loop = loop_.clone();
    if let Err(e) = thread::Builder::new()
        .name("bincrew-control".into())
        .spawn(move || {
            control_loop.control(control_rx);
        })
    {
        exit_with(
            EXIT_CANNOT_SERVE,
            &format!("cannot start the worker's control thread: {e}"),
        );
    }
    loop_.wait_drained()
}

impl<I: IpcValue, O: IpcValue> Loop<I, O> {
    /// Graceful shutdown: once every request made before it is read and answered, sends what
    /// is left and exits with code 0.
    fn wait_drained(&self) -> ! {
        let mut jobs = lock(&self.jobs);
        while !jobs.is_drained() {
            jobs = self
                .drained
                .wait(jobs)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(jobs);
        self.outbox.drain(|batch| self.send_answers(batch));
        std::process::exit(0);
    }

    /// Tells whoever waits for a shutdown to drain that it may have.
    fn signal_drained(&self) {
        self.drained.notify_all();
        if let Some(watch) = &self.watch {
            watch.notify();
        }
    }
}

/// What the threads of a worker process share.
struct Loop<I, O> {
    handler: Handler<I, O>,
    /// Read by one thread at a time: the one that is `receiving`.
    receiver: Mutex<RequestReader<I>>,
    /// The worker-to-app channel.
    answers: OpaqueIpcSender,
    /// Its region, for large answers.
    answer_region: Region,
    outbox: Outbox<Answer<O>>,
    jobs: Mutex<Jobs<I>>,
    /// Signalled for the handler threads: a request is queued, room in the queue, or nobody
    /// reads.
    changed: Condvar,
    /// Signalled for the main thread once a shutdown has drained every request.
    drained: Condvar,
    parallelism: usize,
    limit: QueueLimit,
    /// Tells the control thread when requests wait while no handler thread reads them, and
    /// when held answers are due.
    watch: Option<Arc<Watch>>,
}

/// A received request, not started yet.
struct Queued<I> {
    id: u64,
    request: I,
    /// Its share of the bytes of the message that carried it.
    bytes: usize,
}

struct Jobs<I> {
    /// Requests received and not started.
    queue: VecDeque<Queued<I>>,
    /// The bytes of the queued requests.
    queued_bytes: usize,
    /// The cancellation flags of the requests being handled.
    running: HashMap<u64, Arc<AtomicBool>>,
    /// A thread is reading the request channel.
    receiving: bool,
    /// The app asked for a shutdown.
    closing: bool,
    /// The request channel's `End` was read: no request follows.
    ended: bool,
    /// Nobody reads the request channel, and the control thread is watching it instead.
    reader_armed: bool,
    /// Handler threads started, and how many of them wait for something to do.
    threads: usize,
    idle: usize,
    /// The highest request id received so far: requests arrive in id order.
    last_id: Option<u64>,
    /// Cancellations of requests not received yet. The control channel can overtake the request
    /// channel: the request is dropped when it comes. An id below `last_id` will never come.
    early_cancels: std::collections::HashSet<u64>,
}

impl<I> Jobs<I> {
    /// No request follows and every request is answered.
    fn is_drained(&self) -> bool {
        self.ended && self.queue.is_empty() && self.running.is_empty()
    }

    fn has_room(&self, limit: QueueLimit) -> bool {
        self.queue.len() < limit.requests && self.queued_bytes < limit.bytes
    }

    /// Drops a queued request; `true` if it was queued.
    fn withdraw(&mut self, id: u64) -> bool {
        let Some(at) = self.queue.iter().position(|q| q.id == id) else {
            return false;
        };
        if let Some(queued) = self.queue.remove(at) {
            self.queued_bytes -= queued.bytes;
        }
        true
    }
}

enum Next<I> {
    Handle(u64, I, Arc<AtomicBool>),
    Receive,
    Stop,
}

impl<I: IpcValue, O: IpcValue> Loop<I, O> {
    /// One handler thread's life: handle a queued request when a handler slot is free, else
    /// read the request channel if nobody is and the queue has room, else wait.
    fn work(self: Arc<Self>) {
        loop {
            let next = {
                let mut jobs = lock(&self.jobs);
                loop {
                    if !jobs.queue.is_empty() && jobs.running.len() < self.parallelism {
                        if let Some(queued) = jobs.queue.pop_front() {
                            jobs.queued_bytes -= queued.bytes;
                            let cancelled = Arc::new(AtomicBool::new(false));
                            jobs.running.insert(queued.id, cancelled.clone());
                            break Next::Handle(queued.id, queued.request, cancelled);
                        }
                    }
                    if jobs.is_drained() {
                        break Next::Stop;
                    }
                    if !jobs.receiving && !jobs.ended && jobs.has_room(self.limit) {
                        jobs.receiving = true;
                        if jobs.reader_armed {
                            // This thread reads now: the control thread need not watch.
                            jobs.reader_armed = false;
                            if let Some(watch) = &self.watch {
                                watch.disarm();
                            }
                        }
                        break Next::Receive;
                    }
                    jobs.idle += 1;
                    jobs = self
                        .changed
                        .wait(jobs)
                        .unwrap_or_else(PoisonError::into_inner);
                    jobs.idle -= 1;
                }
            };
            match next {
                Next::Handle(id, request, cancelled) => self.handle(id, request, cancelled),
                Next::Receive => self.receive(),
                Next::Stop => return,
            }
        }
    }

    /// Wakes `n` handler threads, starting those that are missing (up to one more than the
    /// parallelism).
    fn wake(self: &Arc<Self>, n: usize) {
        if n == 0 {
            return;
        }
        let start = {
            let mut jobs = lock(&self.jobs);
            let missing = n.saturating_sub(jobs.idle);
            let room = (self.parallelism + 1).saturating_sub(jobs.threads);
            let start = missing.min(room);
            jobs.threads += start;
            start
        };
        for _ in 0..n.min(self.parallelism + 1) {
            self.changed.notify_one();
        }
        for _ in 0..start {
            let this = self.clone();
            let started = thread::Builder::new()
                .name("bincrew-handler".into())
                .spawn(move || this.work());
            if started.is_err() {
                // The threads already running take the work in turn; with none, nothing would.
                let mut jobs = lock(&self.jobs);
                jobs.threads -= 1;
                if jobs.threads == 0 {
                    exit_with(EXIT_CANNOT_SERVE, "cannot start the worker's threads");
                }
            }
        }
    }

    /// Runs a request, and then, while its handlers are fast and more requests are queued, the
    /// next ones on the same thread, holding their answers back to share a message.
    fn handle(self: &Arc<Self>, id: u64, request: I, cancelled: Arc<AtomicBool>) {
        let mut next = Some((id, request, cancelled));
        while let Some((id, request, cancelled)) = next.take() {
            // Timed only where answers can be held (the clock is read without a syscall).
            let began = self.watch.is_some().then(Instant::now);
            // The CPU limit per request counts this thread's time while the handler runs.
            let cpu = super::limits::Measured::start(id);
            let response = (self.handler)(RequestArgs {
                request,
                id,
                cancelled,
            });
            drop(cpu);
            // A slow handler is no reason to hold: the next one may be slow too.
            let fast = began.is_some_and(|began| began.elapsed() < HOLD_FOR);
            // Queued before the request stops counting as running, so a shutdown waits for it.
            let full = self.outbox.push(Answer::Done { id, response });
            let (more, drained, reads_next, room_made) = {
                let mut jobs = lock(&self.jobs);
                jobs.running.remove(&id);
                let mut room_made = false;
                if fast && !full && jobs.running.len() < self.parallelism {
                    // This thread runs the next queued request itself, so its answer may wait
                    // for the next one's (for at most `HOLD_FOR`: the outbox's deadline).
                    let had_room = jobs.has_room(self.limit);
                    if let Some(queued) = jobs.queue.pop_front() {
                        jobs.queued_bytes -= queued.bytes;
                        let cancelled = Arc::new(AtomicBool::new(false));
                        jobs.running.insert(queued.id, cancelled.clone());
                        next = Some((queued.id, queued.request, cancelled));
                        // A full queue stopped the reading: someone reads again.
                        room_made = !had_room
                            && jobs.has_room(self.limit)
                            && !jobs.receiving
                            && !jobs.ended;
                    }
                }
                // Nothing queued and nobody reading: this thread reads next. It takes the
                // reader's place before its answer goes out, so that a request the answer
                // prompts finds a reader (and does not wake the control thread's watch).
                let reads_next = next.is_none()
                    && jobs.queue.is_empty()
                    && !jobs.receiving
                    && !jobs.ended
                    && jobs.has_room(self.limit);
                if reads_next {
                    jobs.receiving = true;
                    if jobs.reader_armed {
                        jobs.reader_armed = false;
                        if let Some(watch) = &self.watch {
                            watch.disarm();
                        }
                    }
                }
                (
                    next.is_none() && !jobs.queue.is_empty(),
                    jobs.is_drained(),
                    reads_next,
                    room_made,
                )
            };
            if next.is_some() {
                if room_made {
                    self.wake(1);
                }
                if !self.outbox.hold() {
                    self.outbox.flush(|batch| self.send_answers(batch));
                }
                continue;
            }
            if more {
                // A handler slot is free for a queued request: another thread may start it
                // while this one sends, and answers finished meanwhile share the message.
                self.wake(1);
            }
            if drained {
                self.signal_drained();
            }
            self.outbox.flush(|batch| self.send_answers(batch));
            if reads_next {
                self.receive();
            }
        }
    }

    fn receive(self: &Arc<Self>) {
        let mut message = lock(&self.receiver).recv();
        let mut dropped = Vec::new();
        // Requests that did not decode are answered at once (the others run). Their answers are
        // queued before the `End` behind them is seen, so that the drain before a shutdown's
        // exit sends them: queued later, a fast handler could finish the last request and the
        // process exit first.
        let mut undecodable = false;
        if let Ok(Framed { value: items, .. }) = &mut message {
            for (id, job) in items.iter_mut() {
                if let Job::Undecodable(reason) = job {
                    undecodable = true;
                    self.outbox.push(Answer::DecodeFailed {
                        id: *id,
                        reason: std::mem::take(reason),
                    });
                }
            }
        }
        let (queued, lazy, drained) = {
            let mut jobs = lock(&self.jobs);
            jobs.receiving = false;
            match message {
                Ok(Framed { value: items, len }) => {
                    let share = len / items.len().max(1);
                    for (id, job) in items {
                        match job {
                            Job::Run(_)
                                if !jobs.early_cancels.is_empty()
                                    && jobs.early_cancels.remove(&id) =>
                            {
                                jobs.last_id = Some(id);
                                dropped.push(id);
                            }
                            Job::Run(request) => {
                                jobs.last_id = Some(id);
                                jobs.queued_bytes += share;
                                jobs.queue.push_back(Queued {
                                    id,
                                    request,
                                    bytes: share,
                                });
                            }
                            // Answered above.
                            Job::Undecodable(_) => jobs.last_id = Some(id),
                            Job::End => jobs.ended = true,
                        }
                    }
                    if let Some(last) = jobs.last_id {
                        jobs.early_cancels.retain(|id| *id > last);
                    }
                }
                // The app is gone: nobody is waiting for answers.
                Err(IpcError::Disconnected) => std::process::exit(0),
                Err(e) => exit_with(
                    EXIT_PROTOCOL,
                    &format!("cannot read a message from the app: {e}"),
                ),
            }
            let queued = jobs.queue.len();
            // This thread runs the one request it read next: rather than wake another thread to
            // read in its place, let the control thread wake one when a request comes. With more
            // queued (requests in flight together), threads are woken to run and to read them.
            let lazy = queued == 1
                && jobs.running.len() < self.parallelism
                && !jobs.ended
                && jobs.has_room(self.limit);
            let lazy = match (&self.watch, lazy) {
                // With one handler at a time, a request read while this one runs could not
                // start before this thread is free to read it itself: nobody need watch.
                (_, true) if self.parallelism == 1 => true,
                (Some(watch), true) => {
                    jobs.reader_armed = true;
                    watch.arm();
                    true
                }
                _ => false,
            };
            (queued, lazy, jobs.is_drained())
        };
        // This thread takes one queued request (or reads again); wake one more thread for each
        // other one, and one so that someone reads while this thread handles.
        let wake = if lazy {
            0
        } else {
            queued.min(self.parallelism + 1)
        };
        self.wake(wake);
        if undecodable {
            self.outbox.flush(|batch| self.send_answers(batch));
        }
        if drained {
            self.signal_drained();
        }
        self.answer_cancelled(dropped);
    }

    /// Tells the app that these requests were dropped before they started.
    fn answer_cancelled(&self, ids: Vec<u64>) {
        if ids.is_empty() {
            return;
        }
        for id in ids {
            self.outbox.push(Answer::Cancelled { id });
        }
        self.outbox.flush(|batch| self.send_answers(batch));
    }

    /// The control thread: applies cancellations and the shutdown request as they come, and
    /// wakes a handler thread when requests wait while nobody reads them. With a watch, this is
    /// the main thread, which also ends the process once a shutdown has drained.
    fn control(self: &Arc<Self>, receiver: IpcReceiver<Vec<(u64, Control)>>) -> ! {
        let Some(watch) = &self.watch else {
            loop {
                match recv_guarded(&receiver) {
                    Ok(items) => self.apply(items),
                    Err(e) => control_failed(e),
                }
            }
        };
        loop {
            let ready = watch.wait();
            if ready.notified && lock(&self.jobs).is_drained() {
                self.wait_drained();
            }
            if ready.deadline && !PANICKING.load(Ordering::SeqCst) {
                // Answers were held for `HOLD_FOR` while their thread runs another request:
                // they go out now, whatever that request takes.
                self.outbox.expired(|batch| self.send_answers(batch));
            }
            if ready.requests {
                let mut jobs = lock(&self.jobs);
                jobs.reader_armed = false;
                if !jobs.receiving && !jobs.ended && jobs.has_room(self.limit) {
                    drop(jobs);
                    self.wake(1);
                }
            }
            if ready.control {
                loop {
                    match receiver.try_recv() {
                        Ok(items) => self.apply(items),
                        Err(ipc_channel::TryRecvError::Empty) => break,
                        Err(ipc_channel::TryRecvError::IpcError(e)) => control_failed(e),
                    }
                }
            }
        }
    }

    fn apply(self: &Arc<Self>, items: Vec<(u64, Control)>) {
        let mut dropped = Vec::new();
        {
            let mut jobs = lock(&self.jobs);
            for (_, item) in items {
                match item {
                    Control::Cancel(id) => {
                        if let Some(flag) = jobs.running.get(&id) {
                            flag.store(true, Ordering::Relaxed);
                        } else if jobs.withdraw(id) {
                            dropped.push(id);
                        } else if jobs.last_id.is_none_or(|last| id > last) {
                            jobs.early_cancels.insert(id);
                        }
                    }
                    Control::Shutdown => jobs.closing = true,
                }
            }
        }
        if !dropped.is_empty() {
            // Room in the queue: a thread may read again.
            self.wake(1);
            self.answer_cancelled(dropped);
        }
    }

    fn send_answers(&self, batch: &[Answer<O>]) {
        if PANICKING.load(Ordering::SeqCst) {
            // The panic hook ends the process: nothing more is sent.
            loop {
                thread::park();
            }
        }
        let sender: IpcSender<FramedRef<'_, ToAppRef<'_, O>>> = self.answers.clone().to();
        ANSWER_MESSAGES.fetch_add(1, Ordering::Relaxed);
        let claim = self.answer_region.claim();
        let sent = transport::send_guarded(
            &sender,
            FramedRef(&ToAppRef::Answers(batch), claim.as_ref()),
        );
        if let (Ok(()), Some(claim)) = (&sent, claim) {
            claim.sent();
        }
        match sent {
            Ok(()) => {}
            Err(IpcError::SerializationError(e)) => {
                // Nothing was sent; tell the app which requests lost their responses. The
                // channels and shared memory the answers carried go nowhere.
                transport::discard_collected();
                let reason = transport::encode_error_reason(&e);
                let failed: Vec<Answer<O>> = batch
                    .iter()
                    .map(|answer| Answer::EncodeFailed {
                        id: answer.id(),
                        reason: reason.clone(),
                    })
                    .collect();
                if sender
                    .send(FramedRef(&ToAppRef::Answers(&failed), None))
                    .is_err()
                {
                    std::process::exit(0);
                }
            }
            // The app is gone.
            Err(_) => std::process::exit(0),
        }
    }
}

/// The control channel failed: the app is gone (exit quietly) or broke the protocol.
fn control_failed(error: IpcError) -> ! {
    match error {
        IpcError::Disconnected => std::process::exit(0),
        e => exit_with(
            EXIT_PROTOCOL,
            &format!("cannot read a control message from the app: {e}"),
        ),
    }
}

/// Reports a panic's message to the app, lets the previous hook print it, and ends the process.
fn install_panic_hook(answers: OpaqueIpcSender) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if transport::quiet_panic() {
            // The expected end of a probe for unclaimed channels: not the handler's panic.
            return;
        }
        // From here on no answer leaves: the app must not take any as a success.
        PANICKING.store(true, Ordering::SeqCst);
        // The report's send may block on an app that does not read: exit anyway, in time.
        let _ = thread::Builder::new()
            .name("bincrew-panic-exit".into())
            .spawn(|| {
                thread::sleep(PANIC_REPORT_GRACE);
                exit_now(EXIT_PANIC);
            });
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
        let sender: IpcSender<FramedRef<'_, ToAppRef<'_, ()>>> = answers.clone().to();
        let _ = sender.send(FramedRef(
            &ToAppRef::Panicked {
                message: &message,
                location: location.as_deref(),
            },
            None,
        ));
        previous(info);
        exit_now(EXIT_PANIC);
    }));
}
