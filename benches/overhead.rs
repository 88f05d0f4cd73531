//! What bincrew costs over a bare ipc-channel request/response loop, measured in one run on one
//! machine.
//!
//! ```text
//! cargo bench --bench overhead                    # the tables
//! cargo bench --bench overhead -- --json out.json # the tables, and the same data as JSON
//! cargo bench --bench overhead -- --quick         # a short run, to check that it works
//! cargo bench --bench overhead -- --only round_trip,pipelined_100 --placement one-cpu
//! ```
//!
//! (cargo runs benchmarks in the package's root directory, so a relative JSON path is taken
//! from there.)
//!
//! This executable is three programs:
//! - started by bincrew as a worker, it serves the workers `echo`, `bytes`, `blob`, `buffer`
//!   and `hash` ([`bincrew::Workers::run`] never returns then);
//! - started with [`RAW_SERVER_ENV`] set, it is a raw ipc-channel peer: it connects to the
//!   one-shot server named there, hands over a request sender and answers requests in a plain
//!   `recv` → `send` loop, with no framework at all;
//! - otherwise it is the benchmark, which starts both kinds of children.
//!
//! # Placement
//!
//! On a virtual machine, one-at-a-time round trips mostly measure how fast a halted vCPU wakes
//! up: fast when both processes share a CPU, several times slower when each wakes the other
//! across CPUs. Left to the scheduler, that choice is made by chance, differently for each child
//! and each run. So every case runs in each of three placements, raw and bincrew alike:
//! - `one-cpu`: every thread of the app and of its children on the same CPU;
//! - `two-cpus`: every thread of the app on one CPU, every thread of its children on another
//!   (skipped when this process may run on one CPU only);
//! - `free`: no pinning (every CPU this process was allowed at its start), and a pause of
//!   [`SETTLE`] before each measured run, so that both sides start from the same idle state.
//!
//! How every thread is pinned, with `sched_setaffinity` (a per-thread setting that a new thread
//! inherits from the thread that starts it, and a child process from the thread that spawns it):
//! - the app pins each of its threads, listed in `/proc/self/task`, when a placement begins
//!   (again until a pass finds none left to change, in case one started another meanwhile);
//!   threads started later inherit the setting;
//! - a child (a raw peer, or a bincrew worker started from this executable) is told its CPUs in
//!   [`PIN_ENV`], set with `Command::env` or `WorkerBuilder::env`, and pins its main thread
//!   first thing in `main`, before it starts any thread, so that all of its threads inherit it.
//!   Pinning a child by pid from the app would pin only its main thread, and threads it starts
//!   later (bincrew starts handler threads on demand) would inherit whatever it had then.
//!
//! Each case checks the CPUs of every thread of the app and of each of its children after its
//! runs, and fails when one is not where its placement puts it.
//!
//! # Runs
//!
//! Each case measures both sides in the same run, interleaved (raw, bincrew, raw, …, with the
//! order rotated every run) so that a slow moment of the machine hits both; each side is warmed
//! up once, and the tables show the median of several runs. Start, which takes about a
//! millisecond, alternates the two sides start by start within each run. Every child is killed and reaped when
//! its case ends, and a watchdog ends the benchmark if it ever hangs. The "other load" column
//! tells when other processes got in the way.
//!
//! Before any case, the footprint table shows what an idle child costs: the app's and the
//! child's resident memory and threads with a raw peer and with a bincrew worker.
//!
//! Each placement's table ends with the latency goals, met or not; a last table puts the
//! placements' ratios side by side.

use std::fmt::Display;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use bincrew::{
    IpcReceiver, IpcSender, IpcSharedMemory, IpcValue, Reply, RequestArgs, SharedBuffer, Worker,
    WorkerBuilder,
};
use ipc_channel::ipc::IpcOneShotServer;
use ipc_channel::IpcError;
use serde::{Deserialize, Serialize};
// A `Vec<u8>` is encoded element by element; a `ByteBuf` as one slice, on both sides.
use serde_bytes::ByteBuf;

/// How many chunks [`Bench::interleave_chunks`] cuts each side's run into.
const CHUNKS: usize = 20;

/// Makes this executable a raw ipc-channel peer; the value is the one-shot server's name.
const RAW_SERVER_ENV: &str = "BINCREW_BENCH_RAW_SERVER";
/// Makes a child of the benchmark pin itself, before it starts any thread, to the CPUs listed
/// there (comma-separated numbers).
const PIN_ENV: &str = "BINCREW_BENCH_CPUS";

const ECHO: &str = "echo";
const BYTES: &str = "bytes";
const BLOB: &str = "blob";
const BUFFER: &str = "buffer";
const HASH: &str = "hash";

/// The request of the round-trip and pipelined cases, echoed back.
const MESSAGE: &str = "hello, worker";
/// The in-flight counts of the two pipelined cases.
const FEW_IN_FLIGHT: usize = 100;
const MANY_IN_FLIGHT: usize = 10_000;
/// Up to this many in flight, the raw side sends every request and then reads every answer on
/// one thread: the socket buffers hold that many short messages each way (about 1 KiB of a
/// socket's 208 KiB each). Beyond, it needs a second thread to read while the first sends.
const RAW_ONE_THREAD_MAX: usize = 100;
const SMALL_BYTES: usize = 64 << 10;
const LARGE_BYTES: usize = 1 << 20;
const BLOB_LEN: usize = 64 << 20;
/// How much each pool request hashes.
const JOB_LEN: usize = 64 << 10;
const POOL_SIZE: usize = 2;
const CLIENT_THREADS: usize = 2;

/// The `free` placement's pause before each measured run.
const SETTLE: Duration = Duration::from_millis(50);
/// How long a child is left idle before its footprint is read.
const IDLE: Duration = Duration::from_millis(100);
/// How long a raw peer has to connect.
const RAW_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    bincrew::init!();
    // First, while this is the process's only thread: every thread it starts inherits the CPUs.
    affinity::pin_from_env(PIN_ENV);
    bincrew::Workers::new()
        // A raw peer answers one request at a time on one thread; so does each bincrew worker
        // process here, so that both sides differ in the framework and not in thread counts. The
        // pool gets its parallelism from its two processes, as the raw pool does.
        .parallelism(1)
        .blocking_worker(ECHO, |args: RequestArgs<String>| args.request)
        .blocking_worker(BYTES, |args: RequestArgs<ByteBuf>| args.request)
        // The same shared memory goes back: no copy in the worker.
        .blocking_worker(BLOB, |args: RequestArgs<IpcSharedMemory>| args.request)
        .blocking_worker(BUFFER, |args: RequestArgs<SharedBuffer>| args.request)
        .blocking_worker(HASH, |args: RequestArgs<u64>| cpu_job(args.request))
        .run();
    if let Ok(server) = std::env::var(RAW_SERVER_ENV) {
        raw::serve(server);
    }

    let options = Options::parse();
    let deadline = if options.quick {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(1200)
    };
    watchdog(deadline);

    let plan = Plan::new(options.quick);
    let allowed = affinity::allowed();
    let placements = Placement::all(allowed.as_deref());
    let free = placements
        .iter()
        .find(|p| p.name == "free")
        .expect("the free placement is always there");
    // Before any case, so that the app's thread counts include the threads bincrew starts once
    // per process.
    let footprint = footprint(&Bench {
        plan: &plan,
        placement: free,
    });

    let mut results = Vec::new();
    for placement in &placements {
        if !options.placements.is_empty() && !options.placements.iter().any(|p| p == placement.name)
        {
            continue;
        }
        if let Some(reason) = &placement.skipped {
            eprintln!("overhead: placement {}: skipped, {reason}", placement.name);
            continue;
        }
        eprintln!(
            "overhead: placement {}: {}",
            placement.name,
            placement.describe()
        );
        if let Err(e) = affinity::pin_process(&placement.app) {
            panic!("placement {}: cannot pin this process: {e}", placement.name);
        }
        let bench = Bench {
            plan: &plan,
            placement,
        };
        let mut rows = Vec::new();
        let runs = |case: &str| options.runs(case);
        if runs("start") {
            watch_load(&mut rows, || vec![bench_start(&bench)]);
        }
        if runs("round_trip") {
            watch_load(&mut rows, || bench_round_trip(&bench));
        }
        if runs(&format!("pipelined_{FEW_IN_FLIGHT}")) {
            watch_load(&mut rows, || {
                bench_pipelined(&bench, FEW_IN_FLIGHT, plan.few_batches, 0.8)
            });
        }
        if runs(&format!("pipelined_{MANY_IN_FLIGHT}")) {
            watch_load(&mut rows, || {
                bench_pipelined(&bench, MANY_IN_FLIGHT, plan.many_batches, 0.5)
            });
        }
        if runs(&format!("bytes_{}k", SMALL_BYTES >> 10)) {
            watch_load(&mut rows, || {
                bench_bytes(&bench, SMALL_BYTES, plan.small_rounds, Some(1.02), false)
            });
        }
        if runs(&format!("bytes_{}k", LARGE_BYTES >> 10)) {
            watch_load(&mut rows, || {
                bench_bytes(&bench, LARGE_BYTES, plan.large_rounds, None, true)
            });
        }
        if runs("blob") || runs("shared_buffer") {
            watch_load(&mut rows, || bench_blob(&bench));
        }
        if runs("pool") {
            watch_load(&mut rows, || vec![bench_pool(&bench)]);
        }
        results.push(Measured { placement, rows });
    }

    let cores = allowed.as_ref().map_or_else(
        || thread::available_parallelism().map_or(1, |n| n.get()),
        |cpus| cpus.len(),
    );
    print_report(&footprint, &placements, &results, cores, &plan);
    if let Some(path) = &options.json {
        let json = to_json(&footprint, &placements, &results, cores, &plan);
        let text = serde_json::to_string_pretty(&json).expect("the report encodes");
        std::fs::write(path, text + "\n")
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        println!("\nJSON written to {}", path.display());
    }
}

struct Options {
    quick: bool,
    json: Option<std::path::PathBuf>,
    /// Only the cases whose names contain one of these (all when empty).
    only: Vec<String>,
    /// Only the placements named here (all when empty).
    placements: Vec<String>,
}

impl Options {
    /// Whether case `name` runs.
    fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str()))
    }
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            quick: false,
            json: None,
            only: Vec::new(),
            placements: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--json" => match args.next() {
                    Some(path) => options.json = Some(path.into()),
                    None => usage("--json needs a file name"),
                },
                "--only" => match args.next() {
                    Some(cases) => options.only.extend(cases.split(',').map(str::to_owned)),
                    None => usage("--only needs case names (start,round_trip,pipelined_100,...)"),
                },
                "--placement" => match args.next() {
                    Some(names) => options
                        .placements
                        .extend(names.split(',').map(str::to_owned)),
                    None => usage("--placement needs placement names (one-cpu,two-cpus,free)"),
                },
                // `cargo bench` passes `--bench` to every bench target.
                "--bench" => {}
                other => usage(&format!("unknown argument `{other}`")),
            }
        }
        options
    }
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "overhead: {problem}\nusage: cargo bench --bench overhead -- [--quick] [--json FILE] \
         [--only CASE,...] [--placement NAME,...]"
    );
    std::process::exit(2)
}

/// Ends the benchmark if it runs far longer than it should. The children need no help: a raw
/// peer and a bincrew worker both exit when their channel from this process closes.
fn watchdog(deadline: Duration) {
    thread::spawn(move || {
        thread::sleep(deadline);
        eprintln!("overhead: still running after {deadline:?}, giving up");
        std::process::exit(1);
    });
}

/// How many runs, and how much work per run.
struct Plan {
    quick: bool,
    runs: usize,
    starts: usize,
    round_trips: usize,
    /// Batches of [`FEW_IN_FLIGHT`] requests.
    few_batches: usize,
    /// Batches of [`MANY_IN_FLIGHT`] requests.
    many_batches: usize,
    /// Round trips of [`SMALL_BYTES`].
    small_rounds: usize,
    /// Round trips of [`LARGE_BYTES`].
    large_rounds: usize,
    blobs: usize,
    pool_requests: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                runs: 3,
                starts: 1,
                round_trips: 200,
                few_batches: 10,
                many_batches: 1,
                small_rounds: 50,
                large_rounds: 10,
                blobs: 1,
                pool_requests: 100,
            }
        } else {
            Plan {
                quick,
                runs: 7,
                starts: 30,
                round_trips: 20_000,
                few_batches: 200,
                many_batches: 5,
                small_rounds: 2_000,
                large_rounds: 200,
                blobs: 3,
                pool_requests: 4_000,
            }
        }
    }
}

/// Where the threads of the app and of its children may run.
struct Placement {
    name: &'static str,
    /// The CPUs of every thread of the app; empty when nothing is pinned (no affinity support).
    app: Vec<usize>,
    /// The CPUs of every thread of each child; empty as for `app`.
    child: Vec<usize>,
    /// A pause before each measured run.
    settle: Option<Duration>,
    /// Why this placement is not measured here.
    skipped: Option<String>,
}

impl Placement {
    /// `one-cpu`, `two-cpus` and `free`, on the CPUs this process may run on (`None`: they
    /// cannot be set here).
    fn all(allowed: Option<&[usize]>) -> Vec<Placement> {
        let pinned = |name, cpus: Option<(usize, usize)>, reason: &str| match cpus {
            Some((app, child)) => Placement {
                name,
                app: vec![app],
                child: vec![child],
                settle: None,
                skipped: None,
            },
            None => Placement {
                name,
                app: Vec::new(),
                child: Vec::new(),
                settle: None,
                skipped: Some(reason.to_owned()),
            },
        };
        let first = allowed.and_then(|cpus| cpus.first().copied());
        let second = allowed.and_then(|cpus| cpus.get(1).copied());
        let unsupported = "CPU affinity cannot be set on this platform";
        vec![
            pinned("one-cpu", first.map(|cpu| (cpu, cpu)), unsupported),
            pinned(
                "two-cpus",
                first.zip(second),
                if allowed.is_some() {
                    "this process may run on one CPU only"
                } else {
                    unsupported
                },
            ),
            Placement {
                name: "free",
                app: allowed.map(<[usize]>::to_vec).unwrap_or_default(),
                child: allowed.map(<[usize]>::to_vec).unwrap_or_default(),
                settle: Some(SETTLE),
                skipped: None,
            },
        ]
    }

    fn describe(&self) -> String {
        let cpus = |cpus: &[usize]| match cpus {
            [] => "any CPU".to_owned(),
            [cpu] => format!("CPU {cpu}"),
            _ => format!("CPUs {}", affinity::list(cpus)),
        };
        let mut text = format!(
            "the app's threads on {}, its children's on {}",
            cpus(&self.app),
            cpus(&self.child)
        );
        if let Some(settle) = self.settle {
            text += &format!(", a {settle:?} pause before each measured run");
        }
        text
    }
}

/// One placement's cases: how each starts its children and runs its sides.
struct Bench<'a> {
    plan: &'a Plan,
    placement: &'a Placement,
}

impl Bench<'_> {
    /// [`PIN_ENV`]'s value for a child, if anything is pinned.
    fn child_cpus(&self) -> Option<String> {
        (!self.placement.child.is_empty()).then(|| affinity::list(&self.placement.child))
    }

    fn peer(&self) -> raw::Peer {
        raw::Peer::start(self.child_cpus().as_deref()).unwrap_or_else(|e| panic!("raw peer: {e}"))
    }

    /// The builder with the child's CPUs in its environment.
    fn pin<I: IpcValue, O: IpcValue>(&self, builder: WorkerBuilder<I, O>) -> WorkerBuilder<I, O> {
        match self.child_cpus() {
            Some(cpus) => builder.env(PIN_ENV, cpus),
            None => builder,
        }
    }

    fn worker<I: IpcValue, O: IpcValue>(&self, name: &str) -> Worker<I, O> {
        self.start(Worker::builder(name), name)
    }

    fn start<I: IpcValue, O: IpcValue>(
        &self,
        builder: WorkerBuilder<I, O>,
        name: &str,
    ) -> Worker<I, O> {
        ok(
            self.pin(builder).start_blocking(),
            &format!("start `{name}`"),
        )
    }

    /// Runs every side once to warm up, then `runs` times, interleaved; the start rotates each
    /// run, and the placement's pause comes before each measured run. Returns each side's
    /// samples.
    fn interleave<const N: usize>(&self, sides: [&mut dyn FnMut() -> f64; N]) -> [Vec<f64>; N] {
        let mut sides = sides;
        for side in sides.iter_mut() {
            side();
        }
        let runs = self.plan.runs;
        let mut samples: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(runs));
        for run in 0..runs {
            for k in 0..N {
                let i = (run + k) % N;
                if let Some(settle) = self.placement.settle {
                    thread::sleep(settle);
                }
                samples[i].push(sides[i]());
            }
        }
        samples
    }

    /// Like [`interleave`](Self::interleave) for a side that repeats one short operation:
    /// where the placement pins every thread, each run does `total` operations per side in
    /// [`CHUNKS`] chunks, the sides taking turns chunk by chunk (the order rotated every chunk),
    /// so that a slow spell of the machine slows every side alike. In the `free` placement each
    /// side's run is one chunk after the placement's pause, as in `interleave`: there a chunk
    /// that follows another side's would start with its CPUs awake, which decides how fast a
    /// round trip goes, differently for each side. `side(k)` runs `k` operations and returns
    /// how long they took. Returns each side's time per operation, run by run.
    fn interleave_chunks<const N: usize>(
        &self,
        sides: [&mut dyn FnMut(usize) -> Duration; N],
        total: usize,
    ) -> [Vec<f64>; N] {
        let mut sides = sides;
        let chunk = match self.placement.settle {
            Some(_) => total.max(1),
            None => total.div_ceil(CHUNKS).max(1),
        };
        for side in sides.iter_mut() {
            side(chunk.min(total.div_ceil(CHUNKS).max(1)));
        }
        let runs = self.plan.runs;
        let mut samples: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(runs));
        for run in 0..runs {
            let mut took = [Duration::ZERO; N];
            let mut done = 0;
            for c in 0.. {
                if done >= total {
                    break;
                }
                let k = chunk.min(total - done);
                for j in 0..N {
                    let i = (run + c + j) % N;
                    if let Some(settle) = self.placement.settle {
                        thread::sleep(settle);
                    }
                    took[i] += sides[i](k);
                }
                done += k;
            }
            for i in 0..N {
                samples[i].push(took[i].as_secs_f64() / total as f64);
            }
        }
        samples
    }

    /// Fails unless every thread of the app and of each child runs where the placement says.
    fn check(&self, children: &[u32]) {
        let app = affinity::check(std::process::id(), &self.placement.app);
        let children = children
            .iter()
            .try_for_each(|pid| affinity::check(*pid, &self.placement.child));
        if let Err(e) = app.and(children) {
            panic!("placement {}: {e}", self.placement.name);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cases. Each returns seconds per operation for every run of every side.

/// start: from nothing to a worker that can take its first request; the child's exit is timed
/// on neither side. The raw side is the least a careful hand-written version does: a one-shot
/// server, the spawn, `accept` on a thread of its own (it has no timeout, and a child that dies
/// before connecting must not hang the app), and the child's request sender. bincrew adds its
/// handshake, the stderr pipe, and the threads it starts once per process (the first time).
///
/// A start takes about a millisecond, and this machine has slow spells of tens of
/// milliseconds: so that a spell slows both sides alike, the two sides alternate start by start
/// within each run (in turn first), instead of run by run as in the other cases.
fn bench_start(bench: &Bench) -> Row {
    let raw = || {
        let began = Instant::now();
        let peer = bench.peer();
        let took = began.elapsed();
        drop(peer);
        took
    };
    let bincrew = || {
        let threads = app_threads();
        let began = Instant::now();
        let worker: Worker<String, String> = bench.worker(ECHO);
        let took = began.elapsed();
        let pid = worker.id();
        drop(worker);
        // `Drop` kills without waiting, a reaper thread reaps, and the worker's reader thread
        // ends once it has read the end of the channel; wait for both untimed, as the raw
        // side's `Drop` waits for its child, so that one start's end does not land in the
        // next start's time.
        wait_gone(pid);
        wait_threads(threads);
        took
    };
    // Warm-up, once each.
    raw();
    bincrew();
    let starts = bench.plan.starts;
    let (mut raw_runs, mut bincrew_runs) = (Vec::new(), Vec::new());
    for run in 0..bench.plan.runs {
        if let Some(settle) = bench.placement.settle {
            thread::sleep(settle);
        }
        let (mut raw_total, mut bincrew_total) = (Duration::ZERO, Duration::ZERO);
        for i in 0..starts {
            if (run + i) % 2 == 0 {
                raw_total += raw();
                bincrew_total += bincrew();
            } else {
                bincrew_total += bincrew();
                raw_total += raw();
            }
        }
        raw_runs.push(raw_total.as_secs_f64() / starts as f64);
        bincrew_runs.push(bincrew_total.as_secs_f64() / starts as f64);
    }
    let (raw, bincrew) = (raw_runs, bincrew_runs);
    // Both kinds of children, once more, to check where their threads ran.
    let peer = bench.peer();
    echo_raw(&peer);
    let worker: Worker<String, String> = bench.worker(ECHO);
    echo(&worker);
    bench.check(&[peer.id(), worker.id()]);
    Row::time("start", "start (spawn until first request)", raw, bincrew).goal(1.2)
}

/// round trip: one short string at a time, echoed back. The raw side is `send` then `recv` on
/// the calling thread; bincrew adds a request id, a table of pending replies, and in the worker
/// the handler thread that reads it. `block_on(run)` is the same request awaited as a future
/// instead of waited on.
fn bench_round_trip(bench: &Bench) -> Vec<Row> {
    let n = bench.plan.round_trips;
    let peer = bench.peer();
    let worker: Worker<String, String> = bench.worker(ECHO);
    let mut raw = |k: usize| {
        let began = Instant::now();
        for _ in 0..k {
            echo_raw(&peer);
        }
        began.elapsed()
    };
    let mut blocking = |k: usize| {
        let began = Instant::now();
        for _ in 0..k {
            echo(&worker);
        }
        began.elapsed()
    };
    let mut future = |k: usize| {
        let began = Instant::now();
        for _ in 0..k {
            let answer = ok(
                futures::executor::block_on(worker.run(MESSAGE.to_owned())),
                "`echo`",
            );
            assert_eq!(answer, MESSAGE, "`echo` answered something else");
        }
        began.elapsed()
    };
    let [raw, blocking, future] =
        bench.interleave_chunks([&mut raw, &mut blocking, &mut future], n);
    bench.check(&[peer.id(), worker.id()]);
    vec![
        Row::time(
            "round_trip_blocking",
            "round trip, run_blocking",
            raw.clone(),
            blocking,
        )
        .goal(1.2),
        Row::time(
            "round_trip_future",
            "round trip, block_on(run)",
            raw,
            future,
        )
        .goal(1.5),
    ]
}

/// pipelined: `in_flight` short strings sent at once, then every answer awaited, over and over;
/// time per request. Up to [`RAW_ONE_THREAD_MAX`] in flight, the raw side sends them all and
/// then reads the answers, which arrive in order, on the calling thread; beyond, it sends them
/// all from the calling thread while a thread started for the batch reads the answers. bincrew
/// sends them all with `run` and then waits on each reply in turn; its second row is a worker
/// with `max_batch(1)`, whose every request goes to the worker in a message of its own (the
/// worker still batches its answers: that has no setting), to show what batching buys.
fn bench_pipelined(bench: &Bench, in_flight: usize, batches: usize, goal: f64) -> Vec<Row> {
    let requests = batches * in_flight;
    let mut peer = bench.peer();
    let batched: Worker<String, String> = bench.worker(ECHO);
    let unbatched: Worker<String, String> = bench.start(Worker::builder(ECHO).max_batch(1), ECHO);
    let peer_id = peer.id();
    let mut raw = || {
        let began = Instant::now();
        for _ in 0..batches {
            let (requests, replies) = peer.split();
            if in_flight <= RAW_ONE_THREAD_MAX {
                for _ in 0..in_flight {
                    raw::send(requests, raw::Request::Echo(MESSAGE.to_owned()));
                }
                for _ in 0..in_flight {
                    raw::check_echo(raw::recv(replies));
                }
                continue;
            }
            thread::scope(|scope| {
                scope.spawn(move || {
                    for _ in 0..in_flight {
                        raw::check_echo(raw::recv(replies));
                    }
                });
                for _ in 0..in_flight {
                    raw::send(requests, raw::Request::Echo(MESSAGE.to_owned()));
                }
            });
        }
        began.elapsed().as_secs_f64() / requests as f64
    };
    let pipeline = |worker: &Worker<String, String>| {
        let began = Instant::now();
        for _ in 0..batches {
            let replies: Vec<Reply<String>> = (0..in_flight)
                .map(|_| worker.run(MESSAGE.to_owned()))
                .collect();
            for reply in replies {
                let answer = ok(reply.wait(), "`echo`");
                assert_eq!(answer, MESSAGE, "`echo` answered something else");
            }
        }
        began.elapsed().as_secs_f64() / requests as f64
    };
    let mut bincrew = || pipeline(&batched);
    let mut one_per_message = || pipeline(&unbatched);
    let [raw, bincrew, one_per_message] =
        bench.interleave([&mut raw, &mut bincrew, &mut one_per_message]);
    bench.check(&[peer_id, batched.id(), unbatched.id()]);
    let label = format!(
        "pipelined, {} in flight (per request)",
        thousands(in_flight)
    );
    vec![
        Row::time(
            &format!("pipelined_{in_flight}"),
            &label,
            raw.clone(),
            bincrew,
        )
        .goal(goal),
        Row::time(
            &format!("pipelined_{in_flight}_max_batch_1"),
            &format!("{label}, max_batch(1)"),
            raw,
            one_per_message,
        ),
    ]
}

/// bytes: `len` bytes to the worker and back, one request at a time, as a `ByteBuf` on both
/// sides (one slice in the encoding, not a sequence of numbers); the buffer that comes back is
/// sent again, so no side copies it in between. The raw side is `send` then `recv`, each
/// message carried by ipc-channel as it does any message of that size (in fragments over the
/// socket past one socket buffer); bincrew's frame goes inline when it is small, and from
/// 16 KiB into the shared memory each side keeps for large frames. With `memcpy_reference`, a
/// second row has the same bincrew times over the least a round trip of a serde value copies:
/// four `memcpy`s of the bytes (encode and decode on each side) into a buffer already touched.
fn bench_bytes(
    bench: &Bench,
    len: usize,
    rounds: usize,
    goal: Option<f64>,
    memcpy_reference: bool,
) -> Vec<Row> {
    let data = pattern(len);
    let peer = bench.peer();
    let worker: Worker<ByteBuf, ByteBuf> = bench.worker(BYTES);
    let mut target = data.clone();
    let mut reference = || {
        let began = Instant::now();
        for _ in 0..rounds {
            for _ in 0..4 {
                target.copy_from_slice(&data);
                std::hint::black_box(&mut target);
            }
        }
        began.elapsed().as_secs_f64() / rounds as f64
    };
    let mut raw_buffer = Some(ByteBuf::from(data.clone()));
    let mut raw = || {
        let mut bytes = raw_buffer.take().expect("the raw side's buffer comes back");
        let began = Instant::now();
        for _ in 0..rounds {
            bytes = match peer.call(raw::Request::Bytes(bytes)) {
                raw::Reply::Bytes(bytes) => bytes,
                other => panic!("raw peer: unexpected answer to bytes: {}", other.kind()),
            };
        }
        let elapsed = began.elapsed();
        check_blob(&bytes, &data, "raw peer");
        raw_buffer = Some(bytes);
        elapsed.as_secs_f64() / rounds as f64
    };
    let mut bincrew_buffer = Some(ByteBuf::from(data.clone()));
    let mut bincrew = || {
        let mut bytes = bincrew_buffer.take().expect("bincrew's buffer comes back");
        let began = Instant::now();
        for _ in 0..rounds {
            bytes = ok(worker.run_blocking(bytes), "`bytes`");
        }
        let elapsed = began.elapsed();
        check_blob(&bytes, &data, "`bytes`");
        bincrew_buffer = Some(bytes);
        elapsed.as_secs_f64() / rounds as f64
    };
    let [raw, bincrew, reference] = if memcpy_reference {
        bench.interleave([&mut raw, &mut bincrew, &mut reference])
    } else {
        let [raw, bincrew] = bench.interleave([&mut raw, &mut bincrew]);
        [raw, bincrew, Vec::new()]
    };
    bench.check(&[peer.id(), worker.id()]);
    let size = if len >= 1 << 20 {
        format!("{} MiB", len >> 20)
    } else {
        format!("{} KiB", len >> 10)
    };
    let row = Row::time(
        &format!("bytes_{}k", len >> 10),
        &format!("bytes {size} there and back"),
        raw.clone(),
        bincrew.clone(),
    );
    let mut rows = vec![match goal {
        Some(goal) => row.goal(goal),
        None => row,
    }];
    if memcpy_reference {
        let mut over = Row::time(
            &format!("bytes_{}k_memcpy", len >> 10),
            &format!("bytes {size}, over four memcpys"),
            raw,
            bincrew,
        );
        over.reference = Some(Stat::new(reference));
        over.reference_is = "four memcpys of the bytes";
        rows.push(over);
    }
    rows
}

/// blob: 64 MiB to the worker and back, with the best public means there is today: the bytes
/// are copied into an `IpcSharedMemory`, which travels as a file descriptor; the worker sends
/// the same shared memory back. Timed: building the shared memory, the request and the response
/// (on both sides; the raw side is the same `IpcSharedMemory` through `send` and `recv`). The
/// reference is what copying the blob in and out of a process costs at least: two `memcpy`s of
/// 64 MiB into a buffer already allocated and touched. The `SharedBuffer` row has the same raw
/// side and reference.
fn bench_blob(bench: &Bench) -> Vec<Row> {
    let blobs = bench.plan.blobs;
    let data = pattern(BLOB_LEN);
    let mut target = vec![1u8; BLOB_LEN];
    let peer = bench.peer();
    let worker: Worker<IpcSharedMemory, IpcSharedMemory> = bench.worker(BLOB);
    let mut reference = || {
        let began = Instant::now();
        for _ in 0..blobs {
            target.copy_from_slice(&data);
            std::hint::black_box(&mut target);
            target.copy_from_slice(&data);
            std::hint::black_box(&mut target);
        }
        began.elapsed().as_secs_f64() / blobs as f64
    };
    let mut raw = || {
        let mut total = Duration::ZERO;
        for _ in 0..blobs {
            let began = Instant::now();
            let blob = IpcSharedMemory::from_bytes(&data);
            let back = match peer.call(raw::Request::Blob(blob)) {
                raw::Reply::Blob(back) => back,
                other => panic!("raw peer: unexpected answer to a blob: {}", other.kind()),
            };
            total += began.elapsed();
            check_blob(&back, &data, "raw peer");
        }
        total.as_secs_f64() / blobs as f64
    };
    let mut bincrew = || {
        let mut total = Duration::ZERO;
        for _ in 0..blobs {
            let began = Instant::now();
            let blob = IpcSharedMemory::from_bytes(&data);
            let back = ok(worker.run_blocking(blob), "`blob`");
            total += began.elapsed();
            check_blob(&back, &data, "`blob`");
        }
        total.as_secs_f64() / blobs as f64
    };
    // The app writes its data straight into a shared buffer it keeps reusing: the buffer moves
    // to the worker and back without a copy, so the only pass over the data is the app's own
    // write (here a copy from `data`, standing for the app producing it in place).
    let buffer_worker: Worker<SharedBuffer, SharedBuffer> = bench.worker(BUFFER);
    let mut buffer = Some(SharedBuffer::zeroed(BLOB_LEN));
    let mut in_place = || {
        let mut total = Duration::ZERO;
        for _ in 0..blobs {
            let Some(mut outgoing) = buffer.take() else {
                panic!("`buffer`: the shared buffer was lost")
            };
            let began = Instant::now();
            outgoing.copy_from_slice(&data);
            let back = ok(buffer_worker.run_blocking(outgoing), "`buffer`");
            total += began.elapsed();
            check_blob(&back, &data, "`buffer`");
            buffer = Some(back);
        }
        total.as_secs_f64() / blobs as f64
    };
    let [reference, raw, bincrew, in_place] =
        bench.interleave([&mut reference, &mut raw, &mut bincrew, &mut in_place]);
    bench.check(&[peer.id(), worker.id(), buffer_worker.id()]);
    let mut row = Row::time(
        "blob_64m",
        "blob 64 MiB there and back",
        raw.clone(),
        bincrew,
    );
    row.reference = Some(Stat::new(reference.clone()));
    row.reference_is = "two memcpys of the blob";
    let mut buffer_row = Row::time(
        "shared_buffer_64m",
        "blob 64 MiB, SharedBuffer written in place",
        raw,
        in_place,
    )
    .goal(1.05);
    buffer_row.reference = Some(Stat::new(reference));
    buffer_row.reference_is = "two memcpys of the blob";
    vec![row, buffer_row]
}

/// Length and a few sampled bytes: enough to catch a wrong or truncated blob.
fn check_blob(back: &[u8], sent: &[u8], who: &str) {
    assert_eq!(
        back.len(),
        sent.len(),
        "{who}: the blob came back with another length"
    );
    for i in (0..sent.len())
        .step_by((sent.len() / 61).max(1))
        .chain([sent.len() - 1])
    {
        assert_eq!(
            back[i], sent[i],
            "{who}: the blob came back changed at byte {i}"
        );
    }
}

/// `len` bytes that are not all alike.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8) ^ ((i >> 11) as u8)).collect()
}

/// pool: throughput of two worker processes on this machine, fed by two client threads, each
/// request a fixed CPU job (hashing 64 KiB) in the worker. The raw pool is two raw peers used
/// round-robin, each behind a mutex since a bare loop carries no request ids; bincrew's is a
/// `WorkerPool` of two, which sends each request to the less loaded worker. Both workers share
/// the placement's child CPUs: in `two-cpus` the app's threads run on one CPU, both workers on
/// the other; in `one-cpu` everything shares one CPU.
fn bench_pool(bench: &Bench) -> Row {
    let total = bench.plan.pool_requests;
    // The answers are checked against jobs computed here, once.
    let seeds: Vec<u64> = (0..16).collect();
    let expected: Vec<u64> = seeds.iter().map(|s| cpu_job(*s)).collect();

    let peers: Vec<Mutex<raw::Peer>> = (0..POOL_SIZE).map(|_| Mutex::new(bench.peer())).collect();
    let pool = ok(
        bincrew::WorkerPool::<u64, u64>::builder(HASH)
            .size(POOL_SIZE)
            .configure(|builder| bench.pin(builder))
            .start_blocking(),
        "start the `hash` pool",
    );

    let mut raw = || {
        let next = AtomicUsize::new(0);
        clients(total, &seeds, &expected, |seed| {
            let i = next.fetch_add(1, Ordering::Relaxed) % peers.len();
            let peer = peers[i].lock().unwrap_or_else(|e| e.into_inner());
            match peer.call(raw::Request::Hash(seed)) {
                raw::Reply::Hash(h) => h,
                other => panic!("raw peer: unexpected answer to a job: {}", other.kind()),
            }
        })
    };
    let mut bincrew = || {
        clients(total, &seeds, &expected, |seed| {
            ok(pool.run(seed).wait(), "`hash`")
        })
    };
    // The ceiling: the same jobs run by the client threads themselves, no IPC at all.
    let mut in_process = || clients(total, &seeds, &expected, cpu_job);
    let [raw, bincrew, in_process] = bench.interleave([&mut raw, &mut bincrew, &mut in_process]);
    let mut children: Vec<u32> = peers
        .iter()
        .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).id())
        .collect();
    children.extend(pool.pids());
    bench.check(&children);
    let mut row = Row::time(
        "pool",
        &format!("pool of {POOL_SIZE}, 64 KiB hash each"),
        raw,
        bincrew,
    );
    row.throughput = true;
    row.in_process = Some(Stat::new(in_process));
    row
}

/// Runs `total` jobs from [`CLIENT_THREADS`] threads, each job through `run`; seconds per job.
fn clients(total: usize, seeds: &[u64], expected: &[u64], run: impl Fn(u64) -> u64 + Sync) -> f64 {
    let per_thread = total / CLIENT_THREADS;
    let began = Instant::now();
    thread::scope(|scope| {
        for t in 0..CLIENT_THREADS {
            let run = &run;
            scope.spawn(move || {
                for k in 0..per_thread {
                    let i = (t + k * CLIENT_THREADS) % seeds.len();
                    assert_eq!(run(seeds[i]), expected[i], "a job came back wrong");
                }
            });
        }
    });
    began.elapsed().as_secs_f64() / (per_thread * CLIENT_THREADS) as f64
}

/// A fixed CPU job: FNV-1a over 64 KiB, starting from `seed`. Byte by byte, so nothing
/// vectorises it away.
fn cpu_job(seed: u64) -> u64 {
    static DATA: OnceLock<Vec<u8>> = OnceLock::new();
    let data = DATA.get_or_init(|| (0..JOB_LEN).map(|i| (i * 7 + (i >> 8)) as u8).collect());
    let mut hash = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in std::hint::black_box(data.as_slice()) {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn echo(worker: &Worker<String, String>) {
    let answer = ok(worker.run_blocking(MESSAGE.to_owned()), "`echo`");
    assert_eq!(answer, MESSAGE, "`echo` answered something else");
}

fn echo_raw(peer: &raw::Peer) {
    raw::check_echo(peer.call(raw::Request::Echo(MESSAGE.to_owned())));
}

/// Waits until process `pid` is gone (reaped).
fn wait_gone(pid: u32) {
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        thread::sleep(Duration::from_micros(100));
    }
}

/// The number of threads of this process, where it can be read.
fn app_threads() -> Option<u64> {
    Usage::own().map(|u| u.threads)
}

/// Waits until this process has no more than `threads` threads again, for at most a second.
fn wait_threads(threads: Option<u64>) {
    let Some(threads) = threads else { return };
    let deadline = Instant::now() + Duration::from_secs(1);
    while app_threads().is_some_and(|now| now > threads) && Instant::now() < deadline {
        thread::sleep(Duration::from_micros(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Footprint.

/// A process's resident memory and thread count, from `/proc/<pid>/status` (Linux).
#[derive(Clone, Copy)]
struct Usage {
    rss_kib: u64,
    threads: u64,
}

impl Usage {
    fn of(pid: u32) -> Option<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line[name.len()..].split_whitespace().next()?.parse().ok()
        };
        Some(Usage {
            rss_kib: field("VmRSS:")?,
            threads: field("Threads:")?,
        })
    }

    fn own() -> Option<Usage> {
        Usage::of(std::process::id())
    }
}

/// The names of process `pid`'s threads, sorted, with a count for each name that repeats.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|entry| {
                let comm = entry.ok()?.path().join("comm");
                Some(std::fs::read_to_string(comm).ok()?.trim().to_owned())
            })
            .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut counted: Vec<(String, usize)> = Vec::new();
    for name in names {
        match counted.last_mut() {
            Some((last, n)) if *last == name => *n += 1,
            _ => counted.push((name, 1)),
        }
    }
    counted
        .into_iter()
        .map(|(name, n)| if n > 1 { format!("{name} ×{n}") } else { name })
        .collect()
}

/// What one kind of child costs at idle.
struct Footprint {
    /// The app before the child started.
    before: Option<Usage>,
    /// The app and the child, started and left idle for [`IDLE`].
    started: [Option<Usage>; 2],
    /// The same after one echo, and [`IDLE`] again.
    answered: [Option<Usage>; 2],
    /// The names of the app's threads and of the child's, then.
    names: [Vec<String>; 2],
}

/// A raw peer's footprint and a bincrew worker's, in that order.
fn footprint(bench: &Bench) -> [Footprint; 2] {
    let raw = idle_footprint(|| bench.peer(), raw::Peer::id, echo_raw);
    let bincrew = idle_footprint(|| bench.worker(ECHO), Worker::id, echo);
    [raw, bincrew]
}

/// The footprint of a child that `start` starts and `request` sends one request to. A first
/// child is started, used and ended before, so that what the app allocates or starts once per
/// process (bincrew's threads for every worker, ipc-channel's first allocations) is not counted
/// in the change, only in the app's total.
fn idle_footprint<C>(
    start: impl Fn() -> C,
    pid: impl Fn(&C) -> u32,
    request: impl Fn(&C),
) -> Footprint {
    let first = start();
    request(&first);
    let first_pid = pid(&first);
    drop(first);
    wait_gone(first_pid);
    thread::sleep(IDLE);
    let before = Usage::own();
    let child = start();
    let id = pid(&child);
    thread::sleep(IDLE);
    let started = [Usage::own(), Usage::of(id)];
    request(&child);
    thread::sleep(IDLE);
    let answered = [Usage::own(), Usage::of(id)];
    let names = [thread_names(std::process::id()), thread_names(id)];
    drop(child);
    wait_gone(id);
    Footprint {
        before,
        started,
        answered,
        names,
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/// Runs one case and records how busy the rest of the machine was meanwhile.
fn watch_load(rows: &mut Vec<Row>, case: impl FnOnce() -> Vec<Row>) {
    let clock = CpuClock::now();
    let mut new = case();
    let others = clock.and_then(|c| c.others_since());
    for row in &mut new {
        row.other_load = others;
    }
    rows.extend(new);
}

/// CPU time counters from `/proc` (Linux), in clock ticks: the whole machine's, and this
/// process's own with its reaped children (every child is reaped before a case returns).
struct CpuClock {
    total: u64,
    busy: u64,
    own: u64,
}

impl CpuClock {
    fn now() -> Option<CpuClock> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // user nice system idle iowait irq softirq steal: steal is time the hypervisor gave
        // to someone else, noise as much as another process.
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        if cpu.len() < 8 {
            return None;
        }
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // After the command name: utime, stime, cutime and cstime are the 12th to 15th fields.
        let own: u64 = own[own.rfind(')')? + 1..]
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|n| n.parse::<u64>().ok())
            .sum::<Option<u64>>()?;
        Some(CpuClock {
            total: cpu.iter().sum(),
            busy: cpu.iter().sum::<u64>() - cpu[3] - cpu[4],
            own,
        })
    }

    /// The share of all cores that other processes used since `self`.
    fn others_since(&self) -> Option<f64> {
        let now = CpuClock::now()?;
        let total = now.total.checked_sub(self.total).filter(|t| *t > 0)?;
        let busy = now.busy.saturating_sub(self.busy);
        let others = busy.saturating_sub(now.own.saturating_sub(self.own));
        Some(others as f64 / total as f64)
    }
}

/// The samples of one side, in seconds per operation.
#[derive(Clone)]
struct Stat {
    samples: Vec<f64>,
    median: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn new(samples: Vec<f64>) -> Stat {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = (sorted[(n - 1) / 2] + sorted[n / 2]) / 2.0;
        Stat {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            samples,
        }
    }

    /// Half the range of the runs, relative to the median.
    fn spread(&self) -> f64 {
        (self.max - self.min) / 2.0 / self.median
    }
}

/// One line of a placement's table.
struct Row {
    /// A name that stays the same across runs, for the JSON and the cross-placement table.
    key: String,
    case: String,
    raw: Stat,
    bincrew: Stat,
    /// A reference its ratios are to (a number of `memcpy`s of the data), and what it is.
    reference: Option<Stat>,
    reference_is: &'static str,
    /// Shown as requests per second.
    throughput: bool,
    /// The pool's jobs run by its client threads, without workers.
    in_process: Option<Stat>,
    /// The share of the machine other processes used during the case.
    other_load: Option<f64>,
    /// The most [`ratio`](Self::ratio) may be, from the latency issue.
    goal: Option<f64>,
}

impl Row {
    fn time(key: &str, case: &str, raw: Vec<f64>, bincrew: Vec<f64>) -> Row {
        Row {
            key: key.to_owned(),
            case: case.to_owned(),
            raw: Stat::new(raw),
            bincrew: Stat::new(bincrew),
            reference: None,
            reference_is: "",
            throughput: false,
            in_process: None,
            other_load: None,
            goal: None,
        }
    }

    fn goal(mut self, goal: f64) -> Row {
        self.goal = Some(goal);
        self
    }

    /// bincrew's time over the raw time, or over the reference when there is one.
    fn ratio(&self) -> f64 {
        self.bincrew.median / self.reference.as_ref().unwrap_or(&self.raw).median
    }

    fn met(&self) -> Option<bool> {
        self.goal.map(|goal| self.ratio() <= goal)
    }

    /// The ratio, marked as being to the reference when it is.
    fn ratio_text(&self) -> String {
        let mut text = format!("{:.3}", self.ratio());
        if self.reference.is_some() {
            text += "× ref";
        }
        text
    }

    fn goal_text(&self) -> String {
        match (self.goal, self.met()) {
            (Some(goal), Some(met)) => format!(
                "≤ {goal:.2}{} {}",
                if self.reference.is_some() {
                    "× ref"
                } else {
                    ""
                },
                if met { "met" } else { "NOT MET" }
            ),
            _ => String::new(),
        }
    }
}

/// One placement's rows.
struct Measured<'a> {
    placement: &'a Placement,
    rows: Vec<Row>,
}

/// Panics with the error's own message (which for bincrew carries the crash report).
#[track_caller]
fn ok<T, E: Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The report.

fn duration(seconds: f64) -> String {
    let (value, unit) = if seconds >= 1.0 {
        (seconds, "s")
    } else if seconds >= 1e-3 {
        (seconds * 1e3, "ms")
    } else if seconds >= 1e-6 {
        (seconds * 1e6, "µs")
    } else {
        (seconds * 1e9, "ns")
    };
    format!("{value:.3} {unit}")
}

/// 10000 as "10,000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

fn cell(row: &Row, stat: &Stat) -> String {
    let value = if row.throughput {
        format!("{:.0} req/s", 1.0 / stat.median)
    } else {
        duration(stat.median)
    };
    format!("{value} ±{:.0}%", stat.spread() * 100.0)
}

/// Prints `lines` in columns, the first left-aligned, the others right-aligned.
fn print_columns(lines: &[Vec<String>]) {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l.get(c).map_or(0, |f| f.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in lines {
        let mut text = String::new();
        for (c, field) in line.iter().enumerate() {
            let pad = " ".repeat(widths[c] - field.chars().count());
            if c == 0 {
                text += &format!("{field}{pad}");
            } else {
                text += &format!("  {pad}{field}");
            }
        }
        println!("{}", text.trim_end());
    }
}

fn print_report(
    footprint: &[Footprint; 2],
    placements: &[Placement],
    results: &[Measured],
    cores: usize,
    plan: &Plan,
) {
    println!(
        "\nbincrew {} over a bare ipc-channel loop: CPUs available: {cores}; median of {} runs{}",
        env!("CARGO_PKG_VERSION"),
        plan.runs,
        if plan.quick { " (--quick)" } else { "" }
    );
    println!(
        "(± is half the spread between the fastest and the slowest run; other load is the share \
         of all cores that other processes used meanwhile; ratio: bincrew's time over the raw \
         time, lower is better, for the pool raw req/s over bincrew req/s, for the blob rows \
         bincrew's time over the reference's)"
    );
    print_footprint(footprint);
    for placement in placements {
        match (
            &placement.skipped,
            results.iter().find(|m| m.placement.name == placement.name),
        ) {
            (Some(reason), _) => println!("\nplacement {}: skipped, {reason}", placement.name),
            (None, Some(measured)) => print_placement(measured),
            (None, None) => {}
        }
    }
    print_side_by_side(results);
}

/// A footprint table's row: its name, and its value for one side.
type Measure<'a> = (&'a str, &'a dyn Fn(&Footprint) -> String);

fn print_footprint(footprint: &[Footprint; 2]) {
    println!(
        "\nfootprint at idle, before any case (free placement; VmRSS and Threads from /proc; in \
         brackets, the app's change since just before it started the child; a first child of \
         the same kind was started and ended before, so what the app starts or allocates once \
         per process is in its total only)\n"
    );
    let threads = |u: Option<Usage>| u.map_or_else(|| "?".to_owned(), |u| u.threads.to_string());
    let rss = |u: Option<Usage>| u.map_or_else(|| "?".to_owned(), |u| mib(u.rss_kib));
    let mut lines = vec![vec![
        String::new(),
        "raw peer".to_owned(),
        "bincrew worker".to_owned(),
    ]];
    for (state, answered) in [("started", false), ("after one request", true)] {
        let at = |f: &Footprint| if answered { f.answered } else { f.started };
        let app_threads = |f: &Footprint| match (at(f)[0], f.before) {
            (Some(now), Some(before)) => format!(
                "{} ({:+})",
                now.threads,
                now.threads as i64 - before.threads as i64
            ),
            (now, _) => threads(now),
        };
        let app_rss = |f: &Footprint| match (at(f)[0], f.before) {
            (Some(now), Some(before)) => format!(
                "{} ({:+} KiB)",
                mib(now.rss_kib),
                now.rss_kib as i64 - before.rss_kib as i64
            ),
            (now, _) => rss(now),
        };
        let child_threads = |f: &Footprint| threads(at(f)[1]);
        let child_rss = |f: &Footprint| rss(at(f)[1]);
        let measures: [Measure; 4] = [
            ("app threads", &app_threads),
            ("app VmRSS", &app_rss),
            ("child threads", &child_threads),
            ("child VmRSS", &child_rss),
        ];
        for (what, value) in measures {
            let mut line = vec![format!("{state}: {what}")];
            line.extend(footprint.iter().map(value));
            lines.push(line);
        }
    }
    print_columns(&lines);
    for (f, (app, child)) in footprint.iter().zip([
        ("the app", "the raw peer"),
        ("the app", "the bincrew worker"),
    ]) {
        println!(
            "threads after one request: {app}: {}; {child}: {}",
            f.names[0].join(", "),
            f.names[1].join(", ")
        );
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn print_placement(measured: &Measured) {
    let placement = measured.placement;
    println!("\nplacement {}: {}\n", placement.name, placement.describe());
    let mut lines = vec![vec![
        "case".to_owned(),
        "raw ipc-channel".to_owned(),
        "bincrew".to_owned(),
        "bincrew/raw".to_owned(),
        "goal".to_owned(),
        "other load".to_owned(),
    ]];
    for row in &measured.rows {
        let mut raw = cell(row, &row.raw);
        if let Some(reference) = &row.reference {
            raw += &format!(" ({:.3}× ref)", row.raw.median / reference.median);
        }
        let load = row
            .other_load
            .map_or_else(|| "?".to_owned(), |l| format!("{:.0}%", l * 100.0));
        lines.push(vec![
            row.case.clone(),
            raw,
            cell(row, &row.bincrew),
            row.ratio_text(),
            row.goal_text(),
            load,
        ]);
    }
    print_columns(&lines);
    println!();
    let mut reference_shown = None;
    for row in &measured.rows {
        if let Some(reference) = row
            .reference
            .as_ref()
            .filter(|r| reference_shown != Some(r.median))
        {
            reference_shown = Some(reference.median);
            println!(
                "{}: the reference, {}, takes {} ±{:.0}%; the ratios marked `ref` are to it",
                row.case,
                row.reference_is,
                duration(reference.median),
                reference.spread() * 100.0
            );
        }
        if let Some(ceiling) = &row.in_process {
            println!(
                "{}: the client threads running the jobs themselves do {:.0} req/s ±{:.0}% \
                 (the ceiling: each job takes {} on its thread)",
                row.case,
                1.0 / ceiling.median,
                ceiling.spread() * 100.0,
                duration(ceiling.median * CLIENT_THREADS as f64)
            );
        }
    }
    let goals: Vec<&Row> = measured.rows.iter().filter(|r| r.goal.is_some()).collect();
    let met = goals.iter().filter(|r| r.met() == Some(true)).count();
    let missed: Vec<String> = goals
        .iter()
        .filter(|r| r.met() == Some(false))
        .map(|r| {
            format!(
                "{} {} > {:.2}",
                r.case,
                r.ratio_text(),
                r.goal.unwrap_or_default()
            )
        })
        .collect();
    if missed.is_empty() {
        println!("goals, {}: all {} met", placement.name, goals.len());
    } else {
        println!(
            "goals, {}: {met} of {} met; not met: {}",
            placement.name,
            goals.len(),
            missed.join("; ")
        );
    }
}

/// Every placement's ratio for each case, in one table.
fn print_side_by_side(results: &[Measured]) {
    let Some(first) = results.first() else {
        return;
    };
    println!("\nbincrew/raw by placement\n");
    let mut header = vec!["case".to_owned()];
    header.extend(results.iter().map(|m| m.placement.name.to_owned()));
    header.push("goal".to_owned());
    let mut lines = vec![header];
    for row in &first.rows {
        let mut line = vec![row.case.clone()];
        for measured in results {
            let cell = measured.rows.iter().find(|r| r.key == row.key).map_or_else(
                String::new,
                |r| match r.met() {
                    Some(false) => format!("{} (not met)", r.ratio_text()),
                    _ => r.ratio_text(),
                },
            );
            line.push(cell);
        }
        let unit = if row.reference.is_some() {
            "× ref"
        } else {
            ""
        };
        line.push(
            row.goal
                .map_or_else(String::new, |g| format!("≤ {g:.2}{unit}")),
        );
        lines.push(line);
    }
    print_columns(&lines);
}

fn to_json(
    footprint: &[Footprint; 2],
    placements: &[Placement],
    results: &[Measured],
    cores: usize,
    plan: &Plan,
) -> serde_json::Value {
    let stat = |s: &Stat| {
        serde_json::json!({
            "median": s.median,
            "min": s.min,
            "max": s.max,
            "samples": s.samples,
        })
    };
    let mut cases = Vec::new();
    for measured in results {
        for row in &measured.rows {
            let mut case = serde_json::json!({
                "placement": measured.placement.name,
                "key": row.key,
                "case": row.case,
                "unit": if row.throughput { "seconds per request (1 / throughput)" } else { "seconds per operation" },
                "raw": stat(&row.raw),
                "bincrew": stat(&row.bincrew),
                "ratio": row.ratio(),
                "ratio_of": if row.reference.is_some() { "bincrew / reference" } else { "bincrew / raw" },
                "goal": row.goal,
                "goal_met": row.met(),
                "other_load": row.other_load,
            });
            if let Some(reference) = &row.reference {
                case["reference"] = stat(reference);
                case["reference_is"] = row.reference_is.into();
                case["raw_ratio"] = (row.raw.median / reference.median).into();
            }
            if row.throughput {
                case["raw_requests_per_second"] = (1.0 / row.raw.median).into();
                case["bincrew_requests_per_second"] = (1.0 / row.bincrew.median).into();
            }
            if let Some(ceiling) = &row.in_process {
                case["in_process"] = stat(ceiling);
                case["in_process_requests_per_second"] = (1.0 / ceiling.median).into();
            }
            cases.push(case);
        }
    }
    let placements: Vec<_> = placements
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "app_cpus": p.app,
                "child_cpus": p.child,
                "settle_seconds": p.settle.map(|s| s.as_secs_f64()),
                "skipped": p.skipped,
            })
        })
        .collect();
    let usage = |u: Option<Usage>| {
        u.map(|u| serde_json::json!({ "rss_kib": u.rss_kib, "threads": u.threads }))
    };
    let side = |f: &Footprint| {
        serde_json::json!({
            "app_before": usage(f.before),
            "started": { "app": usage(f.started[0]), "child": usage(f.started[1]) },
            "after_one_request": { "app": usage(f.answered[0]), "child": usage(f.answered[1]) },
            "thread_names_after_one_request": { "app": f.names[0], "child": f.names[1] },
        })
    };
    serde_json::json!({
        "bincrew_version": env!("CARGO_PKG_VERSION"),
        "cores": cores,
        "quick": plan.quick,
        "runs": plan.runs,
        "placements": placements,
        "footprint": { "raw": side(&footprint[0]), "bincrew": side(&footprint[1]) },
        "cases": cases,
    })
}

// ---------------------------------------------------------------------------------------------

/// The baseline: a bare request/response loop over ipc-channel between this process and a copy
/// of itself, with nothing a framework adds (no handshake, ids, queues or extra threads).
mod raw {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) enum Request {
        Echo(String),
        Bytes(ByteBuf),
        Blob(IpcSharedMemory),
        Hash(u64),
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) enum Reply {
        /// The child's first message: where to send requests.
        Ready(IpcSender<Request>),
        Echo(String),
        Bytes(ByteBuf),
        Blob(IpcSharedMemory),
        Hash(u64),
    }

    impl Reply {
        /// What kind of answer this is, for messages (a payload's bytes are no use there).
        pub(crate) fn kind(&self) -> String {
            match self {
                Reply::Ready(_) => "Ready".to_owned(),
                Reply::Echo(s) => format!("Echo({s:?})"),
                Reply::Bytes(b) => format!("Bytes({} bytes)", b.len()),
                Reply::Blob(b) => format!("Blob({} bytes)", b.len()),
                Reply::Hash(h) => format!("Hash({h})"),
            }
        }
    }

    /// The child's side. Never returns: it exits when the parent closes the request channel.
    pub(crate) fn serve(server: String) -> ! {
        let fail = |what: &str, e: &dyn Display| -> ! {
            eprintln!("raw peer: {what}: {e}");
            std::process::exit(3)
        };
        let replies = IpcSender::<Reply>::connect(server)
            .unwrap_or_else(|e| fail("cannot connect to the benchmark", &e));
        let (requests, request_rx) = bincrew::channel::<Request>()
            .unwrap_or_else(|e| fail("cannot make the request channel", &e));
        // The sender moves into the message: the parent holds the only copy, so this loop sees
        // the channel close when the parent drops it or dies.
        if let Err(e) = replies.send(Reply::Ready(requests)) {
            fail("cannot send the request sender", &e);
        }
        loop {
            let reply = match request_rx.recv() {
                Ok(Request::Echo(s)) => Reply::Echo(s),
                Ok(Request::Bytes(b)) => Reply::Bytes(b),
                Ok(Request::Blob(blob)) => Reply::Blob(blob),
                Ok(Request::Hash(seed)) => Reply::Hash(cpu_job(seed)),
                Err(IpcError::Disconnected) => std::process::exit(0),
                Err(e) => fail("cannot read a request", &e),
            };
            if replies.send(reply).is_err() {
                // The parent is gone.
                std::process::exit(0);
            }
        }
    }

    /// A raw peer process, killed and reaped on drop.
    pub(crate) struct Peer {
        child: Child,
        requests: IpcSender<Request>,
        replies: IpcReceiver<Reply>,
    }

    impl Peer {
        /// Spawns a peer, pinned to `cpus` (a [`PIN_ENV`] value) if given, and waits until it
        /// can take requests.
        pub(crate) fn start(cpus: Option<&str>) -> Result<Peer, String> {
            let (server, name) = IpcOneShotServer::<Reply>::new()
                .map_err(|e| format!("cannot make a one-shot server: {e}"))?;
            let exe = std::env::current_exe()
                .map_err(|e| format!("cannot find the benchmark's executable: {e}"))?;
            let mut command = Command::new(exe);
            command
                .env(RAW_SERVER_ENV, &name)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            if let Some(cpus) = cpus {
                command.env(PIN_ENV, cpus);
            }
            let mut child = command.spawn().map_err(|e| format!("cannot spawn: {e}"))?;
            let (accepted, accepted_rx) = mpsc::channel();
            thread::spawn(move || {
                let _ = accepted.send(server.accept());
            });
            let deadline = Instant::now() + RAW_CONNECT_TIMEOUT;
            let failure = loop {
                match accepted_rx.recv_timeout(Duration::from_millis(10)) {
                    Ok(Ok((replies, Reply::Ready(requests)))) => {
                        return Ok(Peer {
                            child,
                            requests,
                            replies,
                        })
                    }
                    Ok(Ok((_, other))) => break format!("its first message is {}", other.kind()),
                    Ok(Err(e)) => break format!("accepting its connection failed: {e}"),
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        break "the accept thread ended".to_owned()
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Ok(Some(status)) = child.try_wait() {
                            break format!("it exited with {status} before connecting");
                        }
                        if Instant::now() > deadline {
                            break format!("it did not connect within {RAW_CONNECT_TIMEOUT:?}");
                        }
                    }
                }
            };
            let _ = child.kill();
            let _ = child.wait();
            // Unblocks the accept thread if it still waits (connecting fails once it accepted).
            if let Ok(unblock) = IpcSender::<Reply>::connect(name) {
                let _ = unblock.send(Reply::Hash(0));
            }
            Err(failure)
        }

        pub(crate) fn id(&self) -> u32 {
            self.child.id()
        }

        /// One request and its answer.
        pub(crate) fn call(&self, request: Request) -> Reply {
            send(&self.requests, request);
            recv(&self.replies)
        }

        /// The two ends, to send from one thread and receive on another.
        pub(crate) fn split(&mut self) -> (&IpcSender<Request>, &mut IpcReceiver<Reply>) {
            (&self.requests, &mut self.replies)
        }
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub(crate) fn send(requests: &IpcSender<Request>, request: Request) {
        if let Err(e) = requests.send(request) {
            panic!("raw peer: sending a request failed: {e}");
        }
    }

    pub(crate) fn recv(replies: &IpcReceiver<Reply>) -> Reply {
        match replies.recv() {
            Ok(reply) => reply,
            Err(IpcError::Disconnected) => panic!("raw peer: it closed its channel (did it die?)"),
            Err(e) => panic!("raw peer: receiving an answer failed: {e}"),
        }
    }

    pub(crate) fn check_echo(reply: Reply) {
        match reply {
            Reply::Echo(s) if s == MESSAGE => {}
            other => panic!("raw peer: unexpected answer to an echo: {}", other.kind()),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Which CPUs threads may run on, with `sched_setaffinity` (Linux).
#[cfg(target_os = "linux")]
mod affinity {
    use std::io;

    /// The CPUs the calling thread may run on; `None` if they cannot be read.
    pub(crate) fn allowed() -> Option<Vec<usize>> {
        get(0).ok().filter(|cpus| !cpus.is_empty())
    }

    /// Pins the calling thread to the CPUs listed in `var`, if it is set; exits if that fails,
    /// since a child left unpinned would be measured where its placement does not put it.
    pub(crate) fn pin_from_env(var: &str) {
        let Ok(text) = std::env::var(var) else {
            return;
        };
        let cpus: Option<Vec<usize>> = text.split(',').map(|c| c.trim().parse().ok()).collect();
        let result = match cpus {
            Some(cpus) => set(0, &cpus),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a list of CPU numbers",
            )),
        };
        if let Err(e) = result {
            eprintln!("overhead: cannot pin to CPUs `{text}` from {var}: {e}");
            std::process::exit(3);
        }
    }

    /// Pins every thread of this process to `cpus` (nothing if empty). A thread started
    /// meanwhile by one not yet pinned would get the old CPUs: so it goes over the threads again
    /// until a pass finds none to change.
    pub(crate) fn pin_process(cpus: &[usize]) -> io::Result<()> {
        if cpus.is_empty() {
            return Ok(());
        }
        loop {
            let mut changed = false;
            for tid in threads(std::process::id()) {
                match get(tid) {
                    Ok(now) if now == cpus => {}
                    Ok(_) => {
                        set(tid, cpus).or_else(gone)?;
                        changed = true;
                    }
                    Err(e) => gone(e)?,
                }
            }
            if !changed {
                return Ok(());
            }
        }
    }

    /// Fails unless every thread of process `pid` may run on `cpus` and no other (any if empty).
    pub(crate) fn check(pid: u32, cpus: &[usize]) -> Result<(), String> {
        if cpus.is_empty() {
            return Ok(());
        }
        for tid in threads(pid) {
            match get(tid) {
                Ok(now) if now == cpus => {}
                Ok(now) => {
                    let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                        .unwrap_or_default();
                    return Err(format!(
                        "thread {tid} ({}) of process {pid} may run on CPUs {}, not {}",
                        name.trim(),
                        list(&now),
                        list(cpus)
                    ));
                }
                Err(e) => gone(e).map_err(|e| format!("thread {tid} of process {pid}: {e}"))?,
            }
        }
        Ok(())
    }

    /// `cpus` as a [`PIN_ENV`](super::PIN_ENV) value: "0,1".
    pub(crate) fn list(cpus: &[usize]) -> String {
        cpus.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A thread that ended meanwhile is no error.
    fn gone(e: io::Error) -> io::Result<()> {
        if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(e)
        }
    }

    /// The ids of the threads of process `pid`.
    fn threads(pid: u32) -> Vec<libc::pid_t> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|dir| {
                dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Thread `tid`'s CPUs (0: the calling thread).
    fn set(tid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
        // SAFETY: an all-zero `cpu_set_t` is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus {
            if cpu >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("CPU {cpu} is beyond what a cpu_set_t holds"),
                ));
            }
            // SAFETY: `cpu` is within the set, checked above.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: `set` is a valid `cpu_set_t` of the size passed.
        let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Thread `tid`'s CPUs, in order (0: the calling thread).
    fn get(tid: libc::pid_t) -> io::Result<Vec<usize>> {
        // SAFETY: an all-zero `cpu_set_t` is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid `cpu_set_t` of the size passed, written by the kernel.
        let rc = unsafe { libc::sched_getaffinity(tid, std::mem::size_of_val(&set), &mut set) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is within the set.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect())
    }
}

/// Where CPU affinity cannot be set: nothing is pinned, and the pinned placements are skipped.
#[cfg(not(target_os = "linux"))]
mod affinity {
    pub(crate) fn allowed() -> Option<Vec<usize>> {
        None
    }

    pub(crate) fn pin_from_env(_var: &str) {}

    pub(crate) fn pin_process(_cpus: &[usize]) -> std::io::Result<()> {
        Ok(())
    }

    pub(crate) fn check(_pid: u32, _cpus: &[usize]) -> Result<(), String> {
        Ok(())
    }

    pub(crate) fn list(cpus: &[usize]) -> String {
        cpus.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}
