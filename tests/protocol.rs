//! The wire contract of PROTOCOL.md, method by method and rule by rule, over a
//! real hub and real sockets: every success path, every error path with its
//! exact `code` and `data`, JSON-RPC framing, batches, notifications and
//! response order.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------

/// Checks that `resp` is a success response with this `id`; returns the result.
#[track_caller]
fn assert_ok(resp: &Value, id: &Value) -> Value {
    let obj = resp
        .as_object()
        .unwrap_or_else(|| panic!("expected a response object, got {resp}"));
    assert_eq!(
        obj.get("jsonrpc"),
        Some(&json!("2.0")),
        "jsonrpc member in {resp}"
    );
    assert_eq!(obj.get("id"), Some(id), "id member in {resp}");
    assert!(
        obj.get("error").is_none(),
        "unexpected error response: {resp}"
    );
    obj.get("result")
        .unwrap_or_else(|| panic!("a success response carries a result: {resp}"))
        .clone()
}

/// Sends one raw text frame and returns the next non-event frame.
async fn raw(c: &mut Client, text: &str) -> Value {
    c.send_text(text).await;
    c.recv_response().await
}

/// The next text frame exactly as the hub sent it.
async fn recv_text(c: &mut Client) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("connection ended")
            .expect("websocket error");
        match msg {
            Message::Text(t) => return t.as_str().to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

static MARKER: AtomicU64 = AtomicU64::new(1);

/// Proves that nothing was answered to what was sent before: sends a
/// `version` request with a fresh string id and checks that the very next
/// frame on the connection is that request's response.
async fn assert_nothing_pending(c: &mut Client) {
    let marker = format!("marker-{}", MARKER.fetch_add(1, Ordering::Relaxed));
    let frame = json!({"jsonrpc": "2.0", "id": marker, "method": "version"});
    c.send_text(frame.to_string()).await;
    let next = c.recv().await;
    assert_eq!(
        next["id"],
        json!(marker),
        "the hub sent a frame that should not exist before the marker's response: {next}"
    );
    assert_eq!(next["result"]["name"], "memhub", "marker response: {next}");
}

fn req(id: Value, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn notif(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

async fn rev_now(c: &mut Client) -> u64 {
    c.call("stats", json!({})).await["rev"]
        .as_u64()
        .expect("stats.rev is a u64")
}

fn rev_of(v: &Value) -> u64 {
    v["rev"]
        .as_u64()
        .unwrap_or_else(|| panic!("rev must be a u64 in {v}"))
}

/// Inserts `keys` (value = the key's index) with batches of requests.
async fn insert_keys(c: &mut Client, keys: &[String]) {
    for (chunk_no, chunk) in keys.chunks(500).enumerate() {
        let batch: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, k)| {
                req(
                    json!(i),
                    "update",
                    json!({"key": k, "value": chunk_no * 500 + i}),
                )
            })
            .collect();
        let resp = raw(c, &Value::Array(batch).to_string()).await;
        let arr = resp.as_array().expect("batch reply is an array");
        assert_eq!(arr.len(), chunk.len(), "one response per request");
        for r in arr {
            assert!(r.get("error").is_none(), "insert failed: {r}");
        }
    }
}

/// Walks `keys` with `after` paging and returns every page.
async fn walk(c: &mut Client, prefix: Option<&str>, limit: u64) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut after = Value::Null;
    loop {
        let mut params = json!({"limit": limit, "after": after});
        if let Some(p) = prefix {
            params["prefix"] = json!(p);
        }
        let page = c.call("keys", params).await;
        let next = page.get("next").expect("keys result has `next`").clone();
        pages.push(page);
        if next.is_null() {
            return pages;
        }
        assert!(pages.len() < 10_000, "paging never ends");
        after = next;
    }
}

fn page_keys(page: &Value) -> Vec<String> {
    page["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("keys result has a `keys` array: {page}"))
        .iter()
        .map(|k| k["key"].as_str().expect("key is a string").to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Methods: success paths and their error paths
// ---------------------------------------------------------------------------

#[tokio::test]
async fn memoize_creates_once_then_returns_the_existing_value() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;

    let r = c
        .call("memoize", json!({"key": "m", "value": [1, 2]}))
        .await;
    assert_eq!(r, json!({"value": [1, 2], "rev": 1, "created": true}));

    let again = c
        .call("memoize", json!({"key": "m", "value": "other"}))
        .await;
    assert_eq!(again, json!({"value": [1, 2], "rev": 1, "created": false}));

    // The second memoize changed nothing: same value, and it used no rev.
    assert_eq!(
        c.call("get", json!({"key": "m"})).await,
        json!({"value": [1, 2], "rev": 1})
    );
    assert_eq!(rev_now(&mut c).await, 1);
    let u = c.call("update", json!({"key": "other", "value": 0})).await;
    assert_eq!(u, json!({"rev": 2, "created": true}));

    // Another connection sees the same value and gets created:false too.
    let mut d = hub.client().await;
    let r = d
        .call("memoize", json!({"key": "m", "value": {"x": 1}}))
        .await;
    assert_eq!(r, json!({"value": [1, 2], "rev": 1, "created": false}));

    // memoize needs `key` and `value`.
    expect_err(&mut c, "memoize", json!({"key": "nv"}), -32602).await;
    expect_err(&mut c, "memoize", json!({"value": 1}), -32602).await;
    assert_eq!(
        c.call("is_memoized", json!({"key": "nv"})).await,
        json!(false)
    );
}

#[tokio::test]
async fn memoize_null_is_a_real_value() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;

    let r = c.call("memoize", json!({"key": "n", "value": null})).await;
    assert_eq!(r, json!({"value": null, "rev": 1, "created": true}));
    assert_eq!(
        c.call("is_memoized", json!({"key": "n"})).await,
        json!(true)
    );
    let g = c.call("get", json!({"key": "n"})).await;
    assert_eq!(g, json!({"value": null, "rev": 1}));
    assert!(
        g.as_object()
            .expect("get result is an object")
            .contains_key("value"),
        "value null must be present, not omitted: {g}"
    );

    let again = c.call("memoize", json!({"key": "n", "value": 5})).await;
    assert_eq!(again, json!({"value": null, "rev": 1, "created": false}));

    let page = c.call("keys", json!({})).await;
    assert_eq!(
        page,
        json!({"keys": [{"key": "n", "rev": 1, "bytes": 4}], "next": null})
    );
    assert_eq!(c.call("stats", json!({})).await["keys"], json!(1));

    // update to null keeps the key; delete removes it.
    c.call("update", json!({"key": "u", "value": 1})).await;
    let w = c.call("update", json!({"key": "u", "value": null})).await;
    assert_eq!(w["created"], json!(false));
    assert_eq!(
        c.call("get", json!({"key": "u"})).await,
        json!({"value": null, "rev": rev_of(&w)})
    );
    c.call("delete", json!({"key": "n"})).await;
    assert_eq!(
        c.call("is_memoized", json!({"key": "n"})).await,
        json!(false)
    );
}

#[tokio::test]
async fn get_returns_value_and_rev_or_not_found() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;

    let err = expect_err(&mut c, "get", json!({"key": "nope"}), -32001).await;
    assert_eq!(err["data"], json!({"key": "nope"}));

    // data.key is the key exactly, however odd.
    let odd = "a \"quoted\" ключ\n\t\\ ✓";
    let err = expect_err(&mut c, "get", json!({"key": odd}), -32001).await;
    assert_eq!(err["data"], json!({"key": odd}));

    let v = json!({"nested": {"list": [1, "two", null, true, 2.5]}, "s": "é"});
    let w = c.call("update", json!({"key": "k", "value": v})).await;
    let g = c.call("get", json!({"key": "k"})).await;
    assert_eq!(g, json!({"value": v, "rev": rev_of(&w)}));

    // Missing or mistyped key.
    expect_err(&mut c, "get", json!({}), -32602).await;
    expect_err(&mut c, "get", json!({"key": 5}), -32602).await;
    expect_err(&mut c, "get", json!({"key": null}), -32602).await;
}

#[tokio::test]
async fn update_inserts_then_replaces_with_increasing_revs() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;

    let first = c.call("update", json!({"key": "u", "value": 1})).await;
    assert_eq!(first, json!({"rev": 1, "created": true}));
    let mut last = 1;
    for i in 2..=20 {
        let w = c.call("update", json!({"key": "u", "value": i})).await;
        assert_eq!(w["created"], json!(false), "replace: {w}");
        let rev = rev_of(&w);
        assert!(rev > last, "revs strictly increase: {rev} after {last}");
        last = rev;
        // Writes to other keys share the one counter.
        let o = c
            .call("update", json!({"key": format!("o{i}"), "value": i}))
            .await;
        assert_eq!(o["created"], json!(true));
        assert!(
            rev_of(&o) > last,
            "revs strictly increase across keys: {o} after {last}"
        );
        last = rev_of(&o);
    }
    let g = c.call("get", json!({"key": "u"})).await;
    assert_eq!(g["value"], json!(20));
    assert!(rev_of(&g) < last);
    assert_eq!(rev_now(&mut c).await, last);

    expect_err(&mut c, "update", json!({"key": "u"}), -32602).await;
    expect_err(&mut c, "update", json!({"value": 1}), -32602).await;
    assert_eq!(c.call("get", json!({"key": "u"})).await["value"], json!(20));
}

#[tokio::test]
async fn delete_returns_its_rev_and_not_found_when_absent() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;

    let w = c.call("update", json!({"key": "d", "value": "x"})).await;
    let del = c.call("delete", json!({"key": "d"})).await;
    let obj = del.as_object().expect("delete result is an object");
    assert_eq!(obj.len(), 1, "delete result is exactly {{rev}}: {del}");
    assert!(
        rev_of(&del) > rev_of(&w),
        "the deletion has its own rev: {del} after {w}"
    );
    assert_eq!(rev_now(&mut c).await, rev_of(&del));

    let err = expect_err(&mut c, "get", json!({"key": "d"}), -32001).await;
    assert_eq!(err["data"], json!({"key": "d"}));
    assert_eq!(
        c.call("is_memoized", json!({"key": "d"})).await,
        json!(false)
    );

    let err = expect_err(&mut c, "delete", json!({"key": "d"}), -32001).await;
    assert_eq!(err["data"], json!({"key": "d"}));
    let err = expect_err(&mut c, "delete", json!({"key": "never"}), -32001).await;
    assert_eq!(err["data"], json!({"key": "never"}));
    // A failed delete is not a mutation.
    assert_eq!(rev_now(&mut c).await, rev_of(&del));

    // Re-creating gets a fresh, higher rev.
    let again = c.call("update", json!({"key": "d", "value": "y"})).await;
    assert_eq!(again, json!({"rev": rev_of(&del) + 1, "created": true}));
    assert_eq!(c.call("stats", json!({})).await["keys"], json!(1));

    expect_err(&mut c, "delete", json!({}), -32602).await;
}

#[tokio::test]
async fn is_memoized_tracks_presence() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    assert_eq!(
        c.call("is_memoized", json!({"key": "p"})).await,
        json!(false)
    );
    c.call("update", json!({"key": "p", "value": false})).await;
    assert_eq!(
        c.call("is_memoized", json!({"key": "p"})).await,
        json!(true)
    );
    assert_eq!(
        c.call("is_memoized", json!({"key": "P"})).await,
        json!(false)
    );
    c.call("delete", json!({"key": "p"})).await;
    assert_eq!(
        c.call("is_memoized", json!({"key": "p"})).await,
        json!(false)
    );
    expect_err(&mut c, "is_memoized", json!({}), -32602).await;
}

#[tokio::test]
async fn version_reports_name_semver_protocol_and_epoch() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let v = c.call("version", json!({})).await;
    assert_eq!(v["name"], json!("memhub"), "{v}");
    assert_eq!(v["protocol"], json!(1), "{v}");
    assert_eq!(v["role"], json!("write"), "a hub without tokens: {v}");
    let version = v["version"].as_str().expect("version is a string");
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let core = version.split(['-', '+']).next().expect("a version core");
    let parts: Vec<&str> = core.split('.').collect();
    assert_eq!(parts.len(), 3, "semver has major.minor.patch: {version}");
    for p in parts {
        p.parse::<u64>()
            .unwrap_or_else(|_| panic!("semver part {p:?} in {version}"));
    }
    let epoch = v["epoch"].as_str().expect("epoch is a string").to_string();
    assert!(!epoch.is_empty(), "epoch is non-empty: {v}");

    // No params at all also works, and the epoch is stable for a live hub.
    let resp = raw(&mut c, r#"{"jsonrpc":"2.0","id":"v","method":"version"}"#).await;
    let again = assert_ok(&resp, &json!("v"));
    assert_eq!(again["epoch"], json!(epoch));
    c.call("update", json!({"key": "k", "value": 1})).await;
    let mut d = hub.client().await;
    assert_eq!(d.call("version", json!({})).await["epoch"], json!(epoch));

    // A fresh hub (revs restart) has another epoch.
    let other = TestHub::start().await;
    let mut e = other.client().await;
    let v2 = e.call("version", json!({})).await;
    assert_ne!(
        v2["epoch"],
        json!(epoch),
        "a fresh hub must have a new epoch"
    );
}

#[tokio::test]
async fn keys_are_sorted_by_bytes_and_filtered_by_prefix() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let names = [
        "b",
        "a",
        "ab",
        "aa",
        "a\u{e9}",
        "aZ",
        "B",
        "~",
        "a/1",
        "a\u{1F600}",
        "\u{7f}",
        "a\"q",
        "a\n",
        "A",
        "a",
        "zz",
        "a b",
    ];
    let mut revs = std::collections::HashMap::new();
    for n in names {
        let w = c.call("update", json!({"key": n, "value": n})).await;
        revs.insert(n.to_string(), rev_of(&w));
    }
    let mut sorted: Vec<String> = revs.keys().cloned().collect();
    sorted.sort(); // String's Ord is byte order

    let all = c.call("keys", json!({})).await;
    assert_eq!(page_keys(&all), sorted, "{all}");
    assert_eq!(
        all.get("next"),
        Some(&Value::Null),
        "one page: next is null: {all}"
    );
    for k in all["keys"].as_array().expect("keys array") {
        let name = k["key"].as_str().expect("key");
        let bytes = serde_json::to_string(name).expect("encode").len();
        assert_eq!(
            k,
            &json!({"key": name, "rev": revs[name], "bytes": bytes}),
            "entry without expiry has exactly key, rev, bytes"
        );
    }

    let a = c.call("keys", json!({"prefix": "a"})).await;
    let want: Vec<String> = sorted
        .iter()
        .filter(|k| k.starts_with('a'))
        .cloned()
        .collect();
    assert_eq!(page_keys(&a), want);
    assert_eq!(a["next"], Value::Null);

    let none = c.call("keys", json!({"prefix": "zzz"})).await;
    assert_eq!(none, json!({"keys": [], "next": null}));
    let empty_prefix = c.call("keys", json!({"prefix": ""})).await;
    assert_eq!(page_keys(&empty_prefix), sorted);

    // Strictly after `after`, which need not be a key.
    let after = c.call("keys", json!({"after": "a"})).await;
    let want: Vec<String> = sorted
        .iter()
        .filter(|k| k.as_str() > "a")
        .cloned()
        .collect();
    assert_eq!(page_keys(&after), want);
    let after = c.call("keys", json!({"prefix": "a", "after": "aZ"})).await;
    let want: Vec<String> = sorted
        .iter()
        .filter(|k| k.starts_with('a') && k.as_str() > "aZ")
        .cloned()
        .collect();
    assert_eq!(page_keys(&after), want);
    // `after` before the prefix starts the listing at the prefix.
    let after = c.call("keys", json!({"prefix": "a", "after": "0"})).await;
    assert_eq!(page_keys(&after), page_keys(&a));
    // `after` past everything: empty page.
    let past = c.call("keys", json!({"after": "\u{10FFFF}"})).await;
    assert_eq!(past, json!({"keys": [], "next": null}));
}

#[tokio::test]
async fn keys_paging_walks_everything_exactly_once() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut all: Vec<String> = (0..250)
        .map(|i| format!("k{:04}", (i * 37) % 250))
        .collect();
    all.extend((0..25).map(|i| format!("p/{i:03}")));
    insert_keys(&mut c, &all).await;
    all.sort();

    // Whole keyspace, limit 7: 275 = 39 * 7 + 2.
    let pages = walk(&mut c, None, 7).await;
    let mut seen = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        let ks = page_keys(page);
        if i + 1 < pages.len() {
            assert_eq!(ks.len(), 7, "a page before the last is full: {page}");
            assert_eq!(
                page["next"],
                json!(ks.last().expect("non-empty")),
                "next is the last key"
            );
        } else {
            assert_eq!(ks.len(), 275 % 7, "last page: {page}");
            assert_eq!(page["next"], Value::Null);
        }
        seen.extend(ks);
    }
    assert_eq!(seen, all, "every key exactly once, in order");

    // With a prefix, and a remainder that divides evenly: no empty last page.
    let pages = walk(&mut c, Some("p/"), 5).await;
    assert_eq!(pages.len(), 5, "25 keys in pages of 5 is 5 pages");
    let seen: Vec<String> = pages.iter().flat_map(page_keys).collect();
    let want: Vec<String> = all
        .iter()
        .filter(|k| k.starts_with("p/"))
        .cloned()
        .collect();
    assert_eq!(seen, want);
    assert_eq!(pages[3]["next"], json!("p/019"));
    assert_eq!(pages[4]["next"], Value::Null);

    // A page exactly as large as what remains has next = null.
    let last = c
        .call(
            "keys",
            json!({"prefix": "p/", "after": "p/014", "limit": 10}),
        )
        .await;
    assert_eq!(last["keys"].as_array().map(Vec::len), Some(10));
    assert_eq!(last["next"], Value::Null);
}

#[tokio::test]
async fn keys_limit_default_clamp_and_zero() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut all: Vec<String> = (0..1100).map(|i| format!("c{i:05}")).collect();
    insert_keys(&mut c, &all).await;
    all.sort();

    let page = c.call("keys", json!({})).await;
    assert_eq!(
        page_keys(&page),
        all[..100].to_vec(),
        "default limit is 100"
    );
    assert_eq!(page["next"], json!(all[99]));

    let page = c
        .call(
            "keys",
            json!({"limit": null, "after": null, "prefix": null}),
        )
        .await;
    assert_eq!(page_keys(&page).len(), 100, "null fields count as absent");

    for limit in [1001u64, 5000, u64::MAX] {
        let page = c.call("keys", json!({"limit": limit})).await;
        assert_eq!(
            page_keys(&page),
            all[..1000].to_vec(),
            "limit {limit} is clamped to 1000"
        );
        assert_eq!(page["next"], json!(all[999]));
    }
    let page = c
        .call("keys", json!({"limit": 1000, "after": all[999]}))
        .await;
    assert_eq!(page_keys(&page), all[1000..].to_vec());
    assert_eq!(page["next"], Value::Null);

    let page = c.call("keys", json!({"limit": 1})).await;
    assert_eq!(
        page,
        json!({"keys": [{"key": "c00000", "rev": 1, "bytes": 1}], "next": "c00000"})
    );

    expect_err(&mut c, "keys", json!({"limit": 0}), -32602).await;
    expect_err(&mut c, "keys", json!({"limit": -1}), -32602).await;
    expect_err(&mut c, "keys", json!({"limit": "ten"}), -32602).await;
    expect_err(&mut c, "keys", json!({"prefix": 5}), -32602).await;
}

#[tokio::test]
async fn values_are_stored_compact_and_bytes_counts_compact_json() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;

    let frame =
        r#"{"jsonrpc":"2.0","id":"w","method":"update","params":{"key":"sp","value":[1, 2]}}"#;
    assert_ok(&raw(&mut c, frame).await, &json!("w"));
    let frame = r#"{"jsonrpc":"2.0","id":"w2","method":"memoize","params":{"key":"obj","value":
        { "a b" : "c  d" ,
          "n" : [ ] }}}"#;
    c.send_text(frame).await;
    let text = recv_text(&mut c).await;
    assert!(
        text.contains(r#"{"a b":"c  d","n":[]}"#),
        "memoize returns the compact value (whitespace inside strings kept): {text}"
    );

    c.send_text(r#"{"jsonrpc":"2.0","id":"g","method":"get","params":{"key":"sp"}}"#)
        .await;
    let text = recv_text(&mut c).await;
    assert!(
        text.contains("[1,2]") && !text.contains("[1, 2]"),
        "stored compact: {text}"
    );
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(assert_ok(&v, &json!("g"))["value"], json!([1, 2]));

    for (k, v) in [
        ("str", json!("é")),
        ("num", json!(123)),
        ("nul", json!(null)),
    ] {
        c.call("update", json!({"key": k, "value": v})).await;
    }
    let page = c.call("keys", json!({})).await;
    let bytes: Vec<(String, Value)> = page["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["key"].as_str().expect("key").to_string(),
                k["bytes"].clone(),
            )
        })
        .collect();
    assert_eq!(
        bytes,
        vec![
            ("nul".to_string(), json!(4)),
            ("num".to_string(), json!(3)),
            ("obj".to_string(), json!(r#"{"a b":"c  d","n":[]}"#.len())),
            ("sp".to_string(), json!(5)),
            ("str".to_string(), json!(4)), // "é" is 2 bytes plus 2 quotes
        ]
    );
}

#[tokio::test]
async fn stats_counts_keys_connections_subscriptions_rev_uptime() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let s = a.call("stats", json!({})).await;
    assert_eq!(s["keys"], json!(0), "{s}");
    assert_eq!(s["connections"], json!(1), "{s}");
    assert_eq!(s["subscriptions"], json!(0), "{s}");
    assert_eq!(s["rev"], json!(0), "no mutation yet: {s}");
    let up0 = s["uptime_ms"].as_u64().expect("uptime_ms is a u64");

    for k in ["x", "y", "z"] {
        a.call("update", json!({"key": k, "value": 1})).await;
    }
    a.call("delete", json!({"key": "z"})).await;
    let sub = a.call("subscribe", json!({"key": "x"})).await;
    a.call("subscribe", json!({"prefix": ""})).await;
    let mut b = hub.client().await;
    b.call("subscribe", json!({"prefix": "y"})).await;

    let s = b.call("stats", json!({})).await;
    assert_eq!(s["keys"], json!(2), "{s}");
    assert_eq!(s["connections"], json!(2), "{s}");
    assert_eq!(s["subscriptions"], json!(3), "{s}");
    assert_eq!(s["rev"], json!(4), "three updates and a delete: {s}");
    assert!(s["uptime_ms"].as_u64().expect("uptime_ms") >= up0);

    assert_eq!(
        a.call("unsubscribe", json!({"sub": sub["sub"]})).await,
        json!(true)
    );
    drop(b);
    // The hub notices b is gone and its subscription went with it.
    let s = hub
        .wait_stats(|s| s["connections"] == json!(2) && s["subscriptions"] == json!(1))
        .await;
    assert_eq!(s["keys"], json!(2));

    // uptime grows.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = a.call("stats", json!({})).await;
        if s["uptime_ms"].as_u64().expect("uptime_ms") > up0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "uptime_ms never grew: {s}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn subscribe_and_unsubscribe_results() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;

    let s1 = c.call("subscribe", json!({"key": "k"})).await;
    assert_eq!(
        s1,
        json!({"sub": 1, "exists": false}),
        "absent key: no value, no rev"
    );

    let w = c
        .call("update", json!({"key": "k", "value": {"v": 1}}))
        .await;
    // The first subscription sees the write.
    let ev = c.next_event().await;
    assert_eq!(
        ev,
        json!({"sub": 1, "key": "k", "event": "update", "value": {"v": 1}, "rev": rev_of(&w)})
    );

    let s2 = c.call("subscribe", json!({"key": "k"})).await;
    assert_eq!(
        s2,
        json!({"sub": 2, "exists": true, "value": {"v": 1}, "rev": rev_of(&w)})
    );
    c.call("update", json!({"key": "n", "value": null})).await;
    let s3 = c
        .call("subscribe", json!({"key": "n", "prefix": null}))
        .await;
    assert_eq!(s3["exists"], json!(true));
    assert_eq!(s3["value"], Value::Null);
    assert!(
        s3.as_object().expect("object").contains_key("value"),
        "null value present: {s3}"
    );

    let p = c.call("subscribe", json!({"prefix": "k"})).await;
    assert_eq!(p, json!({"sub": 4}));
    let p2 = c.call("subscribe", json!({"prefix": ""})).await;
    assert_eq!(p2, json!({"sub": 5}));

    expect_err(
        &mut c,
        "subscribe",
        json!({"key": "k", "prefix": "k"}),
        -32602,
    )
    .await;
    expect_err(&mut c, "subscribe", json!({}), -32602).await;
    expect_err(
        &mut c,
        "subscribe",
        json!({"key": null, "prefix": null}),
        -32602,
    )
    .await;
    expect_err(&mut c, "unsubscribe", json!({}), -32602).await;

    // Another connection cannot remove ours.
    let mut other = hub.client().await;
    assert_eq!(
        other.call("unsubscribe", json!({"sub": 1})).await,
        json!(false)
    );

    assert_eq!(c.call("unsubscribe", json!({"sub": 1})).await, json!(true));
    assert_eq!(c.call("unsubscribe", json!({"sub": 1})).await, json!(false));
    assert_eq!(c.call("unsubscribe", json!({"sub": 4})).await, json!(true));
    assert_eq!(
        c.call("unsubscribe", json!({"sub": 999})).await,
        json!(false)
    );
    assert_eq!(hub.stats().await["subscriptions"], json!(3));
}

#[tokio::test]
async fn if_rev_on_update() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;

    let r1 = rev_of(&c.call("update", json!({"key": "k", "value": 1})).await);
    let r2 = c
        .call("update", json!({"key": "k", "value": 2, "if_rev": r1}))
        .await;
    assert_eq!(r2, json!({"rev": r1 + 1, "created": false}));
    let r2 = rev_of(&r2);

    // Stale rev: -32002 with the current rev, nothing changed, no rev used.
    let err = expect_err(
        &mut c,
        "update",
        json!({"key": "k", "value": 3, "if_rev": r1}),
        -32002,
    )
    .await;
    assert_eq!(err["data"], json!({"rev": r2}));
    assert_eq!(
        c.call("get", json!({"key": "k"})).await,
        json!({"value": 2, "rev": r2})
    );
    assert_eq!(rev_now(&mut c).await, r2);

    // if_rev 0: only if absent.
    let err = expect_err(
        &mut c,
        "update",
        json!({"key": "k", "value": 4, "if_rev": 0}),
        -32002,
    )
    .await;
    assert_eq!(err["data"], json!({"rev": r2}));
    let created = c
        .call("update", json!({"key": "fresh", "value": 1, "if_rev": 0}))
        .await;
    assert_eq!(created, json!({"rev": r2 + 1, "created": true}));

    // Mismatch on an absent key is -32002 with rev 0, and the key stays absent.
    let err = expect_err(
        &mut c,
        "update",
        json!({"key": "gone", "value": 1, "if_rev": 5}),
        -32002,
    )
    .await;
    assert_eq!(err["data"], json!({"rev": 0}));
    assert_eq!(
        c.call("is_memoized", json!({"key": "gone"})).await,
        json!(false)
    );
    assert_eq!(rev_now(&mut c).await, r2 + 1);

    // if_rev: null counts as absent: an unconditional write.
    let w = c
        .call("update", json!({"key": "k", "value": 5, "if_rev": null}))
        .await;
    assert_eq!(w, json!({"rev": r2 + 2, "created": false}));

    expect_err(
        &mut c,
        "update",
        json!({"key": "k", "value": 1, "if_rev": -1}),
        -32602,
    )
    .await;
    expect_err(
        &mut c,
        "update",
        json!({"key": "k", "value": 1, "if_rev": "1"}),
        -32602,
    )
    .await;
    assert_eq!(c.call("get", json!({"key": "k"})).await["value"], json!(5));
}

#[tokio::test]
async fn if_rev_on_delete() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;

    let r1 = rev_of(&c.call("update", json!({"key": "k", "value": 1})).await);
    let r2 = rev_of(&c.call("update", json!({"key": "k", "value": 2})).await);

    let err = expect_err(&mut c, "delete", json!({"key": "k", "if_rev": r1}), -32002).await;
    assert_eq!(err["data"], json!({"rev": r2}));
    let err = expect_err(&mut c, "delete", json!({"key": "k", "if_rev": 0}), -32002).await;
    assert_eq!(err["data"], json!({"rev": r2}));
    assert_eq!(
        c.call("get", json!({"key": "k"})).await,
        json!({"value": 2, "rev": r2})
    );
    assert_eq!(rev_now(&mut c).await, r2);

    let d = c.call("delete", json!({"key": "k", "if_rev": r2})).await;
    assert_eq!(d, json!({"rev": r2 + 1}));
    assert_eq!(
        c.call("is_memoized", json!({"key": "k"})).await,
        json!(false)
    );

    // if_rev is checked first: a mismatch on an absent key is -32002 rev 0, not -32001.
    let err = expect_err(&mut c, "delete", json!({"key": "k", "if_rev": r2}), -32002).await;
    assert_eq!(err["data"], json!({"rev": 0}));
    let err = expect_err(
        &mut c,
        "delete",
        json!({"key": "never", "if_rev": 7}),
        -32002,
    )
    .await;
    assert_eq!(err["data"], json!({"rev": 0}));

    // if_rev: null is an unconditional delete.
    c.call("update", json!({"key": "k2", "value": 1})).await;
    c.call("delete", json!({"key": "k2", "if_rev": null})).await;
    assert_eq!(
        c.call("is_memoized", json!({"key": "k2"})).await,
        json!(false)
    );
}

#[tokio::test]
async fn unknown_methods_and_invalid_ttl() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    c.call("update", json!({"key": "n", "value": 1})).await;

    let calls = [
        ("frobnicate", json!({})),
        ("GET", json!({"key": "n"})),
        ("", json!({})),
    ];
    for (method, params) in calls {
        expect_err(&mut c, method, params, -32601).await;
    }
    // Nothing changed the stored value.
    assert_eq!(
        c.call("get", json!({"key": "n"})).await,
        json!({"value": 1, "rev": 1})
    );

    // ttl_ms must be an integer >= 1; a bad one is refused and nothing is written.
    for ttl in [json!(0), json!(-5), json!(1.5), json!("10")] {
        expect_err(
            &mut c,
            "memoize",
            json!({"key": "t", "value": 1, "ttl_ms": ttl}),
            -32602,
        )
        .await;
        expect_err(
            &mut c,
            "update",
            json!({"key": "n", "value": 9, "ttl_ms": ttl}),
            -32602,
        )
        .await;
    }
    assert_eq!(
        c.call("is_memoized", json!({"key": "t"})).await,
        json!(false)
    );
    assert_eq!(
        c.call("get", json!({"key": "n"})).await,
        json!({"value": 1, "rev": 1})
    );
    // ...but ttl_ms: null counts as absent.
    let m = c
        .call("memoize", json!({"key": "t", "value": 1, "ttl_ms": null}))
        .await;
    assert_eq!(m["created"], json!(true));
    c.call("update", json!({"key": "t", "value": 2, "ttl_ms": null}))
        .await;
    let page = c.call("keys", json!({"prefix": "t"})).await;
    assert!(page["keys"][0].get("expires_at_ms").is_none(), "{page}");
}

// ---------------------------------------------------------------------------
// JSON-RPC framing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn parse_errors_answer_32700_with_null_id() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    for bad in [
        r#"{"jsonrpc":"2.0","id":1,"method":"version""#,
        "not json",
        r#"{"jsonrpc":"2.0","id":2,"method":"version"} trailing"#,
        "",
        r#"{"jsonrpc":"2.0","id":3,"method":"get","params":{"key":"a",}}"#,
        r#"[{"jsonrpc":"2.0","id":4,"method":"version"},"#,
    ] {
        let resp = raw(&mut c, bad).await;
        assert_error(&resp, &Value::Null, -32700);
    }
    assert_nothing_pending(&mut c).await;
}

#[tokio::test]
async fn invalid_requests_answer_32600() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;

    // Not an object.
    for bad in ["5", r#""str""#, "null", "true"] {
        assert_error(&raw(&mut c, bad).await, &Value::Null, -32600);
    }
    // Bad `jsonrpc`: the id is echoed.
    let cases = [
        (r#"{"id":7,"method":"version"}"#, json!(7)),
        (
            r#"{"jsonrpc":"1.0","id":"abc","method":"version"}"#,
            json!("abc"),
        ),
        (r#"{"jsonrpc":2.0,"id":8,"method":"version"}"#, json!(8)),
        (r#"{"jsonrpc":null,"id":9,"method":"version"}"#, json!(9)),
        // `method` missing or not a string.
        (r#"{"jsonrpc":"2.0","id":10}"#, json!(10)),
        (r#"{"jsonrpc":"2.0","id":11,"method":5}"#, json!(11)),
        (r#"{"jsonrpc":"2.0","id":"m","method":["get"]}"#, json!("m")),
        (r#"{"jsonrpc":"2.0","id":12,"method":null}"#, json!(12)),
        // Nested values there are skipped whole, still an Invalid Request.
        (
            r#"{"jsonrpc":{"v":[1,{"x":"2.0"}]},"id":16,"method":"version"}"#,
            json!(16),
        ),
        (
            r#"{"jsonrpc":"2.0","id":17,"method":{"name":"version"}}"#,
            json!(17),
        ),
        // `params` neither object nor array.
        (
            r#"{"jsonrpc":"2.0","id":13,"method":"get","params":"k"}"#,
            json!(13),
        ),
        (
            r#"{"jsonrpc":"2.0","id":14,"method":"version","params":5}"#,
            json!(14),
        ),
        (
            r#"{"jsonrpc":"2.0","id":15,"method":"version","params":true}"#,
            json!(15),
        ),
    ];
    for (frame, id) in cases {
        let resp = raw(&mut c, frame).await;
        assert_error(&resp, &id, -32600);
    }
    // Escapes in `jsonrpc` and `method` spell the same strings.
    let resp = raw(
        &mut c,
        r#"{"jsonrpc":"2\u002e0","id":18,"method":"vers\u0069on"}"#,
    )
    .await;
    assert_eq!(resp["id"], 18, "{resp}");
    assert_eq!(resp["result"]["name"], "memhub", "{resp}");
    // An id that is not a string, number or null: -32600 with id null.
    for bad in [
        r#"{"jsonrpc":"2.0","id":{"a":1},"method":"version"}"#,
        r#"{"jsonrpc":"2.0","id":[1],"method":"version"}"#,
        r#"{"jsonrpc":"2.0","id":true,"method":"version"}"#,
    ] {
        assert_error(&raw(&mut c, bad).await, &Value::Null, -32600);
    }
    // Invalid even though it has no id: JSON-RPC 2.0 answers it (id null),
    // as its spec's own example `{"jsonrpc": "2.0", "method": 1, "params": "bar"}` shows.
    for bad in [
        r#"{"method":"version"}"#,
        r#"{"jsonrpc":"2.0","method":1,"params":"bar"}"#,
    ] {
        assert_error(&raw(&mut c, bad).await, &Value::Null, -32600);
    }
    // None of that wrote anything or broke the connection.
    assert_nothing_pending(&mut c).await;
    assert_eq!(c.call("stats", json!({})).await["rev"], json!(0));
}

#[tokio::test]
async fn positional_and_bad_params_answer_32602() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    c.call("update", json!({"key": "k", "value": 1})).await;

    let resp = raw(
        &mut c,
        r#"{"jsonrpc":"2.0","id":1,"method":"get","params":["k"]}"#,
    )
    .await;
    assert_error(&resp, &json!(1), -32602);
    let resp = raw(
        &mut c,
        r#"{"jsonrpc":"2.0","id":"u","method":"update","params":["k",2]}"#,
    )
    .await;
    assert_error(&resp, &json!("u"), -32602);
    let resp = raw(
        &mut c,
        r#"{"jsonrpc":"2.0","id":2,"method":"version","params":[]}"#,
    )
    .await;
    assert_error(&resp, &json!(2), -32602);
    assert_eq!(c.call("get", json!({"key": "k"})).await["value"], json!(1));

    // Missing key.
    for m in ["get", "memoize", "update", "delete", "is_memoized"] {
        expect_err(&mut c, m, json!({"value": 1}), -32602).await;
    }
    // Unknown fields are ignored.
    let g = c
        .call(
            "get",
            json!({"key": "k", "extra": {"deep": [1]}, "if_rev": null}),
        )
        .await;
    assert_eq!(g["value"], json!(1));
    let w = c
        .call("update", json!({"key": "k", "value": 2, "colour": "blue"}))
        .await;
    assert_eq!(w["created"], json!(false));
    let v = c.call("version", json!({"whatever": 1})).await;
    assert_eq!(v["name"], json!("memhub"));
}

#[tokio::test]
async fn ids_are_echoed_unchanged() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let ids = [
        r#""abc""#,
        r#""""#,
        r#""é \"q\" \\ \u0001 ✓""#,
        "0",
        "-3",
        "42",
        "9007199254740993",
        "18446744073709551615",
        "-9223372036854775808",
        "1.5",
    ];
    for id in ids {
        let frame = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"version"}}"#);
        c.send_text(frame).await;
        let text = recv_text(&mut c).await;
        let resp: Value = serde_json::from_str(&text).expect("JSON");
        let want: Value = serde_json::from_str(id).expect("id JSON");
        assert_ok(&resp, &want);
        assert!(
            text.contains(&format!(r#""id":{id}"#)),
            "id {id} echoed verbatim: {text}"
        );
    }
    // Whitespace around the request is fine.
    let resp = raw(
        &mut c,
        " \n\t{\"jsonrpc\":\"2.0\",\"id\":\"ws\",\"method\":\"version\"}\r\n ",
    )
    .await;
    assert_ok(&resp, &json!("ws"));
    // Errors echo string and numeric ids too.
    let resp = raw(
        &mut c,
        r#"{"jsonrpc":"2.0","id":"e-1","method":"get","params":{"key":"x"}}"#,
    )
    .await;
    let err = assert_error(&resp, &json!("e-1"), -32001);
    assert_eq!(err["data"], json!({"key": "x"}));
    let resp = raw(&mut c, r#"{"jsonrpc":"2.0","id":-77,"method":"nope"}"#).await;
    assert_error(&resp, &json!(-77), -32601);
}

// ---------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------

#[tokio::test]
async fn mixed_batch_is_answered_as_one_array_in_order() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let batch = json!([
        req(json!(1), "update", json!({"key": "a", "value": 1})),
        req(json!("two"), "get", json!({"key": "a"})),
        notif("update", json!({"key": "b", "value": 2})),
        req(json!(3), "nope", json!({})),
        5,
        req(json!(4), "get", json!({"key": "missing"})),
        {"jsonrpc": "1.0", "id": 6, "method": "version"},
        req(json!(7), "get", json!(["a"])),
        req(json!(8), "is_memoized", json!({"key": "b"})),
        [1],
        req(json!(9), "delete", json!({"key": "a", "if_rev": 99})),
    ]);
    let resp = raw(&mut c, &batch.to_string()).await;
    let arr = resp
        .as_array()
        .unwrap_or_else(|| panic!("a batch is answered as an array: {resp}"));
    assert_eq!(arr.len(), 10, "one entry per non-notification: {resp}");
    assert_eq!(
        assert_ok(&arr[0], &json!(1)),
        json!({"rev": 1, "created": true})
    );
    assert_eq!(
        assert_ok(&arr[1], &json!("two")),
        json!({"value": 1, "rev": 1})
    );
    assert_error(&arr[2], &json!(3), -32601);
    assert_error(&arr[3], &Value::Null, -32600);
    let e = assert_error(&arr[4], &json!(4), -32001);
    assert_eq!(e["data"], json!({"key": "missing"}));
    assert_error(&arr[5], &json!(6), -32600);
    assert_error(&arr[6], &json!(7), -32602);
    // The notification before it ran, in order.
    assert_eq!(assert_ok(&arr[7], &json!(8)), json!(true));
    assert_error(&arr[8], &Value::Null, -32600);
    let e = assert_error(&arr[9], &json!(9), -32002);
    assert_eq!(e["data"], json!({"rev": 1}));

    assert_nothing_pending(&mut c).await;
    assert_eq!(
        c.call("get", json!({"key": "b"})).await,
        json!({"value": 2, "rev": 2})
    );

    // A batch of one is still an array.
    let resp = raw(
        &mut c,
        &json!([req(json!("solo"), "version", json!({}))]).to_string(),
    )
    .await;
    let arr = resp.as_array().unwrap_or_else(|| panic!("array: {resp}"));
    assert_eq!(arr.len(), 1);
    assert_eq!(assert_ok(&arr[0], &json!("solo"))["name"], json!("memhub"));
}

#[tokio::test]
async fn invalid_batch_elements_get_one_error_each() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let only_notifications_and_junk = format!(
        "[{},7,{}]",
        notif("update", json!({"key": "nj", "value": 1})),
        notif("version", json!({}))
    );
    for (frame, n) in [
        ("[1,2]", 2),
        (r#"[1, "x", null, {}, []]"#, 5),
        (only_notifications_and_junk.as_str(), 1),
    ] {
        let resp = raw(&mut c, frame).await;
        let arr = resp
            .as_array()
            .unwrap_or_else(|| panic!("{frame}: array expected, got {resp}"));
        assert_eq!(arr.len(), n, "{frame}: {resp}");
        for r in arr {
            assert_error(r, &Value::Null, -32600);
        }
    }
    assert_nothing_pending(&mut c).await;
    assert_eq!(
        c.call("get", json!({"key": "nj"})).await["value"],
        json!(1),
        "the notification ran"
    );
}

#[tokio::test]
async fn empty_batch_is_a_single_invalid_request() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    for frame in ["[]", " [ ] ", "[\n]"] {
        let resp = raw(&mut c, frame).await;
        assert!(
            resp.is_object(),
            "{frame:?}: a single error object, not an array: {resp}"
        );
        assert_error(&resp, &Value::Null, -32600);
    }
    assert_nothing_pending(&mut c).await;
}

#[tokio::test]
async fn batch_of_only_notifications_gets_no_reply_but_runs() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let batch = json!([
        notif("update", json!({"key": "n1", "value": 1})),
        notif("memoize", json!({"key": "n2", "value": [2]})),
        notif("nope", json!({})),
        notif("get", json!({"key": "absent"})),
        notif("update", json!({"key": "n3", "value": 3})),
        notif("delete", json!({"key": "n3"})),
    ]);
    c.send_text(batch.to_string()).await;
    assert_nothing_pending(&mut c).await;
    assert_eq!(
        c.call("get", json!({"key": "n1"})).await,
        json!({"value": 1, "rev": 1})
    );
    assert_eq!(
        c.call("get", json!({"key": "n2"})).await,
        json!({"value": [2], "rev": 2})
    );
    assert_eq!(
        c.call("is_memoized", json!({"key": "n3"})).await,
        json!(false)
    );
    assert_eq!(c.call("stats", json!({})).await["rev"], json!(4));
}

// ---------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------

#[tokio::test]
async fn notifications_run_and_get_no_response() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;

    c.send_text(notif("update", json!({"key": "n", "value": "x"})).to_string())
        .await;
    assert_nothing_pending(&mut c).await;
    assert_eq!(
        c.call("get", json!({"key": "n"})).await,
        json!({"value": "x", "rev": 1})
    );

    // No params member at all.
    c.send_text(r#"{"jsonrpc":"2.0","method":"version"}"#).await;
    // Unknown method, failing method, positional params: still no answer.
    c.send_text(notif("no_such_method", json!({})).to_string())
        .await;
    c.send_text(notif("get", json!({"key": "absent"})).to_string())
        .await;
    c.send_text(notif("delete", json!({"key": "n", "if_rev": 99})).to_string())
        .await;
    c.send_text(notif("get", json!(["n"])).to_string()).await;
    assert_nothing_pending(&mut c).await;
    assert_eq!(
        c.call("get", json!({"key": "n"})).await,
        json!({"value": "x", "rev": 1})
    );

    // Another connection sees the notification's write.
    let mut d = hub.client().await;
    d.send_text(notif("delete", json!({"key": "n"})).to_string())
        .await;
    assert_nothing_pending(&mut d).await;
    assert_eq!(
        c.call("is_memoized", json!({"key": "n"})).await,
        json!(false)
    );
}

// ---------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------

#[tokio::test]
async fn pipelined_responses_arrive_in_request_order() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    const N: u64 = 500;
    for i in 1..=N {
        let frame = match i % 4 {
            0 => req(json!(i), "get", json!({"key": format!("k{}", i - 1)})),
            1 => req(json!(i), "version", json!({})),
            2 => req(
                json!(format!("s{i}")),
                "is_memoized",
                json!({"key": "nothing"}),
            ),
            _ => req(
                json!(i),
                "update",
                json!({"key": format!("k{i}"), "value": i}),
            ),
        };
        c.ws.feed(Message::text(frame.to_string()))
            .await
            .expect("feed");
    }
    c.ws.flush().await.expect("flush");
    for i in 1..=N {
        let resp = c.recv().await;
        match i % 4 {
            0 => {
                let r = assert_ok(&resp, &json!(i));
                assert_eq!(
                    r["value"],
                    json!(i - 1),
                    "the get saw the update sent just before it"
                );
            }
            1 => {
                assert_eq!(assert_ok(&resp, &json!(i))["name"], json!("memhub"));
            }
            2 => {
                assert_eq!(assert_ok(&resp, &json!(format!("s{i}"))), json!(false));
            }
            _ => {
                assert_eq!(assert_ok(&resp, &json!(i))["created"], json!(true));
            }
        }
    }
    assert_nothing_pending(&mut c).await;
}

/// `get` and `update` params are decoded in the same pass as the envelope
/// when the method comes first; every other order and every faulty params
/// object must answer exactly as the params-as-text reading does.
#[tokio::test]
async fn params_read_with_the_envelope_keep_every_answer() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let ok = raw(
        &mut c,
        r#"{"params":{"key":"pe","value":[1]},"method":"update","jsonrpc":"2.0","id":1}"#,
    )
    .await;
    assert_eq!(ok["result"]["created"], json!(true), "{ok}");
    for text in [
        r#"{"jsonrpc":"2.0","id":2,"method":"get","params":{"key":"pe"}}"#,
        r#"{"jsonrpc":"2.0","id":2,"params":{"key":"pe"},"method":"get"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"get","params":{"key":"p\u0065","extra":0}}"#,
    ] {
        let got = raw(&mut c, text).await;
        assert_eq!(got["result"]["value"], json!([1]), "{text}: {got}");
    }
    let cases = [
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"get","params":["pe"]}"#,
            -32602,
            "positional",
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"get","params":null}"#,
            -32602,
            "missing field `key`",
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"get","params":{"key":"a","key":"b"}}"#,
            -32602,
            "duplicate field `key`",
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"update","params":{"key":"pe"}}"#,
            -32602,
            "missing field `value`",
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"update","params":{"key":"pe","value":1,"ttl_ms":"x"}}"#,
            -32602,
            "invalid type",
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"get","params":5}"#,
            -32600,
            "\"params\" must be an object",
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"get","params":{"key":"pe"},"params":{}}"#,
            -32600,
            "duplicate field `params`",
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"get","params":{"key":"pe"}"#,
            -32700,
            "EOF",
        ),
    ];
    for (text, code, says) in cases {
        let got = raw(&mut c, text).await;
        assert_eq!(got["error"]["code"], json!(code), "{text}: {got}");
        let message = got["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{text}: {got}");
    }
    // Nothing was changed by the refused updates.
    let got = raw(
        &mut c,
        r#"{"jsonrpc":"2.0","id":4,"method":"get","params":{"key":"pe"}}"#,
    )
    .await;
    assert_eq!(got["result"]["value"], json!([1]), "{got}");
}
