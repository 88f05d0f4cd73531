#!/usr/bin/env bash
# What bincrew costs an app's build: a clean `cargo build --release` of a minimal app using
# bincrew (a self-spawned worker, one round trip) against one using only ipc-channel (the same
# version, the same round trip by hand), in the same run, each with a fresh target dir. Prints
# both times and their ratio, each release binary's size, and how many distinct crates each app
# depends on at run time (`cargo tree -e normal`, the app itself not counted).
#
#   scripts/build-time.sh [ROUNDS]     # ROUNDS clean builds of each app, alternating (1)
#
# Both apps start from this repository's Cargo.lock, so shared crates are the versions bincrew is
# tested with, and build offline from the local registry cache when they are there (online
# otherwise). A compiler wrapper (sccache) is switched off: every build compiles everything.
set -euo pipefail

rounds=${1:-1}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/bincrew-build-time.XXXXXX")
trap 'rm -rf "$work"' EXIT
export RUSTC_WRAPPER="" CARGO_BUILD_RUSTC_WRAPPER=""
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR

ipc_version=$(awk '/^name = "ipc-channel"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' \
    "$repo/Cargo.lock")
[ -n "$ipc_version" ] || {
    echo "build-time: no ipc-channel in $repo/Cargo.lock" >&2
    exit 1
}

# Writes a package named $1 in $work/$1 with the dependency line $2 and main.rs from stdin.
new_app() {
    mkdir -p "$work/$1/src"
    cat >"$work/$1/Cargo.toml" <<EOF
[package]
name = "$1"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
$2

# Not part of any workspace above the temp dir.
[workspace]
EOF
    cat >"$work/$1/src/main.rs"
    cp "$repo/Cargo.lock" "$work/$1/Cargo.lock"
}

new_app with-bincrew "bincrew = { path = \"$repo\" }" <<'EOF'
//! A self-spawned worker and one round trip.
fn main() {
    bincrew::init!();
    bincrew::run_worker_blocking("double", |args: bincrew::RequestArgs<u32>| args.request * 2);
    let worker = bincrew::Worker::<u32, u32>::start_blocking("double").expect("worker");
    assert_eq!(worker.run_blocking(21).expect("answer"), 42);
    worker.shutdown_blocking().expect("clean exit");
}
EOF

new_app with-ipc-channel "ipc-channel = \"=$ipc_version\"" <<'EOF'
//! The same by hand: the app starts itself again, the child connects to a one-shot server and
//! hands over a request channel, and one request goes there and back.
use ipc_channel::ipc::{self, IpcOneShotServer, IpcSender};

type Request = (u32, IpcSender<u32>);

fn main() {
    if let Ok(server) = std::env::var("RAW_SERVER") {
        let (requests, incoming) = ipc::channel::<Request>().expect("channel");
        IpcSender::connect(server)
            .expect("connect")
            .send(requests)
            .expect("send");
        while let Ok((n, reply)) = incoming.recv() {
            reply.send(n * 2).expect("reply");
        }
        return;
    }
    let (server, name) = IpcOneShotServer::<IpcSender<Request>>::new().expect("server");
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("RAW_SERVER", name)
        .spawn()
        .expect("spawn");
    let (_, requests) = server.accept().expect("accept");
    let (reply, answer) = ipc::channel().expect("channel");
    requests.send((21, reply)).expect("send");
    assert_eq!(answer.recv().expect("answer"), 42);
    drop(requests);
    assert!(child.wait().expect("wait").success());
}
EOF

apps=(with-ipc-channel with-bincrew)

# Resolve and fetch first, outside the timing: offline when the cache has everything.
for app in "${apps[@]}"; do
    (cd "$work/$app" && { cargo fetch --offline -q 2>/dev/null || cargo fetch -q; })
done

now() { date +%s.%N; }

# Times a clean release build of $1 into a fresh target dir; prints the seconds.
build() {
    rm -rf "$work/$1/target"
    local start end
    start=$(now)
    (cd "$work/$1" && cargo build --release --offline -q)
    end=$(now)
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }'
}

echo "bincrew build cost: $(date -u +%Y-%m-%d), $(nproc) cores, $(rustc --version)"
echo "ipc-channel $ipc_version; bincrew at $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
for round in $(seq 1 "$rounds"); do
    ipc_time=$(build with-ipc-channel)
    bincrew_time=$(build with-bincrew)
    ratio=$(awk -v b="$bincrew_time" -v i="$ipc_time" 'BEGIN { printf "%.2f", b / i }')
    echo "round $round: clean release build: ipc-channel only ${ipc_time} s, bincrew ${bincrew_time} s, ratio ${ratio}x"
done

for app in "${apps[@]}"; do
    exe="$work/$app/target/release/$app"
    # Each app must really do its round trip.
    "$exe"
    size=$(stat -c %s "$exe" 2>/dev/null || stat -f %z "$exe")
    # Distinct crates in the normal (run-time) dependency tree, the app itself not counted.
    crates=$(cd "$work/$app" && cargo tree -e normal --prefix none --offline |
        sed 's/ (\*)$//' | sort -u | grep -cv "^$app v")
    awk -v a="$app" -v s="$size" -v c="$crates" \
        'BEGIN { printf "%s: release binary %.2f MB (%d bytes), %d crates\n", a, s / 1e6, s, c }'
done
