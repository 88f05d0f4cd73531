//! Who reads a worker's channel, and when: the read-turn protocol.
//!
//! The receiving end of a worker's channel is read by one thread at a time, the one holding the
//! *turn* (the receiver, taken out of [`Turns`]):
//!
//! - a thread blocked in `Reply::wait` reads it itself, so its answer reaches it without a
//!   hand-off between threads; it reads only until its own request's deadline, then gives the
//!   turn back, so its timeout fires on time even while it reads for others;
//! - a future's `poll` reads one message itself when the turn is free and a message is already
//!   there, never waiting ([`ReadTurns::try_read`]): on one CPU the worker has usually answered
//!   by the time the send returns, and the answer then reaches the task without the reader
//!   thread;
//! - otherwise the worker's reader thread reads it: for futures that returned `Pending`, and
//!   for requests in flight while no blocking call waits. With a [`Watch`] (Linux) it sleeps on
//!   an eventfd and the worker's pidfd in between, so an idle worker's death still wakes it;
//!   without one it also reads while idle, to notice a crash, and takes the turn
//!   [`IDLE_HANDOVER`] after the last blocking call left.
//!
//! ```text
//!            take turn                 read one message              give turn back
//!   free ───────────────▶ reading ─────────────────────────▶ answers ─────────────────▶ free
//!    ▲                      │ deadline passed (a waiter)                                  │
//!    └──────────────────────┴─────────────────────────────────────────────────────────────┘
//!                           │ the channel ended, or the worker broke the protocol
//!                           ▼
//!                         ended (the worker's fate is settled; every waiter returns)
//! ```
//!
//! Every message's header and descriptors are checked before anything is decoded
//! (`Socket::read_packet`): a worker
//! cannot make the app allocate without bound, wait for the rest of a message that never comes,
//! or panic.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ipc_channel::ipc::IpcReceiver;
use ipc_channel::{IpcError, TryRecvError};

use super::reply::Slot;
use crate::error::RunError;
use crate::sync::lock;
use crate::wire::messages::{recv_guarded, Answer, ToApp};
use crate::wire::region::{with_incoming, Incoming};
use crate::wire::transport::{
    with_limit, Doorbell, ExitFd, Framed, PacketReader, Received, Socket,
};

/// How long the reader thread leaves the channel to threads in `Reply::wait` after the last one
/// is done, before reading it again itself: long enough for a loop of blocking calls to keep
/// reading its own answers, short enough to notice an idle worker's crash at once.
const IDLE_HANDOVER: Duration = Duration::from_millis(2);

type Receiver<O> = IpcReceiver<Framed<ToApp<O>>>;

/// The read turn itself: the receiving end, and what reading it without `ipc-channel` needs.
struct ReadEnd<O> {
    receiver: Receiver<O>,
    /// Where the socket is known and a channel to pass messages on could be made.
    own: Option<Box<PacketReader<Framed<ToApp<O>>>>>,
    /// The worker's region, for answers it places there.
    incoming: Incoming,
}

pub(super) struct ReadTurns<O> {
    turns: Mutex<Turns<O>>,
    /// Wakes the threads in `Reply::wait`: the turn is free, a request completed, or the channel
    /// ended.
    waiter_turn: Condvar,
    /// Wakes the reader thread: a future waits, or the channel ended.
    reader_turn: Condvar,
    /// The receiving socket, when known: to wait with a deadline and check each message.
    socket: Option<Socket>,
    /// Where the reader thread waits instead of `reader_turn`, when it need not sit on the
    /// channel while idle (see [`Watch`]).
    watch: Option<Watch>,
    /// Whether a future's `poll` steps aside once for the worker to answer.
    yields: Yields,
}

/// What lets the reader thread leave the channel alone while no future waits: the worker's
/// exit is seen on its pidfd, and other threads ring the doorbell when the reader should read.
/// Then a future's `poll` may read a ready answer itself (`try_read`), without waking the
/// reader thread: on one CPU, the worker has usually answered by the time the send returns.
struct Watch {
    doorbell: Doorbell,
    exit: ExitFd,
}

struct Turns<O> {
    /// The receiving end, when no thread is reading it.
    receiver: Option<ReadEnd<O>>,
    /// Threads in `Reply::wait` for this worker.
    waiters: usize,
    /// A future started waiting: the reader thread should read now.
    futures: bool,
    /// The channel has ended and the worker's fate is settled.
    ended: bool,
    /// When the last thread left `Reply::wait`.
    last_wait: Instant,
    /// The reader thread waits on the doorbell: ring it to wake it.
    reader_asleep: bool,
    /// The worker's process exited (its pidfd was readable): read until the channel ends.
    exited: bool,
    /// The channel ended while a future's `poll` read it: the reader thread settles it, since
    /// settling may wait for the process.
    end_seen: Option<Option<String>>,
}

impl<O: serde::Serialize + serde::de::DeserializeOwned + 'static> ReadTurns<O> {
    pub(super) fn new(receiver: Receiver<O>, socket: Option<Socket>, exit: Option<ExitFd>) -> Self {
        let own = socket.map(|socket| Box::new(PacketReader::new(socket)));
        // Reading without the reader thread needs bincrew's own read, and the exit in sight.
        let watch = match (&own, exit) {
            (Some(_), Some(exit)) => Doorbell::new().map(|doorbell| Watch { doorbell, exit }),
            _ => None,
        };
        ReadTurns {
            turns: Mutex::new(Turns {
                receiver: Some(ReadEnd {
                    receiver,
                    own,
                    incoming: Incoming::untrusted(),
                }),
                waiters: 0,
                futures: false,
                ended: false,
                last_wait: Instant::now(),
                reader_asleep: false,
                exited: false,
                end_seen: None,
            }),
            waiter_turn: Condvar::new(),
            reader_turn: Condvar::new(),
            socket,
            watch,
            yields: Yields::new(),
        }
    }
}

/// What the read turns act on: the worker's requests in flight (`Connection`).
pub(super) trait Inbox<O>: Send + Sync {
    /// The read turns of this worker's channel.
    fn turns(&self) -> &ReadTurns<O>;
    /// The largest message accepted.
    fn max_message(&self) -> usize;
    /// Completes the requests a batch of answers answers.
    fn answer(&self, answers: Vec<Answer<O>>);
    /// The worker reported a panic.
    fn panicked(&self, message: String, location: Option<String>);
    /// The channel ended: settles the worker's fate and fails what is in flight.
    fn finish(&self, protocol_error: Option<String>);
    /// Whether any request is in flight.
    fn has_pending(&self) -> bool;
    /// The error of a request that ended without its own result.
    fn shut_down(&self) -> RunError;
}

/// What one read of [`ReadTurns::try_read_once`] did.
enum Tried {
    /// A message was read (or the end seen).
    Read,
    /// Nothing was there.
    Empty,
    /// Someone else reads, or nothing may be read here.
    Busy,
}

/// Whether stepping aside once in a future's `poll` lets the worker answer in time, as it does
/// when both share a CPU: counted over windows of [`YIELD_WINDOW`] tries; after a window with
/// fewer than an eighth answered, no step aside for the next [`YIELD_PAUSE`] polls.
struct Yields {
    /// Tries and answers in the current window, `tries << 16 | answered`.
    window: AtomicU32,
    paused: AtomicU32,
}

const YIELD_WINDOW: u32 = 32;
const YIELD_PAUSE: u32 = 1024;

impl Yields {
    fn new() -> Self {
        Yields {
            window: AtomicU32::new(0),
            paused: AtomicU32::new(0),
        }
    }

    /// Whether to skip the step aside this time.
    fn skip(&self) -> bool {
        self.paused
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1))
            .is_ok()
    }

    fn record(&self, answered: bool) {
        let add = (1 << 16) | u32::from(answered);
        let window = self.window.fetch_add(add, Ordering::Relaxed) + add;
        if window >> 16 >= YIELD_WINDOW {
            self.window.store(0, Ordering::Relaxed);
            if window & 0xffff < YIELD_WINDOW / 8 {
                self.paused.store(YIELD_PAUSE, Ordering::Relaxed);
            }
        }
    }
}

/// How one read turn ended.
enum Read {
    /// A message was read and acted on.
    Message,
    /// The reader's deadline passed first.
    Deadline,
    /// The channel ended; with why, when the worker broke the protocol.
    Ended(Option<String>),
    /// Nothing was there to read (a read that does not wait).
    Empty,
}

impl<O> ReadTurns<O> {
    /// Wakes the threads in `Reply::wait`, after requests were completed outside a read.
    pub(super) fn wake_waiters(&self) {
        let waiting = lock(&self.turns).waiters > 0;
        if waiting {
            self.waiter_turn.notify_all();
        }
    }

    /// A future returned `Pending`: the reader thread reads for it.
    pub(super) fn future_waits(&self) {
        let mut turns = lock(&self.turns);
        // Someone reads already (the reader thread, or a blocking call): whatever it reads is
        // put in the future's slot, which wakes it; whoever gives the turn back then wakes the
        // reader thread for the futures still waiting. Only a free turn needs it now.
        if !turns.futures {
            turns.futures = true;
            if turns.receiver.is_some() {
                self.wake_reader(turns);
            }
        }
    }

    /// Wakes the reader thread to look again; releases `turns` first.
    fn wake_reader(&self, turns: std::sync::MutexGuard<'_, Turns<O>>) {
        match &self.watch {
            Some(watch) => {
                let asleep = turns.reader_asleep;
                drop(turns);
                if asleep {
                    watch.doorbell.ring();
                }
            }
            None => {
                drop(turns);
                self.reader_turn.notify_all();
            }
        }
    }
}

impl<O: serde::de::DeserializeOwned + serde::Serialize + 'static> ReadTurns<O> {
    /// Reads one message, unless `deadline` passes first.
    fn read_message(
        &self,
        inbox: &dyn Inbox<O>,
        end: &mut ReadEnd<O>,
        deadline: Option<Instant>,
        wait: bool,
    ) -> Read {
        let limit = inbox.max_message();
        let ReadEnd {
            receiver,
            own,
            incoming,
        } = end;
        // `Err` here is how the read ended without a message.
        let received = with_incoming(incoming, || match (self.socket, own.as_deref_mut()) {
            (Some(socket), Some(own)) => {
                if deadline.is_some() && !socket.wait_readable(deadline) {
                    return Err(Read::Deadline);
                }
                match own.read(limit, wait) {
                    Received::Message(message) => Ok(Ok(message)),
                    Received::Empty => Err(Read::Empty),
                    Received::End => Ok(Err(IpcError::Disconnected)),
                    Received::Refused(reason) => Err(Read::Ended(Some(reason))),
                }
            }
            _ => match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match with_limit(limit, || receiver.try_recv_timeout(left)) {
                        Ok(message) => Ok(Ok(message)),
                        Err(TryRecvError::Empty) => Err(Read::Deadline),
                        Err(TryRecvError::IpcError(e)) => Ok(Err(e)),
                    }
                }
                None => Ok(with_limit(limit, || recv_guarded(receiver))),
            },
        });
        let received = match received {
            Ok(received) => received,
            Err(read) => return read,
        };
        match received {
            Ok(Framed { value, .. }) => {
                match value {
                    ToApp::Answers(answers) => inbox.answer(answers),
                    ToApp::Panicked { message, location } => inbox.panicked(message, location),
                }
                Read::Message
            }
            Err(IpcError::Disconnected) => Read::Ended(None),
            Err(IpcError::SerializationError(e)) => {
                Read::Ended(Some(format!("it sent a message that does not decode: {e}")))
            }
            Err(IpcError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Read::Ended(Some(e.to_string()))
            }
            Err(IpcError::Io(e)) => Read::Ended(Some(format!("reading its channel failed: {e}"))),
        }
    }

    /// Reads with `receiver` (taken from the turns) once and gives it back, waking the threads
    /// in `Reply::wait` other than the reader (`by_waiter`), whose requests may be answered or
    /// who may read next; settles the worker's fate if the channel ended.
    fn take_turn(
        &self,
        inbox: &dyn Inbox<O>,
        mut receiver: ReadEnd<O>,
        by_waiter: bool,
        deadline: Option<Instant>,
    ) {
        match self.read_message(inbox, &mut receiver, deadline, true) {
            Read::Message | Read::Deadline | Read::Empty => {
                self.give_back(inbox, receiver, usize::from(by_waiter), by_waiter);
            }
            Read::Ended(protocol_error) => {
                drop(receiver);
                inbox.finish(protocol_error);
                let mut turns = lock(&self.turns);
                turns.ended = true;
                self.waiter_turn.notify_all();
                self.wake_reader(turns);
            }
        }
    }

    /// Puts the receiver back after a read by a thread other than the reader thread (`me`
    /// counts that thread among the waiters), and wakes who should read next: other waiters;
    /// the reader thread, asleep on its doorbell, when futures wait, when the worker has exited
    /// (the end must be read), or, after a blocking call (`by_waiter`), when requests are in
    /// flight and no blocking call will read for them. A future's own read does not wake it for
    /// its own request: the future rings when it returns `Pending`. Lock order: turns, then
    /// state.
    fn give_back(&self, inbox: &dyn Inbox<O>, receiver: ReadEnd<O>, me: usize, by_waiter: bool) {
        let mut turns = lock(&self.turns);
        turns.receiver = Some(receiver);
        let others = turns.waiters - me;
        let reader = self.watch.is_some()
            && turns.reader_asleep
            && (turns.futures || turns.exited || (by_waiter && others == 0 && inbox.has_pending()));
        if reader {
            self.wake_reader(turns);
        } else {
            drop(turns);
        }
        if others > 0 {
            self.waiter_turn.notify_all();
        }
    }

    /// The reader thread: reads whenever no thread in `Reply::wait` does, until the channel
    /// ends. With a [`Watch`], it reads while requests are in flight and nobody else reads,
    /// and otherwise sleeps on its doorbell and the worker's pidfd: an idle worker's death is
    /// seen there, and a future's `poll` may read its own answer. Without one, it is woken when
    /// a future waits and otherwise looks again every [`IDLE_HANDOVER`] while blocking calls
    /// are about, reading the channel while idle to notice a crash.
    pub(super) fn read_loop(inbox: Arc<dyn Inbox<O>>) {
        let this = inbox.turns();
        let mut turns = lock(&this.turns);
        loop {
            if turns.ended {
                return;
            }
            if let Some(end) = turns.end_seen.take() {
                // A future's `poll` read the end: settle it here, where waiting is allowed.
                turns.receiver = None;
                drop(turns);
                inbox.finish(end);
                lock(&this.turns).ended = true;
                this.waiter_turn.notify_all();
                return;
            }
            let free = turns.receiver.is_some() && turns.waiters == 0;
            // With no blocking call waiting, requests still in flight belong to futures (or to
            // replies not yet polled): read for them now. Lock order: turns, then state.
            let pending = free && inbox.has_pending();
            let read = match &this.watch {
                Some(_) => free && (turns.futures || pending || turns.exited),
                None => {
                    let idle = turns.last_wait.elapsed() >= IDLE_HANDOVER;
                    free && (turns.futures || pending || idle)
                }
            };
            if read {
                if let Some(receiver) = turns.receiver.take() {
                    turns.futures = false;
                    drop(turns);
                    this.take_turn(&*inbox, receiver, false, None);
                    turns = lock(&this.turns);
                }
                continue;
            }
            match &this.watch {
                Some(watch) => {
                    turns.reader_asleep = true;
                    let exited = turns.exited;
                    drop(turns);
                    let exit = (!exited).then_some(&watch.exit);
                    let now_exited = watch.doorbell.wait(exit);
                    turns = lock(&this.turns);
                    turns.reader_asleep = false;
                    turns.exited |= now_exited;
                }
                None => {
                    let wait = if free {
                        IDLE_HANDOVER.saturating_sub(turns.last_wait.elapsed())
                    } else {
                        IDLE_HANDOVER
                    };
                    turns = this
                        .reader_turn
                        .wait_timeout(turns, wait.max(Duration::from_micros(100)))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    /// A future's `poll`: reads one message if one is there and the turn is free, without
    /// waiting; `true` when it read one (whose answers may complete the caller's request).
    /// Only with a [`Watch`]: otherwise the reader thread may sit on the channel.
    pub(super) fn try_read(&self, inbox: &dyn Inbox<O>, slot: &Slot<O>) {
        if let Tried::Read = self.try_read_once(inbox) {
            return;
        }
        if slot.is_answered() || self.watch.is_none() || self.yields.skip() {
            return;
        }
        // Not answered yet. When the worker shares this CPU, it runs if this thread steps aside
        // once (the send woke it), and so does the reader thread if it holds the turn; the
        // answer is then here without two more thread switches. When that does not pay (the
        // worker runs elsewhere, or other threads take the CPU), stop trying for a while.
        std::thread::yield_now();
        if !slot.is_answered() {
            let _ = self.try_read_once(inbox);
        }
        self.yields.record(slot.is_answered());
    }

    /// One read that does not wait, when the turn is free.
    fn try_read_once(&self, inbox: &dyn Inbox<O>) -> Tried {
        if self.watch.is_none() {
            return Tried::Busy;
        }
        let mut turns = lock(&self.turns);
        if turns.ended || turns.end_seen.is_some() || turns.waiters > 0 {
            return Tried::Busy;
        }
        let Some(mut receiver) = turns.receiver.take() else {
            return Tried::Busy;
        };
        drop(turns);
        match self.read_message(inbox, &mut receiver, None, false) {
            Read::Message => {
                self.give_back(inbox, receiver, 0, false);
                Tried::Read
            }
            Read::Empty | Read::Deadline => {
                self.give_back(inbox, receiver, 0, false);
                Tried::Empty
            }
            Read::Ended(reason) => {
                // Settling waits for the process (up to a bound), which an executor thread must
                // not: the reader thread does it.
                drop(receiver);
                let mut turns = lock(&self.turns);
                turns.end_seen = Some(reason);
                self.wake_reader(turns);
                Tried::Read
            }
        }
    }

    /// `Reply::wait`: reads the channel itself while no other thread does, until `slot` is
    /// answered; never reads past `deadline`, when the timer fails the request.
    pub(super) fn wait(
        &self,
        inbox: &dyn Inbox<O>,
        slot: &Slot<O>,
        deadline: Option<Instant>,
    ) -> Result<O, RunError> {
        let mut turns = lock(&self.turns);
        turns.waiters += 1;
        let result = loop {
            if let Some(result) = slot.take() {
                break result;
            }
            if turns.ended {
                // Every request is settled when the channel ends; this one was taken meanwhile.
                break Err(inbox.shut_down());
            }
            let late = deadline.is_some_and(|d| Instant::now() >= d);
            if !late {
                if let Some(receiver) = turns.receiver.take() {
                    drop(turns);
                    self.take_turn(inbox, receiver, true, deadline);
                    turns = lock(&self.turns);
                    continue;
                }
            }
            turns = match deadline {
                // Past the deadline the timer completes the slot any moment now.
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.waiter_turn
                        .wait_timeout(turns, left.max(Duration::from_millis(1)))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .waiter_turn
                    .wait(turns)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        };
        turns.waiters -= 1;
        turns.last_wait = Instant::now();
        let last = turns.waiters == 0;
        // Requests of futures still in flight: the reader thread takes over now.
        // Lock order: turns, then state.
        if last && (turns.exited || inbox.has_pending()) {
            self.wake_reader(turns);
        } else {
            drop(turns);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    //! The read-turn protocol against a real channel, with an inbox that stands in for a
    //! `Connection`. Every assertion is on outcomes (who got which answer, what ended how),
    //! never on time.

    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::thread;

    use ipc_channel::ipc::{self, IpcSender};

    use super::*;
    use crate::wire::messages::ToAppRef;
    use crate::wire::transport::FramedRef;

    struct FakeInbox {
        turns: ReadTurns<u32>,
        pending: Mutex<HashMap<u64, Arc<Slot<u32>>>>,
        finished: Mutex<Vec<Option<String>>>,
    }

    impl Inbox<u32> for FakeInbox {
        fn turns(&self) -> &ReadTurns<u32> {
            &self.turns
        }
        fn max_message(&self) -> usize {
            1 << 20
        }
        fn answer(&self, answers: Vec<Answer<u32>>) {
            for answer in answers {
                if let (Answer::Done { id, response }, Some(slot)) =
                    (&answer, lock(&self.pending).remove(&answer.id()))
                {
                    let _ = id;
                    slot.complete(Ok(*response));
                }
            }
        }
        fn panicked(&self, _message: String, _location: Option<String>) {}
        fn finish(&self, protocol_error: Option<String>) {
            lock(&self.finished).push(protocol_error);
            for (_, slot) in lock(&self.pending).drain() {
                slot.complete(Err(self.shut_down()));
            }
        }
        fn has_pending(&self) -> bool {
            !lock(&self.pending).is_empty()
        }
        fn shut_down(&self) -> RunError {
            RunError::ShutDown {
                worker: "fake".into(),
            }
        }
    }

    type Answers = IpcSender<FramedRef<'static, ToAppRef<'static, u32>>>;

    fn setup() -> (Arc<FakeInbox>, Answers) {
        let (tx, rx) = ipc::channel::<Framed<ToApp<u32>>>().expect("channel");
        let socket = Socket::find(&rx, std::process::id());
        let inbox = Arc::new(FakeInbox {
            turns: ReadTurns::new(rx, socket, None),
            pending: Mutex::new(HashMap::new()),
            finished: Mutex::new(Vec::new()),
        });
        (inbox, tx.to_opaque().to())
    }

    fn pending(inbox: &FakeInbox, id: u64) -> Arc<Slot<u32>> {
        let slot = Arc::new(Slot::new());
        lock(&inbox.pending).insert(id, slot.clone());
        slot
    }

    fn answer(tx: &Answers, id: u64, response: u32) {
        let answers = [Answer::Done { id, response }];
        // The frame only borrows: extend the borrow for the channel's `'static` type.
        let tx: IpcSender<FramedRef<'_, ToAppRef<'_, u32>>> = tx.clone().to_opaque().to();
        tx.send(FramedRef(&ToAppRef::Answers(&answers), None))
            .expect("send");
    }

    #[test]
    fn a_waiter_reads_its_own_answer_and_answers_for_others_reach_them() {
        let (inbox, tx) = setup();
        let (a, b) = (pending(&inbox, 1), pending(&inbox, 2));
        let waiter_b = {
            let inbox = inbox.clone();
            thread::spawn(move || inbox.turns.wait(&*inbox, &b, None))
        };
        // B's waiter holds the turn, or will: the answer to A is read by it and put in A's slot.
        answer(&tx, 1, 10);
        answer(&tx, 2, 20);
        assert_eq!(waiter_b.join().expect("joins").expect("answered"), 20);
        assert_eq!(inbox.turns.wait(&*inbox, &a, None).expect("answered"), 10);
        assert!(lock(&inbox.finished).is_empty());
    }

    #[test]
    fn a_waiter_gives_the_turn_back_at_its_deadline_and_another_reads_after_it() {
        let (inbox, tx) = setup();
        let (late, other) = (pending(&inbox, 1), pending(&inbox, 2));
        let deadline = Instant::now() + Duration::from_millis(50);
        let waiter = {
            let inbox = inbox.clone();
            let late = late.clone();
            thread::spawn(move || inbox.turns.wait(&*inbox, &late, Some(deadline)))
        };
        // What the timer does at the deadline: fail the request and wake the waiters.
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if lock(&inbox.pending).remove(&1).is_some() {
            late.complete(Err(RunError::TimedOut {
                worker: "fake".into(),
                timeout: Duration::from_millis(50),
            }));
        }
        inbox.turns.wake_waiters();
        assert!(matches!(
            waiter.join().expect("joins"),
            Err(RunError::TimedOut { .. })
        ));
        // The turn was given back: another waiter reads its own answer.
        answer(&tx, 2, 22);
        assert_eq!(
            inbox.turns.wait(&*inbox, &other, None).expect("answered"),
            22
        );
    }

    #[test]
    fn the_reader_thread_reads_for_futures_and_the_end_settles_once() {
        let (inbox, tx) = setup();
        let future_slot = pending(&inbox, 7);
        let reader = {
            let inbox: Arc<dyn Inbox<u32>> = inbox.clone();
            thread::spawn(move || ReadTurns::read_loop(inbox))
        };
        inbox.turns.future_waits();
        answer(&tx, 7, 70);
        // Nobody waits on this slot: only the reader thread can have filled it.
        let mut result = None;
        while result.is_none() {
            result = future_slot.take();
            thread::yield_now();
        }
        assert_eq!(result.expect("taken").expect("answered"), 70);

        let stuck = pending(&inbox, 8);
        let waiter = {
            let inbox = inbox.clone();
            thread::spawn(move || inbox.turns.wait(&*inbox, &stuck, None))
        };
        // The worker goes away: every waiter returns, the end is settled once.
        drop(tx);
        assert!(matches!(
            waiter.join().expect("joins"),
            Err(RunError::ShutDown { .. })
        ));
        reader.join().expect("the reader thread ends");
        assert_eq!(*lock(&inbox.finished), vec![None]);
    }
}
