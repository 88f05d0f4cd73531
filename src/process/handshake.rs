//! Accepting a worker's connection and checking its hello.

use std::cell::Cell;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcOneShotServer, IpcReceiver, IpcSender, OpaqueIpcReceiver};

use crate::build::BuildInfo;
use crate::error::{list_or_none, ExitInfo, StartError, TypeSide, VersionMismatch};
use crate::wire::hello::{Greeting, Hello, Status};
use crate::wire::messages::Ready;
use crate::wire::shape;

use super::{looks_like_worker, Check, Process, Spec, STDERR_GRACE};

/// How often the handshake checks whether the process already exited.
const EXIT_POLL: Duration = Duration::from_millis(10);
/// How long the handshake waits, after seeing the process exit, for a hello it sent just before
/// (a probed binary answers and exits at once).
const LATE_HELLO_GRACE: Duration = Duration::from_millis(200);
/// How long, at the connect deadline, the accept thread has to show that no other process is
/// holding the handshake connection (see [`Handshake::taken`]).
const TAKEN_GRACE: Duration = Duration::from_secs(1);

pub(super) enum Event {
    /// The hello and `Ready` in one message: one event, so that the app's thread wakes once.
    Greeted(Vec<u8>, Box<(OpaqueIpcReceiver, Ready)>),
    Hello(Result<Vec<u8>, String>),
    Ready(Result<(OpaqueIpcReceiver, Ready), String>),
}

/// Runs on the accept thread: the hello, then `Ready` (from the same message, or the next);
/// `true` when both came.
pub(super) fn accept_connection(
    server: IpcOneShotServer<Greeting>,
    events: mpsc::Sender<Event>,
) -> bool {
    // `ipc-channel` panics on a message that names a channel it does not carry.
    let accepted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.accept()))
        .unwrap_or_else(|_| {
            Err(ipc_channel::IpcError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "its hello names a channel it did not send",
            )))
        });
    let receiver = match accepted {
        Ok((
            receiver,
            Greeting {
                hello,
                ready,
                ready_error,
            },
        )) => {
            if let (Some(ready), None) = (ready, &ready_error) {
                let ready = Box::new((receiver.to_opaque(), ready));
                let _ = events.send(Event::Greeted(hello, ready));
                return true;
            }
            let _ = events.send(Event::Hello(Ok(hello)));
            if let Some(reason) = ready_error {
                let _ = events.send(Event::Ready(Err(format!(
                    "its hello's `ready=` line does not hold its channels: {reason}"
                ))));
                return false;
            }
            receiver
        }
        Err(e) => {
            let _ = events.send(Event::Hello(Err(e.to_string())));
            return false;
        }
    };
    let receiver: IpcReceiver<Ready> = receiver.to_opaque().to();
    let ready = match crate::wire::messages::recv_guarded(&receiver) {
        Ok(ready) => Ok((receiver.to_opaque(), ready)),
        Err(ipc_channel::IpcError::Disconnected) => {
            Err("it closed the connection after its hello".to_owned())
        }
        Err(e) => Err(format!("its second message is not a bincrew `Ready`: {e}")),
    };
    let connected = ready.is_ok();
    let _ = events.send(Event::Ready(ready));
    connected
}

/// A handshake that succeeded: the connection and the hello, or a probe's listing.
type Outcome = Result<(OpaqueIpcReceiver, Ready, Hello, BuildInfo), Hello>;

pub(super) struct Handshake<'a> {
    pub(super) spec: &'a Spec,
    pub(super) app: Option<&'a BuildInfo>,
    pub(super) token: &'a str,
    pub(super) process: &'a Process,
    pub(super) timeout: Duration,
    pub(super) server_name: &'a str,
    /// Whether [`taken`](Self::taken) connected to the server.
    pub(super) probed: Cell<bool>,
}

impl Handshake<'_> {
    pub(super) fn wait(
        &self,
        events: &mpsc::Receiver<Event>,
        deadline: Instant,
    ) -> Result<Outcome, StartError> {
        let mut checked = None;
        // Once the process has exited: its status, and until when a hello it sent just before
        // exiting may still come from the accept thread.
        let mut exited: Option<(ExitInfo, Instant)> = None;
        loop {
            let now = Instant::now();
            let wait = match exited {
                Some((exit, until)) if now >= until => return Err(self.exited(exit)),
                Some((_, until)) => until - now,
                None if now >= deadline => return Err(self.timed_out(events, checked.is_some())),
                None => (deadline - now).min(EXIT_POLL),
            };
            match events.recv_timeout(wait) {
                Ok(Event::Greeted(bytes, ready)) => {
                    let (receiver, ready) = *ready;
                    return Ok(match self.check_hello(&bytes)? {
                        Ok((hello, build)) => Ok((receiver, ready, hello, build)),
                        Err(listed) => Err(listed),
                    });
                }
                Ok(Event::Hello(Ok(bytes))) => match self.check_hello(&bytes)? {
                    Ok(hello_and_build) => checked = Some(hello_and_build),
                    Err(listed) => return Ok(Err(listed)),
                },
                Ok(Event::Hello(Err(reason))) => {
                    return Err(self.exited_or(format!("accepting its connection failed: {reason}")))
                }
                Ok(Event::Ready(Ok((receiver, ready)))) => {
                    let Some((hello, build)) = checked.take() else {
                        return Err(self.rejected("it sent `Ready` before its hello".into()));
                    };
                    return Ok(Ok((receiver, ready, hello, build)));
                }
                Ok(Event::Ready(Err(reason))) => return Err(self.exited_or(reason)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if exited.is_none() {
                        if let Some(exit) = self.process.try_exit() {
                            exited = Some((exit, Instant::now() + LATE_HELLO_GRACE));
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if let Some((exit, _)) = exited {
                        return Err(self.exited(exit));
                    }
                    return Err(self.exited_or("the handshake thread ended unexpectedly".into()));
                }
            }
        }
    }

    /// `Ok(Err(hello))` is a probe's listing.
    fn check_hello(&self, bytes: &[u8]) -> Result<Result<(Hello, BuildInfo), Hello>, StartError> {
        let spec = self.spec;
        let hello = Hello::decode(bytes).map_err(|reason| self.rejected(reason))?;
        if hello.token != self.token {
            return Err(self.rejected(
                "it did not present the token the app gave it (another process connected in its place)"
                    .into(),
            ));
        }
        match hello.status {
            Status::Ready => {}
            Status::UnknownWorker
                if matches!(spec.check, Check::Probe) && hello.build.is_some() =>
            {
                return Ok(Err(hello))
            }
            Status::UnknownWorker => {
                let hint = if hello.single {
                    format!(
                        " (each bincrew::run_worker call serves one name and ends a process \
                         started as another, so only its first call, for {}, can serve: register \
                         every worker in one bincrew::Workers, as in \
                         Workers::new().worker(\"{}\", ...).worker(...).run())",
                        list_or_none(&hello.served),
                        spec.name
                    )
                } else {
                    String::new()
                };
                return Err(StartError::UnknownWorker {
                    worker: spec.name.clone(),
                    exe: spec.exe.clone(),
                    available: hello.served,
                    hint,
                });
            }
            Status::NotInitialized => {
                return Err(self.rejected(
                    "the worker executable does not call bincrew::init!() at the top of its main"
                        .into(),
                ))
            }
        }
        let Some(build) = hello.build.clone() else {
            return Err(self.rejected("its hello carries no build information".into()));
        };
        let (
            Check::App {
                compat,
                request,
                response,
            },
            Some(app),
        ) = (&spec.check, self.app)
        else {
            return Ok(Ok((hello, build)));
        };
        if let Err((kind, fix)) = compat.check(app, &build) {
            return Err(StartError::VersionMismatch(Box::new(VersionMismatch::new(
                &spec.name, &spec.exe, compat, app, &build, kind, fix,
            ))));
        }
        for (side, traced, worker_type, worker_shape) in [
            (
                TypeSide::Request,
                request,
                &hello.request_type,
                &hello.request_shape,
            ),
            (
                TypeSide::Response,
                response,
                &hello.response_type,
                &hello.response_shape,
            ),
        ] {
            let difference = shape::compare(traced, worker_type, worker_shape.as_deref())
                .map_err(|reason| self.rejected(reason))?;
            if let Some(difference) = difference {
                return Err(StartError::TypeMismatch {
                    worker: spec.name.clone(),
                    side,
                    app_type: crate::wire::codec::shown(traced.type_name),
                    worker_type: crate::wire::codec::shown(worker_type),
                    difference,
                });
            }
        }
        Ok(Ok((hello, build)))
    }

    fn rejected(&self, reason: String) -> StartError {
        StartError::Handshake {
            worker: self.spec.name.clone(),
            exe: self.spec.exe.clone(),
            reason,
        }
    }

    /// The process exited: its status and stderr, unless it is not a worker at all.
    fn exited(&self, exit: ExitInfo) -> StartError {
        let stderr = self.process.stderr_tail(STDERR_GRACE);
        if self.spec.self_spawn {
            // The app's own executable is a bincrew binary: its main did not serve.
            return StartError::NotServed {
                worker: self.spec.name.clone(),
                exe: self.spec.exe.clone(),
                exit,
                stderr,
            };
        }
        if !looks_like_worker(&self.spec.program) {
            return StartError::NotAWorker {
                worker: self.spec.name.clone(),
                exe: self.spec.exe.clone(),
                outcome: format!("exited with {exit}"),
                stderr,
            };
        }
        StartError::ExitedBeforeHandshake {
            worker: self.spec.name.clone(),
            exe: self.spec.exe.clone(),
            exit,
            stderr,
        }
    }

    /// The connection failed: report the exit if the process is ending, else the reason.
    fn exited_or(&self, reason: String) -> StartError {
        match self.process.wait_deadline(Instant::now() + STDERR_GRACE) {
            Some(exit) => self.exited(exit),
            None => self.rejected(reason),
        }
    }

    /// At the connect deadline: the worker is killed, and the error says whether it never
    /// connected or another process took its connection.
    fn timed_out(&self, events: &mpsc::Receiver<Event>, hello_seen: bool) -> StartError {
        self.process.kill();
        if !hello_seen && self.taken(events) {
            return StartError::HandshakeTaken {
                worker: self.spec.name.clone(),
                exe: self.spec.exe.clone(),
            };
        }
        let stderr = self.process.stderr_tail(STDERR_GRACE);
        if !looks_like_worker(&self.spec.program) {
            return StartError::NotAWorker {
                worker: self.spec.name.clone(),
                exe: self.spec.exe.clone(),
                outcome: format!("did not connect within {:?}", self.timeout),
                stderr,
            };
        }
        StartError::Timeout {
            worker: self.spec.name.clone(),
            exe: self.spec.exe.clone(),
            timeout: self.timeout,
            stderr,
        }
    }

    /// Whether the accept thread is stuck reading a first message that will not come, on a
    /// connection that is not the worker's: another process connected first and sent nothing.
    /// Called once the worker was killed, with no hello received.
    ///
    /// The accept thread is in one of three places. Still in `accept`: the connection made here
    /// is accepted and its message delivered. Reading the first message of the worker's own
    /// connection (a worker stopped between its connect and its hello): the worker's death
    /// closes it, and the read fails. Reading a connection some other process holds open:
    /// nothing comes, and after [`TAKEN_GRACE`] the handshake counts as taken. (A process that
    /// holds the connection and is killed in the same moment is missed, and reported as a
    /// timeout.)
    fn taken(&self, events: &mpsc::Receiver<Event>) -> bool {
        self.probed.set(true);
        match IpcSender::<Greeting>::connect(self.server_name.to_owned()) {
            // Dropped at once: once it has delivered its message, the accept thread's wait for
            // `Ready` on it ends too.
            Ok(probe) => {
                let _ = probe.send(Greeting::bare(
                    b"bincrew: the connect deadline passed".to_vec(),
                ));
            }
            // The server is closed: the accept thread got past reading a first message.
            Err(_) => return false,
        }
        matches!(
            events.recv_timeout(TAKEN_GRACE),
            Err(mpsc::RecvTimeoutError::Timeout)
        )
    }
}
