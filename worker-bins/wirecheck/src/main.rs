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

/// Uses Tokio's timers and I/O: a sleep, then a TCP round trip on loopback.
async fn tokio_io(args: RequestArgs<String>) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let echo = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut text = String::new();
        socket
            .read_to_string(&mut text)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(text.to_uppercase())
    });
    let mut client = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    client
        .write_all(args.request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    client.shutdown().await.map_err(|e| e.to_string())?;
    drop(client);
    echo.await.map_err(|e| e.to_string())?
}

fn main() {
    bincrew::init!();
    Workers::new()
        .tokio()
        .worker("tokio-io", tokio_io)
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
