//! Every limit of PROTOCOL.md "Limits", with a small configured value and, where
//! cheap, at its default: what is refused, with which code and data, and that
//! bad input never closes the connection (except an oversized message), never
//! disturbs other connections and never changes stored data.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use memhub::ServerConfig;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

// ---------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------

/// Proves the connection still works: a normal request succeeds.
async fn assert_usable(c: &mut Client) {
    let v = c.call("version", json!({})).await;
    assert_eq!(v["name"], json!("memhub"), "connection still usable: {v}");
}

/// A request that must fail with `code`; afterwards the same connection must
/// still answer a normal request. Returns the error object.
async fn expect_err(c: &mut Client, method: &str, params: Value, code: i64) -> Value {
    let err = common::expect_err(c, method, params, code).await;
    assert_usable(c).await;
    err
}

/// A raw frame that must be answered with one error (`id`, `code`); the
/// connection must stay usable. Returns the error object.
async fn expect_raw_err(c: &mut Client, frame: &str, id: Value, code: i64) -> Value {
    c.send_text(frame).await;
    let resp = c.recv_response().await;
    let err = assert_error(&resp, &id, code);
    assert_usable(c).await;
    err
}

fn update_frame(id: u64, key: &str, value_json: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"update","params":{{"key":{},"value":{value_json}}}}}"#,
        json!(key)
    )
}

/// `depth` nested arrays around `1`.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// Reads frames until a Close frame arrives and returns it.
async fn expect_close(c: &mut Client) -> CloseFrame {
    loop {
        let next = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("timed out waiting for a close frame");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(Message::Close(None))) => panic!("close frame without a status code"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => panic!("expected a close frame, got {other:?}"),
            Some(Err(e)) => panic!("connection failed without a close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

type RawWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One request over a bare WebSocket; returns the response.
async fn ws_request(ws: &mut RawWs, id: &str, method: &str, params: Value) -> Value {
    let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send");
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a response")
            .expect("connection ended")
            .expect("websocket error");
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("valid JSON");
                assert_eq!(v["id"], json!(id), "response to {method}: {v}");
                return v;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Tries one WebSocket upgrade; `Err(status, headers)` on an HTTP refusal.
async fn try_connect(hub: &TestHub) -> Result<RawWs, (u16, tungstenite::http::HeaderMap)> {
    match tokio_tungstenite::connect_async(hub.url()).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            Err((resp.status().as_u16(), resp.headers().clone()))
        }
        Err(e) => panic!("upgrade failed other than with an HTTP response: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

#[tokio::test]
async fn key_length_limit() {
    let hub = TestHub::with_config(ServerConfig {
        max_key_bytes: 8,
        ..ServerConfig::default()
    })
    .await;
    let mut c = hub.client().await;

    // Exactly the maximum works everywhere, counted in bytes.
    for key in ["12345678", "éééé"] {
        assert_eq!(key.len(), 8);
        let m = c.call("memoize", json!({"key": key, "value": 1})).await;
        assert_eq!(m["created"], json!(true));
        c.call("update", json!({"key": key, "value": 2})).await;
        assert_eq!(c.call("get", json!({"key": key})).await["value"], json!(2));
        assert_eq!(
            c.call("is_memoized", json!({"key": key})).await,
            json!(true)
        );
        assert_eq!(
            c.call("subscribe", json!({"key": key})).await["exists"],
            json!(true)
        );
    }
    c.call("delete", json!({"key": "éééé"})).await;
    let rev = c.call("stats", json!({})).await["rev"].clone();

    // One byte over, and empty: -32602 from every method that takes a key.
    for key in ["123456789", "ééééx", "ééééé", ""] {
        expect_err(&mut c, "memoize", json!({"key": key, "value": 1}), -32602).await;
        expect_err(&mut c, "update", json!({"key": key, "value": 1}), -32602).await;
        expect_err(&mut c, "get", json!({"key": key}), -32602).await;
        expect_err(&mut c, "delete", json!({"key": key}), -32602).await;
        expect_err(&mut c, "is_memoized", json!({"key": key}), -32602).await;
        expect_err(&mut c, "subscribe", json!({"key": key}), -32602).await;
        expect_err(
            &mut c,
            "update",
            json!({"key": key, "value": 1, "if_rev": 0}),
            -32602,
        )
        .await;
    }
    // Nothing was written by the refused requests.
    let s = c.call("stats", json!({})).await;
    assert_eq!(s["rev"], rev, "refused writes used no rev: {s}");
    assert_eq!(s["keys"], json!(1), "{s}");
    let page = c.call("keys", json!({})).await;
    assert_eq!(page["keys"][0]["key"], json!("12345678"), "{page}");
    assert_eq!(page["keys"].as_array().map(Vec::len), Some(1), "{page}");
}

#[tokio::test]
async fn key_length_limit_default() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let max = "k".repeat(1024);
    let over = "k".repeat(1025);
    assert_eq!(
        c.call("update", json!({"key": max, "value": 1})).await["created"],
        json!(true)
    );
    assert_eq!(c.call("get", json!({"key": max})).await["value"], json!(1));
    expect_err(&mut c, "update", json!({"key": over, "value": 1}), -32602).await;
    expect_err(&mut c, "get", json!({"key": over}), -32602).await;
    expect_err(&mut c, "get", json!({"key": ""}), -32602).await;
    assert_eq!(c.call("stats", json!({})).await["keys"], json!(1));
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

#[tokio::test]
async fn value_size_limit_counts_compact_json() {
    let hub = TestHub::with_config(ServerConfig {
        max_value_bytes: 16,
        ..ServerConfig::default()
    })
    .await;
    let mut c = hub.client().await;

    // Exactly 16 bytes of compact JSON: a 14-char string plus quotes.
    let max = json!("abcdefghijklmn");
    assert_eq!(max.to_string().len(), 16);
    let w = c.call("update", json!({"key": "k", "value": max})).await;
    let rev = w["rev"].clone();

    // 17 bytes: refused by update (replace and insert) and memoize; nothing stored.
    let over = json!("abcdefghijklmno");
    expect_err(&mut c, "update", json!({"key": "k", "value": over}), -32602).await;
    expect_err(
        &mut c,
        "update",
        json!({"key": "new", "value": over}),
        -32602,
    )
    .await;
    expect_err(
        &mut c,
        "update",
        json!({"key": "k", "value": over, "if_rev": rev}),
        -32602,
    )
    .await;
    expect_err(
        &mut c,
        "memoize",
        json!({"key": "new", "value": over}),
        -32602,
    )
    .await;
    expect_err(
        &mut c,
        "memoize",
        json!({"key": "n2", "value": [1, 2, 3, 4, 5, 6, 7, 8, 9]}),
        -32602,
    )
    .await;
    assert_eq!(
        c.call("get", json!({"key": "k"})).await,
        json!({"value": max, "rev": rev})
    );
    assert_eq!(
        c.call("is_memoized", json!({"key": "new"})).await,
        json!(false)
    );
    assert_eq!(
        c.call("is_memoized", json!({"key": "n2"})).await,
        json!(false)
    );
    assert_eq!(
        c.call("stats", json!({})).await["rev"],
        rev,
        "refused writes used no rev"
    );

    // Whitespace in the request does not count: 15 bytes compact, 27 as sent.
    let spaced = "[ 1, 2, 3, 4, 5, 6, 7 ]\n\t ";
    c.send_text(update_frame(9001, "sp", spaced)).await;
    let resp = c.recv_response().await;
    assert!(
        resp.get("error").is_none(),
        "whitespace counted against the limit: {resp}"
    );
    let page = c.call("keys", json!({"prefix": "sp"})).await;
    assert_eq!(page["keys"][0]["bytes"], json!(15), "{page}");
    // Whitespace inside strings does count: 17 bytes compact.
    let frame = update_frame(9002, "sp", r#""a b c d e f g h""#);
    expect_raw_err(&mut c, &frame, json!(9002), -32602).await;
    assert_eq!(
        c.call("get", json!({"key": "sp"})).await["value"],
        json!([1, 2, 3, 4, 5, 6, 7])
    );
}

#[tokio::test]
async fn value_size_limit_default() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let max = "x".repeat((1 << 20) - 2); // plus two quotes: exactly 1 MiB
    let w = c.call("update", json!({"key": "big", "value": max})).await;
    assert_eq!(w["created"], json!(true));
    let over = "x".repeat((1 << 20) - 1);
    expect_err(
        &mut c,
        "update",
        json!({"key": "big", "value": over}),
        -32602,
    )
    .await;
    expect_err(
        &mut c,
        "memoize",
        json!({"key": "big2", "value": over}),
        -32602,
    )
    .await;
    let page = c.call("keys", json!({})).await;
    assert_eq!(
        page,
        json!({"keys": [{"key": "big", "rev": w["rev"], "bytes": 1 << 20}], "next": null})
    );
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

#[tokio::test]
async fn message_over_limit_closes_with_1009_and_disturbs_nobody() {
    let hub = TestHub::with_config(ServerConfig {
        max_message_bytes: 1024,
        ..ServerConfig::default()
    })
    .await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let w = b
        .call("update", json!({"key": "keep", "value": {"v": 1}}))
        .await;
    let sub = b.call("subscribe", json!({"key": "keep"})).await;
    assert_eq!(sub["exists"], json!(true));

    // A frame of exactly the limit is accepted.
    let head = update_frame(1, "exact", r#""""#);
    let pad = "p".repeat(1024 - head.len());
    let exact = update_frame(1, "exact", &format!("\"{pad}\""));
    assert_eq!(exact.len(), 1024);
    a.send_text(exact).await;
    let resp = a.recv_response().await;
    assert!(
        resp.get("error").is_none(),
        "a message of exactly the limit: {resp}"
    );
    assert_usable(&mut a).await;

    // One byte more closes the connection with 1009.
    let over = update_frame(2, "overx", &format!("\"{pad}p\""));
    assert_eq!(over.len(), 1025);
    a.send_text(over).await;
    let close = expect_close(&mut a).await;
    assert_eq!(close.code, CloseCode::Size, "close code 1009: {close:?}");
    assert_eq!(
        close.reason.as_str(),
        "max length: 1024",
        "the limit is named"
    );
    drop(a);

    // The other connection and the stored data are untouched.
    assert_eq!(
        b.call("get", json!({"key": "keep"})).await,
        json!({"value": {"v": 1}, "rev": w["rev"]})
    );
    assert_eq!(
        b.call("is_memoized", json!({"key": "overx"})).await,
        json!(false)
    );
    assert_eq!(
        b.call("is_memoized", json!({"key": "exact"})).await,
        json!(true)
    );
    let u = b.call("update", json!({"key": "keep", "value": 2})).await;
    let ev = b.next_event().await;
    assert_eq!(ev["rev"], u["rev"], "b's subscription still delivers: {ev}");
    // The hub released the closed connection.
    hub.wait_stats(|s| s["connections"] == json!(2)).await;
}

/// Sends `text` as a fragmented text message: frames of at most `chunk` bytes.
async fn send_fragmented(c: &mut Client, text: &str, chunk: usize) {
    let bytes = text.as_bytes();
    let parts: Vec<&[u8]> = bytes.chunks(chunk).collect();
    for (i, part) in parts.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(part.to_vec(), opcode, i + 1 == parts.len());
        c.ws.send(Message::Frame(frame))
            .await
            .expect("send fragment");
    }
}

#[tokio::test]
async fn message_limit_applies_to_whole_fragmented_messages() {
    let hub = TestHub::with_config(ServerConfig {
        max_message_bytes: 1024,
        ..ServerConfig::default()
    })
    .await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;

    // Fragments of a message under the limit are reassembled and run.
    let small = update_frame(1, "frag", &format!("\"{}\"", "f".repeat(600)));
    assert!(small.len() < 1024);
    send_fragmented(&mut a, &small, 100).await;
    let resp = a.recv_response().await;
    assert!(
        resp.get("error").is_none(),
        "a fragmented message under the limit: {resp}"
    );
    assert_eq!(resp["id"], json!(1));
    assert_usable(&mut a).await;

    // Every frame under the limit, the message over it: 1009.
    let big = update_frame(2, "frag2", &format!("\"{}\"", "g".repeat(1500)));
    send_fragmented(&mut a, &big, 500).await;
    let close = expect_close(&mut a).await;
    assert_eq!(close.code, CloseCode::Size, "close code 1009: {close:?}");
    assert_eq!(
        close.reason.as_str(),
        "max length: 1024",
        "the limit is named"
    );
    assert_eq!(
        b.call("is_memoized", json!({"key": "frag2"})).await,
        json!(false)
    );
    assert_eq!(
        b.call("get", json!({"key": "frag"})).await["value"],
        json!("f".repeat(600))
    );
}

#[tokio::test]
async fn binary_message_over_limit_also_closes_with_1009() {
    let hub = TestHub::with_config(ServerConfig {
        max_message_bytes: 1024,
        ..ServerConfig::default()
    })
    .await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    a.ws.send(Message::binary(vec![b'x'; 1025]))
        .await
        .expect("send binary");
    let close = expect_close(&mut a).await;
    assert_eq!(close.code, CloseCode::Size, "close code 1009: {close:?}");
    assert_usable(&mut b).await;
}

#[tokio::test]
async fn message_over_default_limit_closes_with_1009() {
    let hub = TestHub::start().await;
    let a = hub.client().await;
    let mut b = hub.client().await;
    b.call("update", json!({"key": "keep", "value": 1})).await;
    let over = update_frame(1, "huge", &format!("\"{}\"", "x".repeat(16 << 20)));
    assert!(over.len() > 16 << 20);
    // Send from another task, as a browser does, and read meanwhile: the send
    // itself may fail once the hub has given up on the connection.
    let (mut tx, mut rx) = a.ws.split();
    let sender = tokio::spawn(async move { tx.send(Message::text(over)).await });
    let close = loop {
        let next = tokio::time::timeout(WAIT, rx.next())
            .await
            .expect("timed out waiting for a close frame");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close frame with 1009, got {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Size, "close code 1009: {close:?}");
    let _ = sender.await;
    assert_eq!(
        b.call("get", json!({"key": "keep"})).await["value"],
        json!(1)
    );
    assert_eq!(
        b.call("is_memoized", json!({"key": "huge"})).await,
        json!(false)
    );
}

/// Breaking the WebSocket protocol itself (not JSON-RPC) fails the
/// connection as RFC 6455 requires, with the close code that names the
/// violation; other connections and the stored data are untouched.
#[tokio::test]
async fn websocket_protocol_violations_close_with_their_rfc_codes() {
    use tokio::io::AsyncWriteExt;
    let hub = TestHub::start().await;
    let mut b = hub.client().await;
    b.call("update", json!({"key": "keep", "value": 1})).await;

    // A text frame that is not UTF-8: 1007.
    let mut a = hub.client().await;
    let frame = Frame::message(vec![b'"', 0xff, 0xfe, b'"'], OpCode::Data(Data::Text), true);
    a.ws.send(Message::Frame(frame)).await.expect("send frame");
    let close = expect_close(&mut a).await;
    assert_eq!(close.code, CloseCode::Invalid, "close code 1007: {close:?}");

    // A client frame without a mask: 1002.
    let mut a = hub.client().await;
    let MaybeTlsStream::Plain(tcp) = a.ws.get_mut() else {
        panic!("the test hub speaks plain WebSocket");
    };
    tcp.write_all(&[0x81, 0x02, b'{', b'}'])
        .await
        .expect("write an unmasked frame");
    let close = expect_close(&mut a).await;
    assert_eq!(
        close.code,
        CloseCode::Protocol,
        "close code 1002: {close:?}"
    );

    // A continuation frame with no message to continue: 1002.
    let mut a = hub.client().await;
    let frame = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Continue), true);
    a.ws.send(Message::Frame(frame)).await.expect("send frame");
    let close = expect_close(&mut a).await;
    assert_eq!(
        close.code,
        CloseCode::Protocol,
        "close code 1002: {close:?}"
    );

    assert_usable(&mut b).await;
    assert_eq!(
        b.call("get", json!({"key": "keep"})).await["value"],
        json!(1)
    );
}

// ---------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------

fn update_batch(n: usize, prefix: &str, with_ids: bool) -> String {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            let mut r = json!({"jsonrpc": "2.0", "method": "update",
                               "params": {"key": format!("{prefix}{i}"), "value": i}});
            if with_ids {
                r["id"] = json!(i);
            }
            r
        })
        .collect();
    Value::Array(items).to_string()
}

#[tokio::test]
async fn batch_over_limit_is_refused_whole() {
    let hub = TestHub::with_config(ServerConfig {
        max_batch: 3,
        ..ServerConfig::default()
    })
    .await;
    let mut c = hub.client().await;

    // Over the limit: one -32011, id null, and none of the requests ran,
    // with or without ids.
    for with_ids in [true, false] {
        let frame = update_batch(4, "over", with_ids);
        let err = expect_raw_err(&mut c, &frame, Value::Null, -32011).await;
        assert_eq!(err["data"], json!({"limit": "batch", "max": 3}));
    }
    // Invalid elements count too.
    let err = expect_raw_err(&mut c, "[1,2,3,4]", Value::Null, -32011).await;
    assert_eq!(err["data"], json!({"limit": "batch", "max": 3}));
    let s = c.call("stats", json!({})).await;
    assert_eq!(
        s["keys"],
        json!(0),
        "no request of a refused batch ran: {s}"
    );
    assert_eq!(s["rev"], json!(0), "{s}");

    // Exactly the limit runs.
    c.send_text(update_batch(3, "ok", true)).await;
    let resp = c.recv_response().await;
    let arr = resp.as_array().unwrap_or_else(|| panic!("array: {resp}"));
    assert_eq!(arr.len(), 3);
    for (i, r) in arr.iter().enumerate() {
        assert_eq!(r["id"], json!(i));
        assert_eq!(r["result"]["created"], json!(true), "{r}");
    }
    assert_eq!(c.call("stats", json!({})).await["keys"], json!(3));
}

#[tokio::test]
async fn batch_limit_default() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let err = expect_raw_err(&mut c, &update_batch(1001, "o", true), Value::Null, -32011).await;
    assert_eq!(err["data"], json!({"limit": "batch", "max": 1000}));
    assert_eq!(c.call("stats", json!({})).await["keys"], json!(0));

    c.send_text(update_batch(1000, "k", true)).await;
    let resp = c.recv_response().await;
    let arr = resp.as_array().unwrap_or_else(|| panic!("array expected"));
    assert_eq!(arr.len(), 1000);
    assert!(arr.iter().all(|r| r["result"]["created"] == json!(true)));
    assert_eq!(c.call("stats", json!({})).await["keys"], json!(1000));
}

// ---------------------------------------------------------------------------
// Nesting
// ---------------------------------------------------------------------------

#[tokio::test]
async fn nesting_limit() {
    let hub = TestHub::with_config(ServerConfig {
        max_nesting: 8,
        ..ServerConfig::default()
    })
    .await;
    let mut c = hub.client().await;

    // The request object and params are 2 levels; 6 more is exactly 8.
    let at_limit = update_frame(1, "deep", &nested(6));
    c.send_text(at_limit).await;
    let resp = c.recv_response().await;
    assert!(
        resp.get("error").is_none(),
        "nesting at exactly the limit is accepted: {resp}"
    );
    let want: Value = serde_json::from_str(&nested(6)).expect("JSON");
    assert_eq!(c.call("get", json!({"key": "deep"})).await["value"], want);
    let rev = c.call("stats", json!({})).await["rev"].clone();

    // One more: -32700, id null, nothing written, connection usable.
    expect_raw_err(
        &mut c,
        &update_frame(2, "deep", &nested(7)),
        Value::Null,
        -32700,
    )
    .await;
    expect_raw_err(
        &mut c,
        &update_frame(3, "deeper", &nested(7)),
        Value::Null,
        -32700,
    )
    .await;
    expect_raw_err(&mut c, &nested(9), Value::Null, -32700).await;
    // Objects count like arrays.
    let objs = format!("{}1{}", r#"{"a":"#.repeat(7), "}".repeat(7));
    expect_raw_err(&mut c, &update_frame(4, "obj", &objs), Value::Null, -32700).await;
    // The batch array counts as a level.
    let batch = format!("[{}]", update_frame(5, "deep", &nested(6)));
    expect_raw_err(&mut c, &batch, Value::Null, -32700).await;
    // Brackets inside strings do not count.
    let stringy = update_frame(6, "s", &json!("[[[[[[[[[[{{{{{{{{{{").to_string());
    c.send_text(stringy).await;
    let resp = c.recv_response().await;
    assert!(
        resp.get("error").is_none(),
        "brackets inside strings are not nesting: {resp}"
    );

    let s = c.call("stats", json!({})).await;
    assert_eq!(
        s["rev"].as_u64(),
        rev.as_u64().map(|r| r + 1),
        "only the string write ran: {s}"
    );
    assert_eq!(c.call("get", json!({"key": "deep"})).await["value"], want);
    assert_eq!(
        c.call("is_memoized", json!({"key": "deeper"})).await,
        json!(false)
    );
}

#[tokio::test]
async fn nesting_limit_default_and_raised() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    c.send_text(update_frame(1, "d128", &nested(126))).await;
    let resp = c.recv_response().await;
    assert!(
        resp.get("error").is_none(),
        "depth 128 is accepted by default: {resp}"
    );
    expect_raw_err(
        &mut c,
        &update_frame(2, "d129", &nested(127)),
        Value::Null,
        -32700,
    )
    .await;
    // A hostile, very deep frame is refused cheaply and the connection survives.
    expect_raw_err(&mut c, &"[".repeat(200_000), Value::Null, -32700).await;
    assert_eq!(
        c.call("is_memoized", json!({"key": "d128"})).await,
        json!(true)
    );
    assert_eq!(
        c.call("is_memoized", json!({"key": "d129"})).await,
        json!(false)
    );

    // A raised limit is honoured exactly too.
    let hub = TestHub::with_config(ServerConfig {
        max_nesting: 300,
        ..ServerConfig::default()
    })
    .await;
    let mut c = hub.client().await;
    c.send_text(update_frame(1, "d300", &nested(298))).await;
    let resp = c.recv_response().await;
    assert!(
        resp.get("error").is_none(),
        "depth 300 with max_nesting 300: {resp}"
    );
    expect_raw_err(
        &mut c,
        &update_frame(2, "d301", &nested(299)),
        Value::Null,
        -32700,
    )
    .await;
    assert_eq!(
        c.call("is_memoized", json!({"key": "d300"})).await,
        json!(true)
    );
}

// ---------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------

#[tokio::test]
async fn subscriptions_per_connection_limit() {
    let hub = TestHub::with_config(ServerConfig {
        max_subscriptions: 3,
        ..ServerConfig::default()
    })
    .await;
    let mut c = hub.client().await;
    let s1 = c.call("subscribe", json!({"key": "a"})).await;
    c.call("subscribe", json!({"prefix": "b"})).await;
    c.call("subscribe", json!({"key": "a"})).await;

    for params in [json!({"key": "x"}), json!({"prefix": ""})] {
        let err = expect_err(&mut c, "subscribe", params, -32011).await;
        assert_eq!(err["data"], json!({"limit": "subscriptions", "max": 3}));
    }
    assert_eq!(
        hub.stats().await["subscriptions"],
        json!(3),
        "refused ones were not registered"
    );

    // The limit is per connection.
    let mut other = hub.client().await;
    for k in ["p", "q", "r"] {
        other.call("subscribe", json!({"key": k})).await;
    }
    expect_err(&mut other, "subscribe", json!({"key": "s"}), -32011).await;

    // After an unsubscribe, exactly one more fits.
    assert_eq!(
        c.call("unsubscribe", json!({"sub": s1["sub"]})).await,
        json!(true)
    );
    let again = c.call("subscribe", json!({"key": "x"})).await;
    assert_eq!(again["exists"], json!(false));
    let err = expect_err(&mut c, "subscribe", json!({"key": "y"}), -32011).await;
    assert_eq!(err["data"], json!({"limit": "subscriptions", "max": 3}));

    // The new one works.
    let w = other.call("update", json!({"key": "x", "value": 1})).await;
    let ev = c.next_event().await;
    assert_eq!(
        ev,
        json!({"sub": again["sub"], "key": "x", "event": "update", "value": 1, "rev": w["rev"]})
    );
}

#[tokio::test]
async fn subscriptions_limit_default() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    for chunk in 0..10 {
        let items: Vec<Value> = (0..1000)
            .map(|i| {
                json!({"jsonrpc": "2.0", "id": i, "method": "subscribe",
                            "params": {"key": format!("k{chunk}-{i}")}})
            })
            .collect();
        c.send_text(Value::Array(items).to_string()).await;
        let resp = c.recv_response().await;
        let arr = resp.as_array().unwrap_or_else(|| panic!("array expected"));
        assert!(
            arr.iter().all(|r| r["result"]["exists"] == json!(false)),
            "subscribe failed"
        );
    }
    let err = expect_err(&mut c, "subscribe", json!({"prefix": "z"}), -32011).await;
    assert_eq!(
        err["data"],
        json!({"limit": "subscriptions", "max": 10_000})
    );
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

#[tokio::test]
async fn connection_cap_answers_503_with_retry_after() {
    let hub = TestHub::with_config(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    })
    .await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    a.call("update", json!({"key": "k", "value": 1})).await;

    for _ in 0..3 {
        match try_connect(&hub).await {
            Ok(_) => panic!("a third connection was accepted over max_connections 2"),
            Err((status, headers)) => {
                assert_eq!(status, 503);
                let retry = headers
                    .get("retry-after")
                    .expect("a 503 carries Retry-After")
                    .to_str()
                    .expect("Retry-After is text");
                assert!(!retry.trim().is_empty(), "Retry-After has a value");
            }
        }
    }
    // Plain HTTP still answers, and both clients keep working.
    assert_eq!(hub.http_get("/healthz").await.0, 200);
    assert_eq!(a.call("get", json!({"key": "k"})).await["value"], json!(1));
    b.call("update", json!({"key": "k", "value": 2})).await;
    assert_eq!(a.call("get", json!({"key": "k"})).await["value"], json!(2));

    // Once b is gone and the hub noticed, a new connection fits.
    b.ws.close(None).await.expect("close b");
    drop(b);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut c = loop {
        match try_connect(&hub).await {
            Ok(ws) => break ws,
            Err((503, _)) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot was never released"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((status, _)) => panic!("unexpected HTTP {status}"),
        }
    };
    let r = ws_request(&mut c, "c1", "get", json!({"key": "k"})).await;
    assert_eq!(r["result"]["value"], json!(2), "{r}");
    assert_eq!(a.call("get", json!({"key": "k"})).await["value"], json!(2));
    // The cap still holds.
    assert!(
        matches!(try_connect(&hub).await, Err((503, _))),
        "the cap is still 2"
    );
    let r = ws_request(&mut c, "c2", "stats", json!({})).await;
    assert_eq!(r["result"]["connections"], json!(2), "{r}");
}

// ---------------------------------------------------------------------------
// Binary frames and bad input in general
// ---------------------------------------------------------------------------

#[tokio::test]
async fn binary_frame_is_an_invalid_request() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let request = update_frame(1, "bin", "1");
    for payload in [vec![0u8, 1, 2, 255], Vec::new(), request.into_bytes()] {
        c.ws.send(Message::binary(payload))
            .await
            .expect("send binary");
        let resp = c.recv_response().await;
        assert_error(&resp, &Value::Null, -32600);
        assert_usable(&mut c).await;
    }
    assert_eq!(
        c.call("is_memoized", json!({"key": "bin"})).await,
        json!(false),
        "a binary frame never runs"
    );
}

#[tokio::test]
async fn bad_input_never_disturbs_others_or_data() {
    let hub = TestHub::with_config(ServerConfig {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_batch: 3,
        max_nesting: 8,
        max_subscriptions: 2,
        ..ServerConfig::default()
    })
    .await;
    let mut good = hub.client().await;
    let w = good
        .call("update", json!({"key": "keep", "value": [1]}))
        .await;
    let sub = good.call("subscribe", json!({"prefix": ""})).await;

    let mut bad = hub.client().await;
    bad.call("subscribe", json!({"key": "a"})).await;
    bad.call("subscribe", json!({"key": "b"})).await;
    let frames: Vec<(String, Value, i64)> = vec![
        ("{".into(), Value::Null, -32700),
        ("5".into(), Value::Null, -32600),
        ("[]".into(), Value::Null, -32600),
        (update_batch(4, "x", true), Value::Null, -32011),
        (nested(9), Value::Null, -32700),
        (update_frame(1, "keep", &nested(7)), Value::Null, -32700),
        (update_frame(2, "123456789", "1"), json!(2), -32602),
        (
            update_frame(3, "keep", r#""0123456789abcdef""#),
            json!(3),
            -32602,
        ),
        (update_frame(4, "", "1"), json!(4), -32602),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"subscribe","params":{"key":"c"}}"#.into(),
            json!(5),
            -32011,
        ),
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"nope"}"#.into(),
            json!(6),
            -32601,
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"get","params":["keep"]}"#.into(),
            json!(7),
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":8,"method":"delete","params":{"key":"keep","if_rev":99}}"#
                .into(),
            json!(8),
            -32002,
        ),
    ];
    for (frame, id, code) in &frames {
        expect_raw_err(&mut bad, frame, id.clone(), *code).await;
    }
    bad.ws
        .send(Message::binary(vec![1u8]))
        .await
        .expect("send binary");
    assert_error(&bad.recv_response().await, &Value::Null, -32600);
    assert_usable(&mut bad).await;

    // The good connection saw no event (nothing was written) and still works.
    assert_eq!(
        good.call("get", json!({"key": "keep"})).await,
        json!({"value": [1], "rev": w["rev"]})
    );
    let s = good.call("stats", json!({})).await;
    assert_eq!(s["rev"], w["rev"], "no bad request wrote anything: {s}");
    assert_eq!(s["keys"], json!(1), "{s}");
    assert_eq!(s["connections"], json!(2), "{s}");
    let u = bad
        .call("update", json!({"key": "after", "value": 1}))
        .await;
    let ev = good.next_event().await;
    assert_eq!(
        ev,
        json!({"sub": sub["sub"], "key": "after", "event": "update", "value": 1, "rev": u["rev"]}),
        "the first event the good subscriber sees is the first real write"
    );
}

#[tokio::test]
async fn batch_reply_is_capped_near_the_message_limit() {
    let hub = TestHub::with_config(ServerConfig {
        max_message_bytes: 64 * 1024,
        ..ServerConfig::default()
    })
    .await;
    let mut c = hub.client().await;
    let big = "x".repeat(10 * 1024);
    c.call("update", json!({"key": "big", "value": big})).await;

    // 20 reads of a 10 KiB value, a write and a notification: the reply
    // outgrows 64 KiB after the seventh read; the rest is answered "not run".
    let mut items: Vec<Value> = (0..20)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "get", "params": {"key": "big"}}))
        .collect();
    items.push(json!({"jsonrpc": "2.0", "id": "w", "method": "update",
        "params": {"key": "late", "value": 1}}));
    items.push(json!({"jsonrpc": "2.0", "method": "update",
        "params": {"key": "late-notification", "value": 1}}));
    c.send_text(Value::Array(items).to_string()).await;
    let resp = c.recv_response().await;
    let arr = resp.as_array().unwrap_or_else(|| panic!("array: {resp}"));
    assert_eq!(
        arr.len(),
        21,
        "one answer per request with an id, none for the notification"
    );
    let answered = arr.iter().take_while(|r| r.get("result").is_some()).count();
    assert_eq!(answered, 7, "reads answered before the reply passed 64 KiB");
    for r in &arr[..answered] {
        assert_eq!(r["result"]["value"].as_str().map(str::len), Some(big.len()));
    }
    for (i, r) in arr.iter().enumerate().skip(answered) {
        let id = if i == 20 { json!("w") } else { json!(i) };
        let err = assert_error(r, &id, -32011);
        assert_eq!(
            err["data"],
            json!({"limit": "response_bytes", "max": 64 * 1024})
        );
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| m.contains("not run")),
            "{err}"
        );
    }
    // The skipped write and notification did not run; the connection is fine.
    expect_err(&mut c, "get", json!({"key": "late"}), -32001).await;
    expect_err(&mut c, "get", json!({"key": "late-notification"}), -32001).await;
    assert_usable(&mut c).await;
}
