//! Clients that stop reading: bounded memory, disconnection with 1008, and
//! no effect on anyone else.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use memhub::ServerConfig;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_client_that_never_reads_its_responses_is_disconnected() {
    let hub = TestHub::with_config(ServerConfig {
        slow_client_timeout: Duration::from_millis(300),
        outbound_max_bytes: 64 << 10,
        ..ServerConfig::default()
    })
    .await;
    let mut other = hub.client().await;
    let big = "x".repeat(100_000);
    other
        .call("update", json!({"key": "big", "value": big}))
        .await;

    // Ask for ~40 MB of responses and never read any of them.
    let mut stuck = hub.client().await;
    let frame =
        json!({"jsonrpc": "2.0", "id": 1, "method": "get", "params": {"key": "big"}}).to_string();
    let started = Instant::now();
    for _ in 0..400 {
        // Once the hub stops reading (it waits for room), sends may block or
        // fail when it drops the connection; either way stop sending.
        match tokio::time::timeout(
            Duration::from_secs(2),
            stuck.ws.send(Message::text(frame.clone())),
        )
        .await
        {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
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
