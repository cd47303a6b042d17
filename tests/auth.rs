//! Token authentication and roles, against a real hub over real sockets.

mod common;

use common::*;
use memhub::server::{Role, Tokens};
use memhub::ServerConfig;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

async fn hub_with_tokens() -> TestHub {
    let mut tokens = Tokens::new();
    tokens.add("w-token", Role::Write).expect("write token");
    tokens.add("r-token", Role::Read).expect("read token");
    TestHub::with_config(ServerConfig {
        tokens,
        ..ServerConfig::default()
    })
    .await
}

/// The HTTP status of an upgrade attempt (101 when it succeeded).
async fn upgrade_status(url: &str, headers: &[(&'static str, &str)]) -> u16 {
    let mut req = url.into_client_request().expect("request");
    for &(k, v) in headers {
        req.headers_mut()
            .insert(k, HeaderValue::from_str(v).expect("header"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected upgrade failure: {e}"),
    }
}

async fn client_with(url: &str, bearer: Option<&str>) -> Client {
    let mut req = url.into_client_request().expect("request");
    if let Some(t) = bearer {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    Client::from_ws(ws)
}

#[tokio::test]
async fn upgrades_need_a_valid_token() {
    let hub = hub_with_tokens().await;
    let url = hub.url();
    assert_eq!(upgrade_status(&url, &[]).await, 401);
    assert_eq!(
        upgrade_status(&url, &[("authorization", "Bearer nope")]).await,
        401
    );
    assert_eq!(
        upgrade_status(&url, &[("authorization", "Basic w-token")]).await,
        401
    );
    assert_eq!(
        upgrade_status(&url, &[("authorization", "Bearer w-token")]).await,
        101
    );
    assert_eq!(
        upgrade_status(&format!("{url}?token=r-token"), &[]).await,
        101
    );
    assert_eq!(upgrade_status(&format!("{url}?token=bad"), &[]).await, 401);
    // The token check comes before the origin check: a bad token with a
    // foreign origin is 401, a good one with a foreign origin is 403.
    let evil = ("origin", "http://evil.example");
    assert_eq!(upgrade_status(&url, &[evil]).await, 401);
    assert_eq!(
        upgrade_status(&url, &[evil, ("authorization", "Bearer w-token")]).await,
        403
    );
    // The refusal explains itself.
    let (status, body) = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(hub.addr).await.expect("tcp");
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            hub.addr
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).to_string();
        (text[9..12].to_string(), text)
    };
    assert_eq!(status, "401");
    assert!(
        body.contains("Authorization: Bearer TOKEN") && body.contains("?token="),
        "{body}"
    );
    assert!(
        body.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{body}"
    );
}

#[tokio::test]
async fn a_read_token_reads_and_watches_but_never_writes() {
    let hub = hub_with_tokens().await;
    let mut w = client_with(&hub.url(), Some("w-token")).await;
    w.call("update", json!({"key": "k", "value": 1})).await;
    let mut r = client_with(&hub.url(), Some("r-token")).await;
    assert_eq!(r.call("get", json!({"key": "k"})).await["value"], 1);
    assert_eq!(r.call("is_memoized", json!({"key": "k"})).await, true);
    assert_eq!(r.call("keys", json!({})).await["keys"][0]["key"], "k");
    r.call("stats", json!({})).await;
    // `version` names the connection's role.
    assert_eq!(r.call("version", json!({})).await["role"], "read");
    assert_eq!(w.call("version", json!({})).await["role"], "write");
    let sub = r.call("subscribe", json!({"key": "k"})).await;
    for (method, params) in [
        ("memoize", json!({"key": "n", "value": 1})),
        ("update", json!({"key": "k", "value": 2})),
        ("delete", json!({"key": "k"})),
        ("patch", json!({"key": "k", "ops": []})),
        ("merge", json!({"key": "k", "value": {}})),
        ("incr", json!({"key": "k"})),
        ("lock", json!({"name": "l"})),
        ("unlock", json!({"name": "l", "token": "t"})),
    ] {
        let err = expect_err(&mut r, method, params, -32010).await;
        assert_eq!(err["data"], json!({ "method": method }), "{err}");
    }
    // The role is checked before the params' shape.
    r.send_text(r#"{"jsonrpc":"2.0","id":"pos","method":"update","params":["k",9]}"#)
        .await;
    let resp = r.recv_response().await;
    assert_eq!(resp["error"]["code"], -32010, "{resp}");
    // Unknown methods are still "not found", not "forbidden".
    expect_err(&mut r, "frobnicate", json!({}), -32601).await;
    // Nothing changed, and the watcher still sees the writer's changes.
    w.call("update", json!({"key": "k", "value": 3})).await;
    let ev = r.next_event().await;
    assert_eq!(ev["value"], 3);
    assert_eq!(ev["sub"], sub["sub"]);
    assert_eq!(
        r.call("unsubscribe", json!({"sub": sub["sub"]})).await,
        true
    );
    assert_eq!(w.call("get", json!({"key": "k"})).await["rev"], 2);
}

#[tokio::test]
async fn the_rust_client_and_cli_present_their_token() {
    let hub = hub_with_tokens().await;
    let opts = |t: &str| memhub::ClientOptions {
        token: Some(t.to_string()),
        max_retry: 0,
        ..Default::default()
    };
    let c = memhub::Client::connect_with(&hub.url(), opts("w-token"))
        .await
        .expect("write client");
    c.update("x", &5).await.expect("write");
    let ro = memhub::Client::connect_with(&hub.url(), opts("r-token"))
        .await
        .expect("read client");
    assert_eq!(ro.get::<i32>("x").await.expect("read"), 5);
    assert!(matches!(
        ro.update("x", &6).await,
        Err(memhub::Error::Forbidden { .. })
    ));
    let none = memhub::Client::connect_with(&hub.url(), opts("wrong")).await;
    assert!(
        matches!(none, Err(memhub::Error::Connection(_))),
        "{none:?}"
    );

    let url = hub.url();
    // Run the binary off the runtime's thread: the hub serves on this one.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_memhub"))
            .args(["get", "x", "--url", &url])
            .env("MEMHUB_TOKEN", "r-token")
            .output()
    })
    .await
    .expect("join")
    .expect("run memhub get");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"value\":5"));
}

#[test]
fn tokens_never_show_in_debug_output() {
    let mut tokens = Tokens::new();
    tokens
        .add("super-secret-value", Role::Write)
        .expect("token");
    let cfg = ServerConfig {
        tokens,
        ..ServerConfig::default()
    };
    assert!(!format!("{cfg:?}").contains("super-secret-value"));
}

/// The real binary at the most verbose log level, driven with right and wrong
/// tokens in the query and in headers (and a token file): no token ever
/// appears in its log or in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_log_or_metrics() {
    const WRITE: &str = "write-tok-3f9a1c";
    const READ: &str = "read-tok-77b2e0";
    const FILED: &str = "filed-tok-c41d88";
    const WRONG: &str = "wrong-tok-0e5b19";
    let dir = std::env::temp_dir().join(format!("memhub-auth-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let token_file = dir.join("tokens");
    std::fs::write(&token_file, format!("# test\nread {FILED}\n")).expect("token file");

    let token_file_arg = token_file.to_string_lossy().into_owned();
    let hub = BinaryHub::start(
        &[
            "--token",
            WRITE,
            "--read-token",
            READ,
            "--token-file",
            &token_file_arg,
        ],
        &[("RUST_LOG", "trace")],
    );
    let addr = hub.addr.clone();
    let url = format!("ws://{addr}/ws");

    let mut w = Client::connect(&format!("{url}?token={WRITE}")).await;
    w.call("update", json!({"key": "k", "value": 1})).await;
    let mut r = client_with(&url, Some(READ)).await;
    r.call("get", json!({"key": "k"})).await;
    expect_err(&mut r, "update", json!({"key": "k", "value": 2}), -32010).await;
    let mut f = Client::connect(&format!("{url}?token={FILED}")).await;
    f.call("subscribe", json!({"key": "k"})).await;
    for attempt in [
        format!("{url}?token={WRONG}"),
        format!("{url}?x=1&token={WRONG}&y=2"),
    ] {
        assert_eq!(upgrade_status(&attempt, &[]).await, 401);
    }
    let bearer = format!("Bearer {WRONG}");
    assert_eq!(
        upgrade_status(&url, &[("authorization", bearer.as_str())]).await,
        401
    );
    // A plain HTTP request with a token in its query string.
    let (_, _, metrics) = http_request(&addr, &format!("/metrics?token={WRONG}"), &[]).await;
    assert!(metrics.contains("memhub_"), "{metrics}");
    drop((w, r, f));

    let log = hub.stop();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        log.contains("upgrade refused"),
        "the refusals are logged: {log}"
    );
    for token in [WRITE, READ, FILED, WRONG] {
        assert!(!log.contains(token), "token {token} in the log:\n{log}");
        assert!(!metrics.contains(token), "token {token} in /metrics");
    }
}
