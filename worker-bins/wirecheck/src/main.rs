//! The `wirecheck` worker binary (see the library for its workers).

use std::sync::atomic::{AtomicU32, Ordering};

use bincrew::{Json, RequestArgs, Workers};
use wirecheck::{picky_answer, Carrier, CarrierRequest, CarrierResponse, Doc, Job, Picky};

static CLOSED: AtomicU32 = AtomicU32::new(0);

fn carrier(args: RequestArgs<CarrierRequest>) -> CarrierResponse {
    match args.request {
        CarrierRequest::Take(_) => CarrierResponse::Taken,
        CarrierRequest::Give(n) => {
            let Ok((tx, rx)) = bincrew::channel::<u32>() else {
                return CarrierResponse::Closed(u32::MAX);
            };
            std::thread::spawn(move || {
                // Ends when every sender is closed.
                while rx.recv().is_ok() {}
                CLOSED.fetch_add(1, Ordering::SeqCst);
            });
            CarrierResponse::Carrier(Carrier {
                value: Picky(n),
                channel: tx,
            })
        }
        CarrierRequest::Closed => CarrierResponse::Closed(CLOSED.load(Ordering::SeqCst)),
    }
}

fn main() {
    bincrew::init!();
    Workers::new()
        .blocking_worker("job", |args: RequestArgs<Job>| {
            args.request.id + u64::from(args.request.level)
        })
        .blocking_worker("picky", |args: RequestArgs<Picky>| {
            picky_answer(args.request.0)
        })
        .blocking_worker("carrier", carrier)
        .blocking_worker("json", |args: RequestArgs<Json<Doc>>| args.request)
        .blocking_worker("plain-doc", |args: RequestArgs<Doc>| args.request)
        .run_dedicated();
}
