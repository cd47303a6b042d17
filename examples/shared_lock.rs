//! A lock shared by several OS processes guarding a read-modify-write.
//!
//! Run with `cargo run --example shared_lock`. This is rpyc-mem's session
//! guide scenario (processes sharing one remote object under one remote lock)
//! done with memhub:
//!
//! * the parent starts a hub inside this process on a free loopback port,
//!   memoizes the key `counter` as 0 and starts 4 copies of this program as
//!   `shared_lock worker <ws-url> <rounds>`;
//! * each worker, 50 times: takes the lock `counter-lock`, reads `counter`,
//!   writes it back plus one and unlocks. Without the lock, two workers could
//!   read the same value and one increment would be lost;
//! * the parent waits for every worker, then checks that `counter` is exactly
//!   4 × 50 (exit status 0), or says what went wrong (exit status 1).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use memhub::MemService;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Worker processes to start.
const WORKERS: u64 = 4;
/// Increments per worker.
const ROUNDS: u64 = 50;
/// How long a worker queues for the lock (ms) before the hub answers -32003.
const LOCK_WAIT_MS: u64 = 10_000;
/// Lease (ms): if a worker dies holding the lock, the hub frees it after this
/// (it also frees it at once when the worker's connection closes).
const LOCK_TTL_MS: u64 = 10_000;
/// Give up on an ordinary reply after this long.
const WAIT: Duration = Duration::from_secs(5);
/// Give up on the whole run after this long.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        None => parent().await,
        Some("worker") => {
            let [_, _, url, rounds] = args.as_slice() else {
                bail!("usage: shared_lock worker <ws-url> <rounds>");
            };
            worker(url, rounds.parse().context("rounds must be a number")?).await
        }
        Some(other) => bail!("unknown argument {other:?}; run without arguments"),
    }
}

/// Starts the hub and the workers, waits for them and checks the count.
async fn parent() -> Result<()> {
    // Port 0: the OS picks a free port; `local_addr` tells which.
    let server = MemService::new("127.0.0.1", 0).bind().await?;
    let url = format!("ws://{}/ws", server.local_addr());
    let stop = server.shutdown_handle();
    let hub = tokio::spawn(server.run());
    println!("hub listening on {url}");

    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    let mut ids = 0;
    let made = call(
        &mut ws,
        &mut ids,
        "memoize",
        json!({"key": "counter", "value": 0}),
        WAIT,
    )
    .await?;
    println!("counter memoized: {made}");

    // The workers are this very program, started again with other arguments.
    let exe = std::env::current_exe().context("locating this program")?;
    let mut children = Vec::new();
    for _ in 0..WORKERS {
        let child = Command::new(&exe)
            .args(["worker", &url, &ROUNDS.to_string()])
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        children.push(child);
    }
    // Wait in a blocking thread: the hub keeps serving on the runtime's others.
    let waited = tokio::task::spawn_blocking(move || wait_all(children)).await?;
    waited?;

    let got = call(&mut ws, &mut ids, "get", json!({"key": "counter"}), WAIT).await?;
    let expected = WORKERS * ROUNDS;
    println!("counter = {} (expected {expected})", got["value"]);
    ws.close(None).await?;
    stop.shutdown();
    hub.await??;

    ensure!(
        got["value"].as_u64() == Some(expected),
        "counter is {}, not {WORKERS} workers × {ROUNDS} rounds = {expected}: increments were lost",
        got["value"]
    );
    println!("ok: no increment lost");
    Ok(())
}

/// Waits for every child to exit successfully, killing all of them if one
/// fails or the run takes longer than `DEADLINE`.
fn wait_all(mut children: Vec<Child>) -> Result<()> {
    let started = Instant::now();
    let result = loop {
        let mut running = 0;
        let mut failed = None;
        for child in &mut children {
            match child.try_wait()? {
                None => running += 1,
                Some(status) if !status.success() => {
                    failed = Some(anyhow!("worker {} failed: {status}", child.id()));
                }
                Some(_) => {}
            }
        }
        if let Some(err) = failed {
            break Err(err);
        }
        if running == 0 {
            break Ok(());
        }
        if started.elapsed() > DEADLINE {
            break Err(anyhow!(
                "{running} workers still running after {DEADLINE:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if result.is_err() {
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    result
}

/// One worker process: `rounds` locked increments of `counter`.
async fn worker(url: &str, rounds: u64) -> Result<()> {
    let me = std::process::id();
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("worker {me}: connecting to {url}"))?;
    let mut ids = 0;
    // The lock reply may take up to LOCK_WAIT_MS; allow that plus slack.
    let lock_wait = Duration::from_millis(LOCK_WAIT_MS) + WAIT;
    for round in 1..=rounds {
        // Queue for the lock (FIFO among the workers). `token` releases it;
        // `fence` grows with every acquisition.
        let params =
            json!({"name": "counter-lock", "wait_ms": LOCK_WAIT_MS, "ttl_ms": LOCK_TTL_MS});
        let lock = call(&mut ws, &mut ids, "lock", params, lock_wait).await?;
        let token = lock["token"].clone();

        // The critical section: read, add one, write back.
        let got = call(&mut ws, &mut ids, "get", json!({"key": "counter"}), WAIT).await?;
        let n = got["value"]
            .as_u64()
            .ok_or_else(|| anyhow!("counter is not a number: {got}"))?;
        call(
            &mut ws,
            &mut ids,
            "update",
            json!({"key": "counter", "value": n + 1}),
            WAIT,
        )
        .await?;
        // Printed while still holding the lock, so the lines of all the
        // workers come out in counter order.
        println!(
            "worker {me}: round {round}/{rounds}: counter {n} -> {} (fence {})",
            n + 1,
            lock["fence"]
        );

        call(
            &mut ws,
            &mut ids,
            "unlock",
            json!({"name": "counter-lock", "token": token}),
            WAIT,
        )
        .await?;
    }
    ws.close(None).await?;
    Ok(())
}

/// Sends one JSON-RPC request and returns its `result` (or the `error` as an
/// `Err`), waiting at most `wait` for the reply.
async fn call(
    ws: &mut Socket,
    ids: &mut u64,
    method: &str,
    params: Value,
    wait: Duration,
) -> Result<Value> {
    *ids += 1;
    let id = *ids;
    let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::text(request.to_string())).await?;
    // One request in flight and no subscriptions: the next text frame is the reply.
    let reply: Value = loop {
        let msg = tokio::time::timeout(wait, ws.next())
            .await
            .with_context(|| format!("{method}: no reply within {wait:?}"))?
            .ok_or_else(|| anyhow!("{method}: the hub closed the connection"))??;
        if let Message::Text(text) = msg {
            break serde_json::from_str(&text)?;
        }
    };
    ensure!(
        reply["id"] == id,
        "{method}: reply to another request: {reply}"
    );
    if let Some(err) = reply.get("error") {
        bail!("{method} failed: {err}");
    }
    reply
        .get("result")
        .cloned()
        .ok_or_else(|| anyhow!("{method}: reply without result: {reply}"))
}
