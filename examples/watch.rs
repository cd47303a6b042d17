//! Watch a key change: one hub, two clients, raw JSON-RPC over WebSocket.
//!
//! Run with `cargo run --example watch`. It starts a hub inside this process
//! on a free loopback port, then:
//!
//! * client A subscribes to the key `counter` (which does not exist yet);
//! * client B creates it with `memoize` (value 0) and `update`s it to 1, 2, 3;
//! * A prints each `event` notification as it arrives — four in all;
//!
//! and finally the hub is shut down gracefully.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use memhub::MemService;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Give up on any single reply or event after this long.
const WAIT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<()> {
    // Port 0: the OS picks a free port; `local_addr` tells which.
    let server = MemService::new("127.0.0.1", 0).bind().await?;
    let url = format!("ws://{}/ws", server.local_addr());
    let stop = server.shutdown_handle();
    let hub = tokio::spawn(server.run());
    println!("hub listening on {url}");

    let (mut a, _) = tokio_tungstenite::connect_async(&url).await?;
    let (mut b, _) = tokio_tungstenite::connect_async(&url).await?;

    // A watches "counter". The reply carries the subscription id (`sub`),
    // which every event for this subscription repeats, and the key's state at
    // the moment of subscribing; every later change arrives as an event.
    let sub = call(&mut a, 1, "subscribe", json!({"key": "counter"})).await?;
    println!("A subscribed: {sub}");

    // A prints events as they arrive, in its own task. They are JSON-RPC
    // notifications (`method: "event"`) in rev order: the memoize, then the
    // three updates.
    let watcher = tokio::spawn(async move {
        for _ in 0..4 {
            let event = next_event(&mut a).await?;
            println!("A got event:  {event}");
        }
        anyhow::Ok(a)
    });

    // B creates the key (memoize stores only if absent), then changes it.
    let made = call(&mut b, 1, "memoize", json!({"key": "counter", "value": 0})).await?;
    println!("B memoized:   {made}");
    for n in 1..=3 {
        let written = call(
            &mut b,
            1 + n,
            "update",
            json!({"key": "counter", "value": n}),
        )
        .await?;
        println!("B updated:    {written}");
    }
    let mut a = watcher.await??;

    // Say goodbye politely, then stop the hub and wait for it to finish.
    a.close(None).await?;
    b.close(None).await?;
    stop.shutdown();
    hub.await??;
    println!("hub stopped");
    Ok(())
}

/// Sends one JSON-RPC request and waits for the response with the same id,
/// returning its `result` (or the `error` as an `Err`).
async fn call(ws: &mut Socket, id: i64, method: &str, params: Value) -> Result<Value> {
    let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::text(request.to_string())).await?;
    loop {
        let msg = read_json(ws).await?;
        if msg["id"] != id {
            continue; // an event or another reply; this example only has one in flight
        }
        if let Some(err) = msg.get("error") {
            bail!("{method} failed: {err}");
        }
        return msg
            .get("result")
            .cloned()
            .ok_or_else(|| anyhow!("{method}: response without result: {msg}"));
    }
}

/// Waits for the next `event` notification and returns its `params`.
async fn next_event(ws: &mut Socket) -> Result<Value> {
    loop {
        let mut msg = read_json(ws).await?;
        if msg["method"] == "event" {
            return Ok(msg["params"].take());
        }
    }
}

/// Reads the next text frame (skipping pings and the like) as JSON.
async fn read_json(ws: &mut Socket) -> Result<Value> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .context("timed out waiting for the hub")?
            .ok_or_else(|| anyhow!("the hub closed the connection"))??;
        if let Message::Text(text) = msg {
            return Ok(serde_json::from_str(&text)?);
        }
    }
}
