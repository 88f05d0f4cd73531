//! What bincrew costs over a bare ipc-channel request/response loop, measured in one run on one
//! machine.
//!
//! ```text
//! cargo bench --bench overhead                    # the table
//! cargo bench --bench overhead -- --json out.json # the table, and the same data as JSON
//! cargo bench --bench overhead -- --quick         # a short run, to check that it works
//! ```
//!
//! (cargo runs benchmarks in the package's root directory, so a relative JSON path is taken
//! from there.)
//!
//! This executable is three programs:
//! - started by bincrew as a worker, it serves the workers `echo`, `blob`, `buffer` and `hash`
//!   ([`bincrew::Workers::run`] never returns then);
//! - started with [`RAW_SERVER_ENV`] set, it is a raw ipc-channel peer: it connects to the
//!   one-shot server named there, hands over a request sender and answers requests in a plain
//!   `recv` → `send` loop, with no framework at all;
//! - otherwise it is the benchmark, which starts both kinds of children.
//!
//! Each case measures both sides in the same run, interleaved (raw, bincrew, raw, …, with the
//! order rotated every run) so that a slow moment of the machine hits both; each side is warmed
//! up once, and the table shows the median of several runs. Every child is killed and reaped when
//! its case ends, and a watchdog ends the benchmark if it ever hangs.
//!
//! On a virtual machine with idle vCPUs, one-at-a-time round trips mostly measure how fast a
//! halted vCPU wakes up: they come out bimodal (fast when both processes share a CPU, several
//! times slower when each wakes the other across CPUs), on both sides. `taskset -c 0 cargo bench
//! --bench overhead` keeps everything on one CPU and gives stable round-trip figures (the pool
//! case is meaningless then). The "other load" column tells when other processes got in the way.

use std::fmt::Display;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use bincrew::{IpcReceiver, IpcSender, IpcSharedMemory, Reply, RequestArgs, SharedBuffer, Worker};
use ipc_channel::ipc::IpcOneShotServer;
use ipc_channel::IpcError;
use serde::{Deserialize, Serialize};

/// Makes this executable a raw ipc-channel peer; the value is the one-shot server's name.
const RAW_SERVER_ENV: &str = "BINCREW_BENCH_RAW_SERVER";

const ECHO: &str = "echo";
const BLOB: &str = "blob";
const BUFFER: &str = "buffer";
const HASH: &str = "hash";

/// The request of the round-trip and pipelined cases, echoed back.
const MESSAGE: &str = "hello, worker";
const PIPELINED: usize = 10_000;
const BLOB_LEN: usize = 64 << 20;
/// How much each pool request hashes.
const JOB_LEN: usize = 64 << 10;
const POOL_SIZE: usize = 2;
const CLIENT_THREADS: usize = 2;

/// How long a raw peer has to connect.
const RAW_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    bincrew::init!();
    bincrew::Workers::new()
        // A raw peer answers one request at a time on one thread; so does each bincrew worker
        // process here, so that both sides differ in the framework and not in thread counts. The
        // pool gets its parallelism from its two processes, as the raw pool does.
        .parallelism(1)
        .blocking_worker(ECHO, |args: RequestArgs<String>| args.request)
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
        Duration::from_secs(180)
    } else {
        Duration::from_secs(900)
    };
    watchdog(deadline);

    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let plan = Plan::new(options.quick);
    let mut rows = Vec::new();
    watch_load(&mut rows, || vec![bench_start(&plan)]);
    watch_load(&mut rows, || bench_round_trip(&plan));
    watch_load(&mut rows, || vec![bench_pipelined(&plan)]);
    watch_load(&mut rows, || bench_blob(&plan));
    watch_load(&mut rows, || vec![bench_pool(&plan)]);
    print_table(&rows, cores, &plan);
    if let Some(path) = &options.json {
        let json = to_json(&rows, cores, &plan);
        let text = serde_json::to_string_pretty(&json).expect("the report encodes");
        std::fs::write(path, text + "\n")
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        println!("\nJSON written to {}", path.display());
    }
}

struct Options {
    quick: bool,
    json: Option<std::path::PathBuf>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            quick: false,
            json: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--json" => match args.next() {
                    Some(path) => options.json = Some(path.into()),
                    None => usage("--json needs a file name"),
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
        "overhead: {problem}\nusage: cargo bench --bench overhead -- [--quick] [--json FILE]"
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
    /// Batches of [`PIPELINED`] requests.
    batches: usize,
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
                batches: 1,
                blobs: 1,
                pool_requests: 100,
            }
        } else {
            Plan {
                quick,
                runs: 7,
                starts: 10,
                round_trips: 20_000,
                batches: 5,
                blobs: 3,
                pool_requests: 4_000,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cases. Each returns seconds per operation for every run of every side.

/// start: from nothing to a worker that can take its first request; the child's exit is timed
/// on neither side. The raw side is the least a careful hand-written version does: a one-shot
/// server, the spawn, `accept` on a thread of its own (it has no timeout, and a child that dies
/// before connecting must not hang the app), and the child's request sender. bincrew adds its
/// handshake, the stderr pipe and its draining thread, and the reader thread.
fn bench_start(plan: &Plan) -> Row {
    let starts = plan.starts;
    let mut raw = || {
        let mut total = Duration::ZERO;
        for _ in 0..starts {
            let began = Instant::now();
            let peer = raw::Peer::start().unwrap_or_else(|e| panic!("raw peer: {e}"));
            total += began.elapsed();
            drop(peer);
        }
        total.as_secs_f64() / starts as f64
    };
    let mut bincrew = || {
        let mut total = Duration::ZERO;
        for _ in 0..starts {
            let began = Instant::now();
            let worker = ok(
                Worker::<String, String>::start_blocking(ECHO),
                "start `echo`",
            );
            total += began.elapsed();
            let pid = worker.id();
            drop(worker);
            // `Drop` kills without waiting and a reaper thread reaps; wait for it untimed, as the
            // raw side's `Drop` waits for its child, so that one start's end does not land in
            // the next start's time.
            while std::path::Path::new(&format!("/proc/{pid}")).exists() {
                thread::sleep(Duration::from_micros(100));
            }
        }
        total.as_secs_f64() / starts as f64
    };
    let [raw, bincrew] = interleave(plan.runs, [&mut raw, &mut bincrew]);
    Row::time("start (spawn until first request)", raw, bincrew)
}

/// round trip: one short string at a time, echoed back. The raw side is `send` then `recv` on
/// the calling thread; bincrew adds a request id, a table of pending replies, its reader thread
/// and, in the worker, a queue in front of the handler thread. `block_on(run)` is the same
/// request awaited as a future instead of waited on.
fn bench_round_trip(plan: &Plan) -> Vec<Row> {
    let n = plan.round_trips;
    let peer = raw::Peer::start().unwrap_or_else(|e| panic!("raw peer: {e}"));
    let worker = ok(
        Worker::<String, String>::start_blocking(ECHO),
        "start `echo`",
    );
    let mut raw = || {
        let began = Instant::now();
        for _ in 0..n {
            match peer.call(raw::Request::Echo(MESSAGE.to_owned())) {
                raw::Reply::Echo(s) if s == MESSAGE => {}
                other => panic!("raw peer: unexpected answer to an echo: {other:?}"),
            }
        }
        began.elapsed().as_secs_f64() / n as f64
    };
    let mut blocking = || {
        let began = Instant::now();
        for _ in 0..n {
            let answer = ok(worker.run_blocking(MESSAGE.to_owned()), "`echo`");
            assert_eq!(answer, MESSAGE, "`echo` answered something else");
        }
        began.elapsed().as_secs_f64() / n as f64
    };
    let mut future = || {
        let began = Instant::now();
        for _ in 0..n {
            let answer = ok(
                futures::executor::block_on(worker.run(MESSAGE.to_owned())),
                "`echo`",
            );
            assert_eq!(answer, MESSAGE, "`echo` answered something else");
        }
        began.elapsed().as_secs_f64() / n as f64
    };
    let [raw, blocking, future] = interleave(plan.runs, [&mut raw, &mut blocking, &mut future]);
    vec![
        Row::time("round trip, run_blocking", raw.clone(), blocking),
        Row::time("round trip, block_on(run)", raw, future),
    ]
}

/// pipelined: 10,000 short strings in flight at once, time per request. The raw side sends
/// them all from one thread while another receives the answers, which arrive in order; bincrew
/// sends them all with `run` and then waits on each reply in turn while its reader thread
/// completes them.
fn bench_pipelined(plan: &Plan) -> Row {
    let batches = plan.batches;
    let mut peer = raw::Peer::start().unwrap_or_else(|e| panic!("raw peer: {e}"));
    let worker = ok(
        Worker::<String, String>::start_blocking(ECHO),
        "start `echo`",
    );
    let mut raw = || {
        let began = Instant::now();
        for _ in 0..batches {
            let (requests, replies) = peer.split();
            thread::scope(|scope| {
                scope.spawn(move || {
                    for _ in 0..PIPELINED {
                        match raw::recv(replies) {
                            raw::Reply::Echo(s) if s == MESSAGE => {}
                            other => panic!("raw peer: unexpected answer to an echo: {other:?}"),
                        }
                    }
                });
                for _ in 0..PIPELINED {
                    raw::send(requests, raw::Request::Echo(MESSAGE.to_owned()));
                }
            });
        }
        began.elapsed().as_secs_f64() / (batches * PIPELINED) as f64
    };
    let mut bincrew = || {
        let began = Instant::now();
        for _ in 0..batches {
            let replies: Vec<Reply<String>> = (0..PIPELINED)
                .map(|_| worker.run(MESSAGE.to_owned()))
                .collect();
            for reply in replies {
                let answer = ok(reply.wait(), "`echo`");
                assert_eq!(answer, MESSAGE, "`echo` answered something else");
            }
        }
        began.elapsed().as_secs_f64() / (batches * PIPELINED) as f64
    };
    let [raw, bincrew] = interleave(plan.runs, [&mut raw, &mut bincrew]);
    Row::time(
        &format!("pipelined, {PIPELINED} in flight (per request)"),
        raw,
        bincrew,
    )
}

/// blob: 64 MiB to the worker and back, with the best public means there is today: the bytes
/// are copied into an `IpcSharedMemory`, which travels as a file descriptor; the worker sends
/// the same shared memory back. Timed: building the shared memory, the request and the response
/// (on both sides). The reference is what copying the blob in and out of a process costs at
/// least: two `memcpy`s of 64 MiB into a buffer already allocated and touched.
fn bench_blob(plan: &Plan) -> Vec<Row> {
    let blobs = plan.blobs;
    let data: Vec<u8> = (0..BLOB_LEN)
        .map(|i| (i as u8) ^ ((i >> 11) as u8))
        .collect();
    let mut target = vec![1u8; BLOB_LEN];
    let peer = raw::Peer::start().unwrap_or_else(|e| panic!("raw peer: {e}"));
    let worker = ok(
        Worker::<IpcSharedMemory, IpcSharedMemory>::start_blocking(BLOB),
        "start `blob`",
    );
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
                other => panic!("raw peer: unexpected answer to a blob: {other:?}"),
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
    let buffer_worker = ok(
        Worker::<SharedBuffer, SharedBuffer>::start_blocking(BUFFER),
        "start `buffer`",
    );
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
    let [reference, raw, bincrew, in_place] = interleave(
        plan.runs,
        [&mut reference, &mut raw, &mut bincrew, &mut in_place],
    );
    let mut row = Row::time("blob 64 MiB there and back", raw.clone(), bincrew);
    row.reference = Some(Stat::new(reference.clone()));
    let mut buffer_row = Row::time("blob 64 MiB, SharedBuffer written in place", raw, in_place);
    buffer_row.reference = Some(Stat::new(reference));
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
        .step_by(sent.len() / 61)
        .chain([sent.len() - 1])
    {
        assert_eq!(
            back[i], sent[i],
            "{who}: the blob came back changed at byte {i}"
        );
    }
}

/// pool: throughput of two worker processes on this machine, fed by two client threads, each
/// request a fixed CPU job (hashing 64 KiB) in the worker. The raw pool is two raw peers used
/// round-robin, each behind a mutex since a bare loop carries no request ids; bincrew's is a
/// `WorkerPool` of two, which sends each request to the less loaded worker.
fn bench_pool(plan: &Plan) -> Row {
    let total = plan.pool_requests;
    // The answers are checked against jobs computed here, once.
    let seeds: Vec<u64> = (0..16).collect();
    let expected: Vec<u64> = seeds.iter().map(|s| cpu_job(*s)).collect();

    let peers: Vec<Mutex<raw::Peer>> = (0..POOL_SIZE)
        .map(|_| Mutex::new(raw::Peer::start().unwrap_or_else(|e| panic!("raw peer: {e}"))))
        .collect();
    let pool = ok(
        bincrew::WorkerPool::<u64, u64>::builder(HASH)
            .size(POOL_SIZE)
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
                other => panic!("raw peer: unexpected answer to a job: {other:?}"),
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
    let [raw, bincrew, in_process] =
        interleave(plan.runs, [&mut raw, &mut bincrew, &mut in_process]);
    let mut row = Row::time(
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

/// Runs every side once to warm up, then `runs` times, interleaved; the start rotates each run.
/// Returns each side's samples.
fn interleave<const N: usize>(runs: usize, sides: [&mut dyn FnMut() -> f64; N]) -> [Vec<f64>; N] {
    let mut sides = sides;
    for side in sides.iter_mut() {
        side();
    }
    let mut samples: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(runs));
    for run in 0..runs {
        for k in 0..N {
            let i = (run + k) % N;
            samples[i].push(sides[i]());
        }
    }
    samples
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

/// One line of the table.
struct Row {
    case: String,
    raw: Stat,
    bincrew: Stat,
    /// The blob case's two-memcpy reference, which its ratios are to.
    reference: Option<Stat>,
    /// Shown as requests per second.
    throughput: bool,
    /// The pool's jobs run by its client threads, without workers.
    in_process: Option<Stat>,
    /// The share of the machine other processes used during the case.
    other_load: Option<f64>,
}

impl Row {
    fn time(case: &str, raw: Vec<f64>, bincrew: Vec<f64>) -> Row {
        Row {
            case: case.to_owned(),
            raw: Stat::new(raw),
            bincrew: Stat::new(bincrew),
            reference: None,
            throughput: false,
            in_process: None,
            other_load: None,
        }
    }

    /// bincrew's time over the raw time, or over the reference when there is one.
    fn ratio(&self) -> f64 {
        self.bincrew.median / self.reference.as_ref().unwrap_or(&self.raw).median
    }
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

fn cell(row: &Row, stat: &Stat) -> String {
    let value = if row.throughput {
        format!("{:.0} req/s", 1.0 / stat.median)
    } else {
        duration(stat.median)
    };
    format!("{value} ±{:.0}%", stat.spread() * 100.0)
}

fn print_table(rows: &[Row], cores: usize, plan: &Plan) {
    let header = [
        "case".to_owned(),
        "raw ipc-channel".to_owned(),
        "bincrew".to_owned(),
        "bincrew/raw".to_owned(),
        "other load".to_owned(),
    ];
    let mut lines = vec![header];
    for row in rows {
        let mut raw = cell(row, &row.raw);
        let mut ratio = format!("{:.2}", row.ratio());
        if let Some(reference) = &row.reference {
            raw += &format!(" ({:.2}× ref)", row.raw.median / reference.median);
            ratio += "× ref";
        }
        let load = row
            .other_load
            .map_or_else(|| "?".to_owned(), |l| format!("{:.0}%", l * 100.0));
        lines.push([row.case.clone(), raw, cell(row, &row.bincrew), ratio, load]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    println!(
        "\nbincrew {} over a bare ipc-channel loop: {cores} cores available, median of {} runs{}",
        env!("CARGO_PKG_VERSION"),
        plan.runs,
        if plan.quick { " (--quick)" } else { "" }
    );
    println!(
        "(± is half the spread between the fastest and the slowest run; other load is the share \
         of all cores that other processes used meanwhile)\n"
    );
    for line in &lines {
        let mut text = String::new();
        for (c, field) in line.iter().enumerate() {
            let pad = widths[c] - field.chars().count();
            if c == 0 {
                text += &format!("{field}{}", " ".repeat(pad));
            } else {
                text += &format!("  {}{field}", " ".repeat(pad));
            }
        }
        println!("{text}");
    }
    println!();
    let mut reference_shown = None;
    for row in rows {
        if let Some(reference) = row
            .reference
            .as_ref()
            .filter(|r| reference_shown != Some(r.median))
        {
            reference_shown = Some(reference.median);
            println!(
                "blob: the reference, two memcpys of the blob, takes {} ±{:.0}%; the blob rows' \
                 ratios are to it",
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
    println!(
        "ratio: bincrew's time over the raw time, lower is better (for the pool, raw req/s over \
         bincrew req/s)"
    );
}

fn to_json(rows: &[Row], cores: usize, plan: &Plan) -> serde_json::Value {
    let stat = |s: &Stat| {
        serde_json::json!({
            "median": s.median,
            "min": s.min,
            "max": s.max,
            "samples": s.samples,
        })
    };
    let cases: Vec<_> = rows
        .iter()
        .map(|row| {
            let mut case = serde_json::json!({
                "case": row.case,
                "unit": if row.throughput { "seconds per request (1 / throughput)" } else { "seconds per operation" },
                "raw": stat(&row.raw),
                "bincrew": stat(&row.bincrew),
                "ratio": row.ratio(),
                "ratio_of": if row.reference.is_some() { "bincrew / reference" } else { "bincrew / raw" },
                "other_load": row.other_load,
            });
            if let Some(reference) = &row.reference {
                case["reference"] = stat(reference);
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
            case
        })
        .collect();
    serde_json::json!({
        "bincrew_version": env!("CARGO_PKG_VERSION"),
        "cores": cores,
        "quick": plan.quick,
        "runs": plan.runs,
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
        Blob(IpcSharedMemory),
        Hash(u64),
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) enum Reply {
        /// The child's first message: where to send requests.
        Ready(IpcSender<Request>),
        Echo(String),
        Blob(IpcSharedMemory),
        Hash(u64),
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
        /// Spawns a peer and waits until it can take requests.
        pub(crate) fn start() -> Result<Peer, String> {
            let (server, name) = IpcOneShotServer::<Reply>::new()
                .map_err(|e| format!("cannot make a one-shot server: {e}"))?;
            let exe = std::env::current_exe()
                .map_err(|e| format!("cannot find the benchmark's executable: {e}"))?;
            let mut child = Command::new(exe)
                .env(RAW_SERVER_ENV, &name)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot spawn: {e}"))?;
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
                    Ok(Ok((_, other))) => break format!("its first message is {other:?}"),
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
}
