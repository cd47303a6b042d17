//! Clients that stop reading: bounded memory, disconnection with 1008, and
//! no effect on anyone else.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use memhub::ServerConfig;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_client_that_never_reads_its_responses_is_disconnected() {
    let (hub, mut other) = hub_holding_a_big_value().await;
    let mut stuck = hub.client().await;
    let started = Instant::now();
    ask_for_the_big_value_without_reading(&mut stuck).await;
    // The hub gives up on it within about the timeout (plus the writer's own
    // wait), while the other client keeps working.
    let s = hub.wait_stats(|s| s["connections"] == 2).await; // `other` + the stats probe
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(s["connections"], 2, "{s}");
    let got = other.call("get", json!({"key": "big"})).await;
    assert_eq!(got["value"].as_str().map(str::len), Some(100_000));
    drop(stuck);
}

/// A client that stalls past `slow_client_timeout` and then reads again
/// within the hub's grace gets every response the hub still sent, then a
/// close frame with 1008 that says why; the hub counts the disconnection.
#[tokio::test]
async fn a_stalled_client_that_reads_again_in_time_sees_close_1008() {
    let (hub, mut other) = hub_holding_a_big_value().await;
    assert_eq!(slow_clients_disconnected(&hub).await, 0);

    // Read none of the responses until the hub has given up on this
    // connection.
    let mut stalled = hub.client().await;
    ask_for_the_big_value_without_reading(&mut stalled).await;
    let deadline = Instant::now() + WAIT;
    while slow_clients_disconnected(&hub).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the hub never gave up on the stalled client"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Reading again within the grace (at most 2 s) drains what was queued
    // and then the close frame.
    let close = loop {
        let next = tokio::time::timeout(WAIT, stalled.ws.next())
            .await
            .expect("timed out reading the stalled connection");
        match next {
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            other => panic!("expected responses and then a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Policy, "close code 1008: {close:?}");
    assert_eq!(close.reason.as_str(), "not reading responses");
    assert_eq!(slow_clients_disconnected(&hub).await, 1);
    let got = other.call("get", json!({"key": "big"})).await;
    assert_eq!(got["value"].as_str().map(str::len), Some(100_000));
}

/// A hub that gives up on a client after 300 ms without progress and
/// queues at most 64 KiB for it, and a client that stored a 100 KB value
/// under `big` there.
async fn hub_holding_a_big_value() -> (TestHub, Client) {
    let hub = TestHub::with_config(ServerConfig {
        slow_client_timeout: Duration::from_millis(300),
        outbound_max_bytes: 64 << 10,
        ..ServerConfig::default()
    })
    .await;
    let mut other = hub.client().await;
    other
        .call(
            "update",
            json!({"key": "big", "value": "x".repeat(100_000)}),
        )
        .await;
    (hub, other)
}

/// Asks for ~40 MB of responses (400 `get`s of `big`), more than the socket
/// buffers hold, reading none of them.
async fn ask_for_the_big_value_without_reading(c: &mut Client) {
    let frame =
        json!({"jsonrpc": "2.0", "id": 1, "method": "get", "params": {"key": "big"}}).to_string();
    for _ in 0..400 {
        // Once the hub stops reading (it waits for room), sends may block or
        // fail when it drops the connection; either way stop sending.
        match tokio::time::timeout(
            Duration::from_secs(2),
            c.ws.send(Message::text(frame.clone())),
        )
        .await
        {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
}

/// `memhub_slow_clients_disconnected_total` from `/metrics`.
async fn slow_clients_disconnected(hub: &TestHub) -> u64 {
    let (status, body) = hub.http_get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("memhub_slow_clients_disconnected_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no slow-client counter in /metrics:\n{body}"))
}

/// A subscriber that never reads while a writer pushes 50 MB through one key:
/// the hub's own RSS (a separate process) grows by less than 100 MB, the
/// writer is never held up by it, and a subscriber that reads receives every
/// event, in order, none lagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_costs_bounded_memory_and_nobody_else_misses_an_event() {
    const UPDATES: usize = 500;
    const SIZE: usize = 100_000; // 500 × 100 KB = 50 MB
    let hub = BinaryHub::start(&[], &[]);
    let url = hub.url();
    let mut w = Client::connect(&url).await;
    w.call("update", json!({"key": "big", "value": "start"}))
        .await;

    let mut stuck = Client::connect(&url).await;
    stuck.call("subscribe", json!({"key": "big"})).await;
    let mut reader = Client::connect(&url).await;
    let sub = reader.call("subscribe", json!({"key": "big"})).await;
    let first_rev = sub["rev"].as_u64().expect("snapshot rev");
    let rss_before = hub.rss_bytes();

    // The reader drains on its own task while the writer writes.
    let reading = tokio::spawn(async move {
        let mut revs = Vec::with_capacity(UPDATES);
        while revs.len() < UPDATES {
            let e = reader.next_event().await;
            assert_eq!(
                e["event"], "update",
                "the reading subscriber lagged: {}",
                e["event"]
            );
            let n = e["value"].as_str().map(str::len);
            assert_eq!(n, Some(SIZE), "event {} has the wrong value", revs.len());
            revs.push(e["rev"].as_u64().expect("rev"));
        }
        revs
    });
    let mut written = Vec::with_capacity(UPDATES);
    for i in 0..UPDATES {
        let value = format!("{i:08}{}", "x".repeat(SIZE - 8));
        let r = w
            .call("update", json!({"key": "big", "value": value}))
            .await;
        written.push(r["rev"].as_u64().expect("rev"));
    }
    let revs = tokio::time::timeout(WAIT, reading)
        .await
        .expect("the reading subscriber got every event in time")
        .expect("reader task");
    assert_eq!(
        revs, written,
        "every write reached the reading subscriber, in order"
    );
    assert!(revs[0] > first_rev);

    let growth = hub.rss_bytes().saturating_sub(rss_before);
    assert!(
        growth < 100 << 20,
        "the hub's RSS grew by {} MiB while a subscriber was stuck",
        growth >> 20
    );
    // The stuck subscriber is still connected (its events were dropped as
    // lagged, not buffered): writer, stuck and this one; the reader has gone.
    let mut check = Client::connect(&url).await;
    let stats = check.call("stats", json!({})).await;
    assert_eq!(stats["connections"], json!(3), "{stats}");
    assert_eq!(stats["subscriptions"], json!(1), "{stats}");
    drop(stuck);
    hub.stop();
}
