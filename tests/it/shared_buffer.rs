//! `SharedBuffer` mappings: kept on both sides while a buffer goes back and forth, released
//! when it does not come back.

use bincrew::SharedBuffer;
use misbehave::{mapping_is_marked, mark_mapping, Request, Response};

use crate::support::{eventually, start_misbehave, text};

/// How many mappings of exactly `len` bytes this process has.
fn mappings_of(len: usize) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .filter_map(|line| line.split_whitespace().next()?.split_once('-'))
        .filter_map(|(start, end)| {
            Some(usize::from_str_radix(end, 16).ok()? - usize::from_str_radix(start, 16).ok()?)
        })
        .filter(|size| *size == len)
        .count()
}

/// Whether this process has a thread with this name.
fn has_thread(name: &str) -> bool {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(Result::ok)
        .any(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
}

#[test]
fn a_buffer_going_back_and_forth_keeps_its_mapping_on_both_sides() {
    let worker = start_misbehave();
    let mut buffer = SharedBuffer::zeroed(8 << 20);
    let app_address = buffer.as_ptr();
    // A mark that stays with this mapping: a new mapping of the same memory, even at the same
    // address, does not have it.
    assert!(mark_mapping(&buffer), "madvise(MADV_DONTDUMP)");
    let mut worker_address = None;
    for round in 0..4u8 {
        buffer.fill(round * 2);
        let key = format!("stamp-{round}");
        let reply = worker.run(Request::Stamp {
            buffer,
            after: Some(key.clone()),
        });
        // `run` sent the request and dropped its value before returning, and the release goes
        // after it: the worker answers only once the app's mapping is parked.
        assert_eq!(
            worker
                .run_blocking(Request::Release(key.clone()))
                .expect("released"),
            text(&key)
        );
        let answer = reply.wait().expect("stamped");
        let Response::Stamped {
            buffer: back,
            address,
            marked,
        } = answer
        else {
            panic!("{answer:?}")
        };
        assert!(
            back.iter().all(|b| *b == round * 2 + 1),
            "round {round}: the app sees what the worker wrote"
        );
        assert_eq!(back.len(), 8 << 20);
        assert_eq!(
            back.as_ptr(),
            app_address,
            "round {round}: the buffer came back at its address in the app"
        );
        assert!(
            mapping_is_marked(&back),
            "round {round}: the buffer came back in the app's own mapping"
        );
        match worker_address {
            None => assert!(!marked, "the first time, the worker maps the buffer anew"),
            Some(first) => {
                assert_eq!(address, first, "round {round}: the worker's address");
                assert!(marked, "round {round}: the worker kept its mapping");
            }
        }
        worker_address = Some(address);
        buffer = back;
        // The worker drops its answer's value right after sending it, before it sends another
        // answer: once this echo is back, the worker's mapping is parked.
        assert_eq!(
            worker
                .run_blocking(Request::Echo("sync".into()))
                .expect("echo"),
            text("sync")
        );
    }
}

#[test]
fn a_buffer_the_worker_does_not_send_back_is_unmapped_after_the_expiry() {
    let worker = start_misbehave();
    // A size no other mapping of this process has.
    let len = (5 << 20) + 7 * 4096;
    let mut buffer = SharedBuffer::zeroed(len);
    buffer.fill(1);
    assert_eq!(mappings_of(len), 1);
    assert_eq!(
        worker.run_blocking(Request::Sum(buffer)).expect("sum"),
        Response::Number(len as u64)
    );
    // Parked, in case it came back; then unmapped by the sweeper, which then ends. (Polled with
    // a generous bound, not a timing assertion; other tests may park buffers of their own
    // meanwhile, so the sweeper is checked until it is seen gone.)
    eventually("the parked mapping is unmapped", || mappings_of(len) == 0);
    eventually("the sweeper thread ends", || !has_thread("bincrew-parked"));
}
