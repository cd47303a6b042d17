//! The hub's life around the protocol: graceful shutdown, the real binary and
//! its signals, the plain HTTP routes, keepalive pings, and binding to every
//! interface.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use memhub::{MemService, ServerConfig};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------

/// How a connection ended, as seen by a client reading it.
#[derive(Debug)]
enum End {
    /// A Close frame (and its payload).
    Close(Option<CloseFrame>),
    /// The stream ended, or failed, without a Close frame (shown in panics).
    Gone(#[allow(dead_code)] String),
}

/// Reads (skipping text frames and pings) until the connection ends, within `WAIT`.
async fn read_until_end(c: &mut Client) -> End {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, c.ws.next())
            .await
            .expect("the connection did not end in time");
        match next {
            None => return End::Gone("end of stream".into()),
            Some(Err(e)) => return End::Gone(e.to_string()),
            Some(Ok(Message::Close(frame))) => return End::Close(frame),
            Some(Ok(_)) => continue,
        }
    }
}

fn assert_going_away(end: End) {
    match end {
        End::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away, "close frame {f:?}"),
        other => panic!("expected a Close frame with code 1001, got {other:?}"),
    }
}

/// The value of one sample line of a Prometheus text exposition, e.g.
/// `memhub_requests_total{method="get",outcome="ok"}`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

fn memhub_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memhub"))
}

// ---------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_connection_with_1001_and_run_returns() {
    init_logs();
    let mut hub = TestHub::start().await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    a.call("memoize", json!({"key": "k", "value": 1})).await;
    a.call("subscribe", json!({"key": "k"})).await;
    b.call("get", json!({"key": "k"})).await;
    hub.wait_stats(|s| s["connections"] == 3).await;

    hub.handle.shutdown();
    assert!(hub.handle.is_shutdown());
    assert_going_away(read_until_end(&mut a).await);
    assert_going_away(read_until_end(&mut b).await);

    let task = hub.task.take().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run returned within 5 s")
        .expect("run task did not panic");
    assert!(result.is_ok(), "run failed: {result:?}");
    // The listener is gone: new connections are refused.
    assert!(tokio::net::TcpStream::connect(hub.addr).await.is_err());
}

// ---------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_exits_cleanly_on_sigterm() {
    let mut hub = BinaryHub::start(&[], &[("RUST_LOG", "info")]);
    assert!(
        !hub.addr.ends_with(":0"),
        "the real port is logged, not 0: {}",
        hub.addr
    );

    let mut c = Client::connect(&hub.url()).await;
    let m = c
        .call("memoize", json!({"key": "k", "value": [1, "two"]}))
        .await;
    assert_eq!(m, json!({"value": [1, "two"], "rev": 1, "created": true}));
    let g = c.call("get", json!({"key": "k"})).await;
    assert_eq!(g, json!({"value": [1, "two"], "rev": 1}));

    hub.terminate();
    assert_going_away(read_until_end(&mut c).await);
    let log = hub.stop();
    assert!(log.contains("memhub stopped"), "{log}");
}

#[test]
fn the_binary_explains_itself() {
    let out = memhub_bin().arg("--help").output().expect("memhub --help");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("serve"),
        "--help does not mention serve:\n{text}"
    );

    let out = memhub_bin()
        .args(["serve", "--help"])
        .output()
        .expect("memhub serve --help");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["--port", "MEMHUB_PORT", "--host"] {
        assert!(
            text.contains(needle),
            "serve --help does not mention {needle}:\n{text}"
        );
    }

    // A bad flag is an error, not a hub.
    let out = memhub_bin()
        .args(["serve", "--port", "not-a-port"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

// ---------------------------------------------------------------------------
// HTTP routes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_answer() {
    init_logs();
    let hub = TestHub::start().await;

    let (status, body) = hub.http_get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "ok");

    let (status, body) = hub.http_get("/").await;
    assert_eq!(status, 200);
    assert!(
        body.to_lowercase().contains("<html") || body.to_lowercase().contains("<!doctype html")
    );
    assert!(
        body.to_lowercase().contains("memhub"),
        "dashboard does not mention memhub"
    );

    // Some traffic to count: a write, a get, a failing get, an event.
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    s.call("subscribe", json!({"key": "k"})).await;
    c.call("update", json!({"key": "k", "value": 1})).await;
    c.call("get", json!({"key": "k"})).await;
    let err = c.call_err("get", json!({"key": "absent"})).await;
    assert_eq!(err["code"], -32001);
    s.next_event().await;

    let (status, m) = hub.http_get("/metrics").await;
    assert_eq!(status, 200);
    let get = |series: &str| sample(&m, series).unwrap_or_else(|| panic!("no {series} in\n{m}"));
    assert!(get("memhub_connections") >= 2.0);
    assert_eq!(get("memhub_keys"), 1.0);
    assert_eq!(get("memhub_subscriptions"), 1.0);
    assert!(get(r#"memhub_requests_total{method="get",outcome="ok"}"#) >= 1.0);
    assert!(get(r#"memhub_requests_total{method="get",outcome="error"}"#) >= 1.0);
    assert!(get(r#"memhub_requests_total{method="update",outcome="ok"}"#) >= 1.0);
    assert!(get("memhub_events_sent_total") >= 1.0);
    assert_eq!(get("memhub_lagged_events_total"), 0.0);
    assert!(get("memhub_received_bytes_total") > 0.0);
    assert!(get("memhub_sent_bytes_total") > 0.0);

    let (status, _) = hub.http_get("/no-such-page").await;
    assert_eq!(status, 404);
    hub.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Keepalive
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_keeps_readers_and_drops_the_silent() {
    init_logs();
    let interval = Duration::from_millis(100);
    let hub = TestHub::with_config(ServerConfig {
        ping_interval: interval,
        ..ServerConfig::default()
    })
    .await;

    // A client that keeps reading (tungstenite answers pings while reading),
    // until told to stop.
    let mut reader = hub.client().await;
    reader.call("version", json!({})).await;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let reading = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let deadline = started + WAIT;
        let mut pings = 0;
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                next = tokio::time::timeout_at(deadline, reader.ws.next()) => match next {
                    Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                    other => panic!("the reading client got {other:?} instead of pings"),
                },
            }
        }
        // Still connected: a request succeeds.
        let v = reader.call("version", json!({})).await;
        assert_eq!(v["name"], "memhub");
        (pings, started.elapsed(), reader)
    });
    // A client that never reads, so never answers a ping.
    let mut silent = hub.client().await;
    silent.call("version", json!({})).await;

    // The passage of time is what is tested here: the reader must survive
    // at least 5 ping intervals, the silent client must not survive 2 (plus
    // one for the tick that notices). So this sleep is the point, not a
    // synchronization.
    tokio::time::sleep(interval * 6).await;
    // The silent one is gone from the stats: the reader and the stats
    // connection itself remain.
    hub.wait_stats(|s| s["connections"] == 2).await;
    match read_until_end(&mut silent).await {
        End::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away, "{f:?}"),
        End::Close(None) => panic!("close frame without a code"),
        End::Gone(_) => {}
    }

    stop_tx.send(()).unwrap();
    let (pings, lived, _reader) = tokio::time::timeout(WAIT, reading)
        .await
        .expect("reader stops")
        .unwrap();
    assert!(lived >= interval * 5, "reader only ran {lived:?}");
    assert!(pings >= 3, "only {pings} pings in {lived:?}");
    hub.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Binding to every interface
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_on_all_interfaces_accepts_loopback_clients() {
    init_logs();
    let config = ServerConfig::default();
    assert!(config.protected_mode, "protected mode is on by default");
    let server = MemService::new("0.0.0.0", 0)
        .with_config(config)
        .bind()
        .await
        .expect("bind 0.0.0.0");
    let port = server.local_addr().port();
    assert!(server.local_addr().ip().is_unspecified());
    let handle = server.shutdown_handle();
    let task = tokio::spawn(server.run());

    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/ws")).await;
    let r = c.call("memoize", json!({"key": "k", "value": "v"})).await;
    assert_eq!(r["created"], true);
    assert_eq!(c.call("get", json!({"key": "k"})).await["value"], "v");

    handle.shutdown();
    assert_going_away(read_until_end(&mut c).await);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("hub stops")
        .unwrap()
        .unwrap();
}
