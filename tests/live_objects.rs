//! Live objects over a real hub and real sockets: `patch` (RFC 6902),
//! `merge` (RFC 7396), `incr` (i64/f64 arithmetic) and key expiry (`ttl_ms`,
//! `expire` events, lazy expiry, which writes keep or replace an expiry),
//! plus a property test of patch/merge/incr/update/delete against a
//! `serde_json::Value` + `json_patch` model, subscriber included.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use memhub::ServerConfig;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------

/// Most events any helper reads while looking for one (keeps loops bounded).
const MAX_EVENTS: usize = 500;

fn rev_of(v: &Value) -> u64 {
    v["rev"]
        .as_u64()
        .unwrap_or_else(|| panic!("rev must be a u64 in {v}"))
}

/// Unix milliseconds, the clock `expires_at_ms` uses.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

async fn get(c: &mut Client, key: &str) -> Value {
    c.call("get", json!({ "key": key })).await
}

/// The `keys` row of `key`, if listed.
async fn key_row(c: &mut Client, key: &str) -> Option<Value> {
    let page = c.call("keys", json!({"prefix": key, "limit": 1000})).await;
    page["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("keys result has a keys array: {page}"))
        .iter()
        .find(|r| r["key"] == key)
        .cloned()
}

/// The `expires_at_ms` of a listed key (None when the row has none).
async fn expires_at(c: &mut Client, key: &str) -> Option<u64> {
    let row = key_row(c, key)
        .await
        .unwrap_or_else(|| panic!("{key} should be listed by keys"));
    row.get("expires_at_ms").map(|t| {
        t.as_u64()
            .unwrap_or_else(|| panic!("expires_at_ms is Unix ms: {row}"))
    })
}

/// Reads events on `c` until one satisfies `pred`; returns the events read
/// before it, and it.
async fn event_where(
    c: &mut Client,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> (Vec<Value>, Value) {
    let mut before = Vec::new();
    for _ in 0..MAX_EVENTS {
        let e = c.next_event().await;
        if pred(&e) {
            return (before, e);
        }
        before.push(e);
    }
    panic!("no event matching {what} within {MAX_EVENTS} events: {before:?}");
}

/// Waits for the `expire` event of `key` on `c` (the sweeper's doing);
/// returns the events read before it and it.
async fn expire_event_of(c: &mut Client, key: &str) -> (Vec<Value>, Value) {
    event_where(c, &format!("expire of {key}"), |e| {
        e["key"] == key && e["event"] == "expire"
    })
    .await
}

/// Writes a sentinel to `key` through `w` and returns every event `s`
/// received before the sentinel's: proves what did (not) happen before.
async fn events_before_sentinel(w: &mut Client, s: &mut Client, key: &str) -> Vec<Value> {
    let r = w
        .call("update", json!({"key": key, "value": "sentinel"}))
        .await;
    let rev = rev_of(&r);
    event_where(s, "the sentinel", |e| e["key"] == key && e["rev"] == rev)
        .await
        .0
}

/// Polls `get` until the key is absent (bounded); returns the local Unix ms
/// at which it was first seen absent.
async fn wait_until_absent(c: &mut Client, key: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let resp = c.request("get", json!({ "key": key })).await;
        if resp.get("error").is_some() {
            assert_eq!(resp["error"]["code"], -32001, "get {key}: {resp}");
            return now_ms();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never expired: {resp}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts the key is still present (a write right after creation), unless
/// the test machine stalled past `deadline_ms`, where absence is legitimate.
async fn assert_present_before(c: &mut Client, key: &str, deadline_ms: u64) {
    let resp = c.request("get", json!({ "key": key })).await;
    if now_ms() < deadline_ms {
        assert!(
            resp.get("result").is_some(),
            "{key} must be readable before its deadline: {resp}"
        );
    }
}

fn tiny_values() -> ServerConfig {
    ServerConfig {
        max_value_bytes: 64,
        ..ServerConfig::default()
    }
}

fn no_sweeper() -> ServerConfig {
    ServerConfig {
        expiry_sweep_interval: Duration::from_secs(3600),
        ..ServerConfig::default()
    }
}

// ---------------------------------------------------------------------------
// patch
// ---------------------------------------------------------------------------

#[tokio::test]
async fn patch_applies_every_op_and_emits_one_update_with_the_result() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    c.call(
        "update",
        json!({"key": "doc", "value": {"a": 1, "b": [1, 2], "n": {"x": true}}}),
    )
    .await;
    let snap = s.call("subscribe", json!({"key": "doc"})).await;
    let sub = snap["sub"].clone();
    let ops = json!([
        {"op": "add", "path": "/c", "value": 3},
        {"op": "replace", "path": "/a", "value": 10},
        {"op": "remove", "path": "/b/0"},
        {"op": "add", "path": "/b/-", "value": 9},
        {"op": "move", "from": "/n/x", "path": "/moved"},
        {"op": "copy", "from": "/a", "path": "/a2"},
        {"op": "test", "path": "/a", "value": 10}
    ]);
    let expected = json!({"a": 10, "b": [2, 9], "c": 3, "n": {}, "moved": true, "a2": 10});
    let r = c.call("patch", json!({"key": "doc", "ops": ops})).await;
    assert_eq!(r["value"], expected, "patch result: {r}");
    let rev = rev_of(&r);
    assert!(rev > rev_of(&snap), "patch bumps the rev: {r} after {snap}");
    assert_eq!(
        get(&mut c, "doc").await,
        json!({"value": expected, "rev": rev})
    );

    let e = s.next_event().await;
    assert_eq!(
        e,
        json!({"sub": sub, "key": "doc", "event": "update", "value": expected, "rev": rev}),
        "one update event carrying the resulting value"
    );
    let extra = events_before_sentinel(&mut c, &mut s, "doc").await;
    assert!(
        extra.is_empty(),
        "a patch emits exactly one event: {extra:?}"
    );
}

#[tokio::test]
async fn a_failing_patch_op_changes_nothing_and_names_its_index() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    c.call(
        "update",
        json!({"key": "doc", "value": {"a": 1, "list": [1, 2]}}),
    )
    .await;
    s.call("subscribe", json!({"key": "doc"})).await;
    let before = get(&mut c, "doc").await;

    let cases = [
        // a test that fails after two ops that applied
        (
            json!([
                {"op": "replace", "path": "/a", "value": 99},
                {"op": "add", "path": "/d", "value": 1},
                {"op": "test", "path": "/a", "value": 100}
            ]),
            2,
        ),
        // remove of a missing path after a successful add
        (
            json!([
                {"op": "add", "path": "/x", "value": 1},
                {"op": "remove", "path": "/nope"}
            ]),
            1,
        ),
        (json!([{"op": "test", "path": "/a", "value": 2}]), 0),
        (
            json!([
                {"op": "add", "path": "/x", "value": 1},
                {"op": "remove", "path": "/list/0"},
                {"op": "replace", "path": "/missing", "value": 5}
            ]),
            2,
        ),
        (
            json!([
                {"op": "add", "path": "/x", "value": 1},
                {"op": "add", "path": "/list/10", "value": 1}
            ]),
            1,
        ),
        (
            json!([{"op": "add", "path": "/no/such/parent", "value": 1}]),
            0,
        ),
    ];
    for (ops, index) in cases {
        let err = expect_err(&mut c, "patch", json!({"key": "doc", "ops": ops}), -32005).await;
        assert_eq!(
            err["data"],
            json!({ "op_index": index }),
            "op_index for {ops}: {err}"
        );
        assert_eq!(
            get(&mut c, "doc").await,
            before,
            "a failed patch ({ops}) leaves value and rev unchanged"
        );
    }
    let extra = events_before_sentinel(&mut c, &mut s, "doc").await;
    assert!(extra.is_empty(), "failed patches emit no event: {extra:?}");
}

#[tokio::test]
async fn patch_of_an_absent_key_is_not_found_and_creates_nothing() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let err = expect_err(
        &mut c,
        "patch",
        json!({"key": "ghost", "ops": [{"op": "add", "path": "/a", "value": 1}]}),
        -32001,
    )
    .await;
    assert_eq!(err["data"], json!({"key": "ghost"}), "{err}");
    let err = expect_err(&mut c, "patch", json!({"key": "ghost", "ops": []}), -32001).await;
    assert_eq!(err["data"], json!({"key": "ghost"}), "{err}");
    assert_eq!(
        c.call("is_memoized", json!({"key": "ghost"})).await,
        json!(false)
    );
}

#[tokio::test]
async fn malformed_patch_ops_are_invalid_params() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    c.call("update", json!({"key": "doc", "value": {"a": 1}}))
        .await;
    let before = get(&mut c, "doc").await;
    let bad = [
        json!({"key": "doc", "ops": {"op": "add", "path": "/b", "value": 1}}),
        json!({"key": "doc", "ops": "add /b 1"}),
        json!({"key": "doc", "ops": 7}),
        json!({"key": "doc", "ops": null}),
        json!({"key": "doc"}),
        json!({"key": "doc", "ops": [{"op": "frobnicate", "path": "/a"}]}),
        json!({"key": "doc", "ops": [{"op": "add", "value": 1}]}),
        json!({"key": "doc", "ops": [{"path": "/a", "value": 1}]}),
        json!({"key": "doc", "ops": [{"op": "replace", "path": "/a"}]}),
        json!({"key": "doc", "ops": [{"op": "move", "path": "/b"}]}),
        json!({"key": "doc", "ops": [{"op": "add", "path": "/b", "value": 1}, 5]}),
    ];
    for params in bad {
        expect_err(&mut c, "patch", params, -32602).await;
        assert_eq!(get(&mut c, "doc").await, before, "nothing changes");
    }
}

#[tokio::test]
async fn patch_honours_if_rev() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let w = c
        .call("update", json!({"key": "doc", "value": {"n": 0}}))
        .await;
    let rev = rev_of(&w);
    let ops = json!([{"op": "replace", "path": "/n", "value": 1}]);

    let err = expect_err(
        &mut c,
        "patch",
        json!({"key": "doc", "ops": ops, "if_rev": rev + 100}),
        -32002,
    )
    .await;
    assert_eq!(err["data"], json!({ "rev": rev }), "{err}");
    assert_eq!(
        get(&mut c, "doc").await,
        json!({"value": {"n": 0}, "rev": rev})
    );

    let r = c
        .call("patch", json!({"key": "doc", "ops": ops, "if_rev": rev}))
        .await;
    assert_eq!(r["value"], json!({"n": 1}));
    let rev2 = rev_of(&r);
    assert!(rev2 > rev);

    // The old rev no longer matches.
    let err = expect_err(
        &mut c,
        "patch",
        json!({"key": "doc", "ops": ops, "if_rev": rev}),
        -32002,
    )
    .await;
    assert_eq!(err["data"], json!({ "rev": rev2 }), "{err}");

    // if_rev is checked first: an absent key with a nonzero if_rev is a mismatch.
    let err = expect_err(
        &mut c,
        "patch",
        json!({"key": "ghost", "ops": ops, "if_rev": 5}),
        -32002,
    )
    .await;
    assert_eq!(err["data"], json!({"rev": 0}), "{err}");
    // if_rev 0 matches an absent key, which patch then cannot change.
    expect_err(
        &mut c,
        "patch",
        json!({"key": "ghost", "ops": ops, "if_rev": 0}),
        -32001,
    )
    .await;
    // ... and does not match a present one.
    let err = expect_err(
        &mut c,
        "patch",
        json!({"key": "doc", "ops": ops, "if_rev": 0}),
        -32002,
    )
    .await;
    assert_eq!(err["data"], json!({ "rev": rev2 }), "{err}");
}

#[tokio::test]
async fn patch_and_merge_results_over_the_value_limit_are_refused() {
    let hub = TestHub::with_config(tiny_values()).await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    c.call("update", json!({"key": "doc", "value": {"a": 1}}))
        .await;
    s.call("subscribe", json!({"prefix": ""})).await;
    let before = get(&mut c, "doc").await;
    let long = "x".repeat(100);

    let err = expect_err(
        &mut c,
        "patch",
        json!({"key": "doc", "ops": [{"op": "add", "path": "/s", "value": long}]}),
        -32602,
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("64"), "{err}");
    assert_eq!(get(&mut c, "doc").await, before, "patch changed nothing");

    expect_err(
        &mut c,
        "merge",
        json!({"key": "doc", "value": {"s": long}}),
        -32602,
    )
    .await;
    assert_eq!(get(&mut c, "doc").await, before, "merge changed nothing");

    // Growing by small steps: fine until the result crosses the limit.
    let r = c
        .call(
            "patch",
            json!({"key": "doc", "ops": [{"op": "add", "path": "/s", "value": "x".repeat(40)}]}),
        )
        .await;
    let after_ok = json!({"value": r["value"], "rev": r["rev"]});
    expect_err(
        &mut c,
        "patch",
        json!({"key": "doc", "ops": [{"op": "add", "path": "/t", "value": "y".repeat(20)}]}),
        -32602,
    )
    .await;
    assert_eq!(get(&mut c, "doc").await, after_ok);

    // merge creating a key over the limit creates nothing.
    expect_err(
        &mut c,
        "merge",
        json!({"key": "new", "value": {"s": long}}),
        -32602,
    )
    .await;
    assert_eq!(
        c.call("is_memoized", json!({"key": "new"})).await,
        json!(false)
    );

    let events = events_before_sentinel(&mut c, &mut s, "sentinel").await;
    assert_eq!(
        events.len(),
        1,
        "only the accepted patch emitted: {events:?}"
    );
    assert_eq!(events[0]["rev"], r["rev"]);
}

// ---------------------------------------------------------------------------
// merge
// ---------------------------------------------------------------------------

#[tokio::test]
async fn merge_follows_rfc7396() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    c.call(
        "update",
        json!({"key": "m", "value": {"a": 1, "b": {"c": 2, "d": 3}, "e": [1], "keep": "k"}}),
    )
    .await;
    let sub = s.call("subscribe", json!({"key": "m"})).await["sub"].clone();

    let r = c
        .call(
            "merge",
            json!({"key": "m", "value": {
                "a": null,
                "b": {"c": 5, "d": null, "f": 1},
                "e": {"x": 1},
                "g": "new",
                "never": null
            }}),
        )
        .await;
    let expected = json!({"b": {"c": 5, "f": 1}, "e": {"x": 1}, "g": "new", "keep": "k"});
    assert_eq!(r["value"], expected, "{r}");
    assert_eq!(r["created"], json!(false), "{r}");
    let rev = rev_of(&r);
    assert_eq!(
        get(&mut c, "m").await,
        json!({"value": expected, "rev": rev})
    );
    assert_eq!(
        s.next_event().await,
        json!({"sub": sub, "key": "m", "event": "update", "value": expected, "rev": rev})
    );

    // A non-object patch replaces the whole value.
    let r = c.call("merge", json!({"key": "m", "value": [1, 2]})).await;
    assert_eq!(r["value"], json!([1, 2]));
    // An object patch onto a non-object starts from {} (null members dropped).
    let r = c
        .call("merge", json!({"key": "m", "value": {"y": 1, "z": null}}))
        .await;
    assert_eq!(r["value"], json!({"y": 1}));
    let r = c.call("merge", json!({"key": "m", "value": "s"})).await;
    assert_eq!(r["value"], json!("s"));
    // A null patch replaces the value by null: the key still exists.
    let r = c.call("merge", json!({"key": "m", "value": null})).await;
    assert_eq!(r["value"], Value::Null);
    assert_eq!(r["created"], json!(false));
    assert_eq!(
        get(&mut c, "m").await,
        json!({"value": null, "rev": r["rev"]})
    );
    assert_eq!(
        c.call("is_memoized", json!({"key": "m"})).await,
        json!(true)
    );

    // A missing `value` is invalid params.
    expect_err(&mut c, "merge", json!({"key": "m"}), -32602).await;
}

#[tokio::test]
async fn merge_on_an_absent_key_applies_to_null_and_creates() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    let snap = s.call("subscribe", json!({"key": "fresh"})).await;
    assert_eq!(snap["exists"], json!(false));
    let sub = snap["sub"].clone();

    let r = c
        .call(
            "merge",
            json!({"key": "fresh", "value": {"a": 1, "b": null, "c": {"d": null, "e": 2}}}),
        )
        .await;
    let expected = json!({"a": 1, "c": {"e": 2}});
    assert_eq!(r["value"], expected, "{r}");
    assert_eq!(r["created"], json!(true), "{r}");
    let rev = rev_of(&r);
    assert_eq!(
        get(&mut c, "fresh").await,
        json!({"value": expected, "rev": rev})
    );
    assert_eq!(
        s.next_event().await,
        json!({"sub": sub, "key": "fresh", "event": "update", "value": expected, "rev": rev})
    );

    let r = c.call("merge", json!({"key": "scalar", "value": 5})).await;
    assert_eq!(r["value"], json!(5));
    assert_eq!(r["created"], json!(true));
}

#[tokio::test]
async fn merge_honours_if_rev_including_zero() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let r = c
        .call("merge", json!({"key": "m", "value": {"a": 1}, "if_rev": 0}))
        .await;
    assert_eq!(
        r["created"],
        json!(true),
        "if_rev 0 on an absent key applies: {r}"
    );
    let rev = rev_of(&r);

    let err = expect_err(
        &mut c,
        "merge",
        json!({"key": "m", "value": {"b": 2}, "if_rev": 0}),
        -32002,
    )
    .await;
    assert_eq!(err["data"], json!({ "rev": rev }), "{err}");
    let err = expect_err(
        &mut c,
        "merge",
        json!({"key": "m", "value": {"b": 2}, "if_rev": rev + 1}),
        -32002,
    )
    .await;
    assert_eq!(err["data"], json!({ "rev": rev }), "{err}");
    assert_eq!(
        get(&mut c, "m").await,
        json!({"value": {"a": 1}, "rev": rev})
    );

    let r = c
        .call(
            "merge",
            json!({"key": "m", "value": {"b": 2}, "if_rev": rev}),
        )
        .await;
    assert_eq!(r["value"], json!({"a": 1, "b": 2}));
    assert_eq!(r["created"], json!(false));

    let err = expect_err(
        &mut c,
        "merge",
        json!({"key": "other", "value": {"b": 2}, "if_rev": 3}),
        -32002,
    )
    .await;
    assert_eq!(err["data"], json!({"rev": 0}), "{err}");
    assert_eq!(
        c.call("is_memoized", json!({"key": "other"})).await,
        json!(false)
    );
}

// ---------------------------------------------------------------------------
// incr
// ---------------------------------------------------------------------------

#[tokio::test]
async fn incr_counts_from_zero_by_default_one_and_emits_updates() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    let sub = s.call("subscribe", json!({"key": "n"})).await["sub"].clone();

    let steps = [
        (json!({"key": "n"}), 1, true),
        (json!({"key": "n"}), 2, false),
        (json!({"key": "n", "by": 5}), 7, false),
        (json!({"key": "n", "by": -10}), -3, false),
        (json!({"key": "n", "by": null}), -2, false),
        (json!({"key": "n", "by": 0}), -2, false),
    ];
    let mut last = 0;
    for (params, value, created) in steps {
        let r = c.call("incr", params.clone()).await;
        assert_eq!(r["value"], json!(value), "{params}: {r}");
        assert_eq!(r["created"], json!(created), "{params}: {r}");
        let rev = rev_of(&r);
        assert!(rev > last, "revs increase: {r}");
        last = rev;
        assert_eq!(
            s.next_event().await,
            json!({"sub": sub, "key": "n", "event": "update", "value": value, "rev": rev})
        );
    }
    assert_eq!(get(&mut c, "n").await, json!({"value": -2, "rev": last}));

    // i64 arithmetic is exact where f64 is not (2^53 + 1).
    c.call(
        "update",
        json!({"key": "big", "value": 9_007_199_254_740_993_i64}),
    )
    .await;
    let r = c.call("incr", json!({"key": "big"})).await;
    assert_eq!(r["value"].as_i64(), Some(9_007_199_254_740_994), "{r}");
    let r = c
        .call(
            "incr",
            json!({"key": "big", "by": i64::MAX - 9_007_199_254_740_994}),
        )
        .await;
    assert_eq!(r["value"].as_i64(), Some(i64::MAX), "{r}");
    let r = c.call("incr", json!({"key": "neg", "by": i64::MIN})).await;
    assert_eq!(r["value"].as_i64(), Some(i64::MIN), "{r}");
    assert_eq!(r["created"], json!(true), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incr_is_exact_under_50_concurrent_connections() {
    const CONNS: usize = 50;
    const EACH: usize = 100;
    let hub = TestHub::start().await;
    let url = hub.url();
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await;
            let mut seen = Vec::with_capacity(EACH);
            for _ in 0..EACH {
                let r = c.call("incr", json!({"key": "counter"})).await;
                let v = r["value"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("an integer: {r}"));
                seen.push((v, r["created"] == json!(true), rev_of(&r)));
            }
            seen
        }));
    }
    let mut values = Vec::new();
    let mut revs = HashSet::new();
    let mut created = 0;
    for t in tasks {
        for (v, c, rev) in tokio::time::timeout(WAIT, t)
            .await
            .expect("incr workers finish")
            .expect("worker ok")
        {
            values.push(v);
            created += usize::from(c);
            assert!(revs.insert(rev), "rev {rev} answered twice");
        }
    }
    values.sort_unstable();
    let expected: Vec<i64> = (1..=(CONNS * EACH) as i64).collect();
    assert!(
        values == expected,
        "every increment saw a distinct value 1..=5000 (first differences: {:?})",
        values
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a != b)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(created, 1, "exactly one incr created the key");
    let mut c = hub.client().await;
    assert_eq!(get(&mut c, "counter").await["value"], json!(5000));
}

#[tokio::test]
async fn incr_overflow_is_refused_and_changes_nothing() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let cases = [
        (json!(i64::MAX), json!(1)),
        (json!(i64::MIN), json!(-1)),
        (json!(i64::MAX - 5), json!(i64::MAX)),
        // Integers outside the i64 range are integers too: no float fallback.
        (json!(u64::MAX), json!(1)),
        (json!(1), json!(u64::MAX)),
    ];
    for (start, by) in cases {
        c.call("update", json!({"key": "n", "value": start})).await;
        let before = get(&mut c, "n").await;
        let err = expect_err(&mut c, "incr", json!({"key": "n", "by": by}), -32006).await;
        assert_eq!(err["data"], json!({"key": "n"}), "{err}");
        assert_eq!(
            get(&mut c, "n").await,
            before,
            "{start} + {by}: value unchanged"
        );
    }
}

#[tokio::test]
async fn incr_of_a_non_number_is_refused_and_changes_nothing() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    s.call("subscribe", json!({"prefix": "v/"})).await;
    let held = [
        json!("5"),
        json!({"n": 1}),
        Value::Null,
        json!(true),
        json!([1]),
    ];
    for (i, v) in held.iter().enumerate() {
        let key = format!("v/{i}");
        c.call("update", json!({"key": key, "value": v})).await;
        let before = get(&mut c, &key).await;
        let err = expect_err(&mut c, "incr", json!({"key": key, "by": 2}), -32006).await;
        assert_eq!(err["data"], json!({ "key": key }), "{err}");
        assert_eq!(get(&mut c, &key).await, before, "{v} unchanged");
    }
    let events = events_before_sentinel(&mut c, &mut s, "v/sentinel").await;
    assert!(
        events.iter().all(|e| e["value"] != json!(2)),
        "no refused incr emitted an event: {events:?}"
    );
    assert_eq!(events.len(), held.len(), "only the updates: {events:?}");
}

#[tokio::test]
async fn incr_uses_f64_when_either_side_is_a_float() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    c.call("update", json!({"key": "f", "value": 2})).await;
    let r = c.call("incr", json!({"key": "f", "by": 0.5})).await;
    assert_eq!(r["value"].as_f64(), Some(2.5), "{r}");
    let r = c.call("incr", json!({"key": "f"})).await;
    assert_eq!(r["value"].as_f64(), Some(3.5), "{r}");
    let r = c.call("incr", json!({"key": "f", "by": -0.5})).await;
    assert_eq!(r["value"].as_f64(), Some(3.0), "{r}");
    assert_eq!(get(&mut c, "f").await["value"].as_f64(), Some(3.0));

    c.call("update", json!({"key": "g", "value": 0.1})).await;
    let r = c.call("incr", json!({"key": "g", "by": 0.2})).await;
    assert_eq!(r["value"].as_f64(), Some(0.1_f64 + 0.2_f64), "{r}");
    assert_ne!(r["value"].as_f64(), Some(0.3), "f64, not decimal: {r}");

    let r = c.call("incr", json!({"key": "h", "by": 1.25})).await;
    assert_eq!(r["value"].as_f64(), Some(1.25), "absent starts at 0: {r}");
    assert_eq!(r["created"], json!(true));
}

#[tokio::test]
async fn incr_with_a_non_finite_result_is_refused() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    for (start, by) in [(1e308, 1e308), (-1e308, -1e308)] {
        c.call("update", json!({"key": "x", "value": start})).await;
        let before = get(&mut c, "x").await;
        let err = expect_err(&mut c, "incr", json!({"key": "x", "by": by}), -32006).await;
        assert_eq!(err["data"], json!({"key": "x"}), "{err}");
        assert_eq!(get(&mut c, "x").await, before);
    }
}

#[tokio::test]
async fn incr_by_must_be_a_number() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    c.call("update", json!({"key": "n", "value": 1})).await;
    let before = get(&mut c, "n").await;
    for by in [json!("1"), json!(true), json!([1]), json!({"n": 1})] {
        expect_err(&mut c, "incr", json!({"key": "n", "by": by}), -32602).await;
        assert_eq!(get(&mut c, "n").await, before, "by {by}: unchanged");
        expect_err(&mut c, "incr", json!({"key": "absent", "by": by}), -32602).await;
    }
    assert_eq!(
        c.call("is_memoized", json!({"key": "absent"})).await,
        json!(false)
    );
}

#[tokio::test]
async fn incr_result_over_the_value_limit_is_refused() {
    // PROTOCOL.md: the value limit applies to the value resulting from every
    // write, incr included.
    let hub = TestHub::with_config(ServerConfig {
        max_value_bytes: 8,
        ..ServerConfig::default()
    })
    .await;
    let mut c = hub.client().await;
    c.call("update", json!({"key": "n", "value": 9_999_999}))
        .await;
    let r = c.call("incr", json!({"key": "n", "by": 1})).await;
    assert_eq!(r["value"], json!(10_000_000), "8 bytes fit: {r}");
    let before = get(&mut c, "n").await;
    expect_err(
        &mut c,
        "incr",
        json!({"key": "n", "by": 90_000_000}),
        -32602,
    )
    .await;
    assert_eq!(get(&mut c, "n").await, before, "value unchanged");
    expect_err(
        &mut c,
        "incr",
        json!({"key": "m", "by": 0.123456789}),
        -32602,
    )
    .await;
    assert_eq!(
        c.call("is_memoized", json!({"key": "m"})).await,
        json!(false)
    );
}

// ---------------------------------------------------------------------------
// TTL and expiry
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ttl_ms_must_be_an_integer_of_at_least_one() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    c.call("update", json!({"key": "doc", "value": {"a": 1}}))
        .await;
    let before = get(&mut c, "doc").await;
    for ttl in [json!(0), json!(-1), json!(1.5), json!("100"), json!(true)] {
        let writes = [
            ("update", json!({"key": "t", "value": 1, "ttl_ms": ttl})),
            ("memoize", json!({"key": "t", "value": 1, "ttl_ms": ttl})),
            (
                "merge",
                json!({"key": "t", "value": {"a": 1}, "ttl_ms": ttl}),
            ),
            ("incr", json!({"key": "t", "ttl_ms": ttl})),
            (
                "patch",
                json!({"key": "doc", "ops": [{"op": "add", "path": "/b", "value": 2}], "ttl_ms": ttl}),
            ),
        ];
        for (method, params) in writes {
            expect_err(&mut c, method, params, -32602).await;
        }
        assert_eq!(
            c.call("is_memoized", json!({"key": "t"})).await,
            json!(false),
            "ttl_ms {ttl}: nothing created"
        );
        assert_eq!(
            get(&mut c, "doc").await,
            before,
            "ttl_ms {ttl}: nothing patched"
        );
    }
    // null counts as absent: no expiry.
    c.call("update", json!({"key": "t", "value": 1, "ttl_ms": null}))
        .await;
    assert_eq!(expires_at(&mut c, "t").await, None);
    // 1 is the smallest valid ttl.
    c.call("update", json!({"key": "one", "value": 1, "ttl_ms": 1}))
        .await;
}

#[tokio::test]
async fn expire_event_reaches_key_and_prefix_subscribers_after_the_deadline() {
    const TTL: u64 = 100;
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    let ksub = s.call("subscribe", json!({"key": "exp/k"})).await["sub"].clone();
    let psub = s.call("subscribe", json!({"prefix": "exp/"})).await["sub"].clone();

    let t0 = now_ms();
    let w = c
        .call(
            "update",
            json!({"key": "exp/k", "value": [1, 2], "ttl_ms": TTL}),
        )
        .await;
    let wrev = rev_of(&w);

    let mut expires = BTreeMap::new();
    for _ in 0..MAX_EVENTS {
        if expires.len() == 2 {
            break;
        }
        let e = s.next_event().await;
        match e["event"].as_str() {
            Some("update") => assert_eq!(e["rev"], json!(wrev), "{e}"),
            Some("expire") => {
                let at = now_ms();
                assert!(
                    at >= t0 + TTL,
                    "expired {} ms after the write, before its {TTL} ms ttl: {e}",
                    at - t0
                );
                assert_eq!(e["key"], "exp/k", "{e}");
                assert!(e.get("value").is_none(), "expire carries no value: {e}");
                assert!(rev_of(&e) > wrev, "expire rev above the write's: {e}");
                assert!(
                    expires.insert(e["sub"].to_string(), e.clone()).is_none(),
                    "one expire per subscription: {e}"
                );
            }
            _ => panic!("unexpected event {e}"),
        }
    }
    assert_eq!(expires.len(), 2, "{expires:?}");
    let k = &expires[&ksub.to_string()];
    let p = &expires[&psub.to_string()];
    assert_eq!(k["rev"], p["rev"], "one expiry, one rev");
    expect_err(&mut c, "get", json!({"key": "exp/k"}), -32001).await;
    assert_eq!(key_row(&mut c, "exp/k").await, None);
}

#[tokio::test]
async fn lazy_expiry_hides_the_key_even_when_the_sweeper_never_runs() {
    const TTL: u64 = 100;
    let hub = TestHub::with_config(no_sweeper()).await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    let ksub = s.call("subscribe", json!({"key": "lz/k"})).await;
    assert_eq!(ksub["exists"], json!(false));
    let ksub = ksub["sub"].clone();
    let psub = s.call("subscribe", json!({"prefix": "lz/"})).await["sub"].clone();
    c.call("update", json!({"key": "lz/other", "value": 0}))
        .await;

    let t0 = now_ms();
    let w = c
        .call(
            "update",
            json!({"key": "lz/k", "value": {"v": 1}, "ttl_ms": TTL}),
        )
        .await;
    let r1 = rev_of(&w);
    assert_present_before(&mut c, "lz/k", t0 + TTL).await;

    let gone = wait_until_absent(&mut c, "lz/k").await;
    assert!(
        gone >= t0 + TTL,
        "hidden {} ms after a {TTL} ms ttl",
        gone - t0
    );
    assert_eq!(
        c.call("is_memoized", json!({"key": "lz/k"})).await,
        json!(false)
    );
    let page = c.call("keys", json!({"prefix": "lz/"})).await;
    let listed: Vec<&Value> = page["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["key"])
        .collect();
    assert_eq!(
        listed,
        vec!["lz/other"],
        "keys hides the expired key: {page}"
    );

    let m = c.call("memoize", json!({"key": "lz/k", "value": 2})).await;
    assert_eq!(m["created"], json!(true), "memoize creates it again: {m}");
    assert_eq!(m["value"], json!(2));
    let r2 = rev_of(&m);
    assert_eq!(get(&mut c, "lz/k").await, json!({"value": 2, "rev": r2}));

    // Both subscriptions: update, expire, update, in rev order.
    let mut by_sub: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut finals = 0;
    for _ in 0..MAX_EVENTS {
        if finals == 2 {
            break;
        }
        let e = s.next_event().await;
        if e["key"] != "lz/k" {
            continue;
        }
        finals += usize::from(e["rev"] == json!(r2));
        by_sub.entry(e["sub"].to_string()).or_default().push(e);
    }
    for sub in [&ksub, &psub] {
        let evs = by_sub.remove(&sub.to_string()).unwrap_or_default();
        assert_eq!(evs.len(), 3, "sub {sub}: update, expire, update: {evs:?}");
        assert_eq!(
            evs[0],
            json!({"sub": sub, "key": "lz/k", "event": "update", "value": {"v": 1}, "rev": r1})
        );
        assert_eq!(evs[1]["event"], "expire", "{evs:?}");
        assert!(evs[1].get("value").is_none(), "{evs:?}");
        let e = rev_of(&evs[1]);
        assert!(r1 < e && e < r2, "expire rev between the writes: {evs:?}");
        assert_eq!(
            evs[2],
            json!({"sub": sub, "key": "lz/k", "event": "update", "value": 2, "rev": r2})
        );
    }

    // A subscription taken after the deadline sees the key absent.
    let w = c
        .call("update", json!({"key": "lz/s", "value": 1, "ttl_ms": TTL}))
        .await;
    assert!(rev_of(&w) > r2);
    wait_until_absent(&mut c, "lz/s").await;
    let mut s2 = hub.client().await;
    let snap = s2.call("subscribe", json!({"key": "lz/s"})).await;
    assert_eq!(snap["exists"], json!(false), "{snap}");
}

#[tokio::test]
async fn writes_to_an_expired_unswept_key_see_it_absent_and_emit_expire_first() {
    const TTL: u64 = 100;
    let hub = TestHub::with_config(no_sweeper()).await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    s.call("subscribe", json!({"prefix": "w/"})).await;

    let mut old = BTreeMap::new();
    let t0 = now_ms();
    for (key, value) in [
        ("w/update", json!("old")),
        ("w/incr", json!(41)),
        ("w/merge", json!({"a": 1, "b": 2})),
        ("w/patch", json!({"a": 1})),
        ("w/delete", json!(1)),
        ("w/cas", json!(1)),
    ] {
        let w = c
            .call("update", json!({"key": key, "value": value, "ttl_ms": TTL}))
            .await;
        old.insert(key, rev_of(&w));
    }
    for key in old.keys() {
        let gone = wait_until_absent(&mut c, key).await;
        assert!(gone >= t0 + TTL);
    }

    let u = c
        .call("update", json!({"key": "w/update", "value": "new"}))
        .await;
    assert_eq!(u["created"], json!(true), "the expired key was absent: {u}");
    let i = c.call("incr", json!({"key": "w/incr"})).await;
    assert_eq!(i["value"], json!(1), "incr starts again at 0: {i}");
    assert_eq!(i["created"], json!(true), "{i}");
    let m = c
        .call(
            "merge",
            json!({"key": "w/merge", "value": {"c": 3, "d": null}}),
        )
        .await;
    assert_eq!(m["value"], json!({"c": 3}), "merge applies to null: {m}");
    assert_eq!(m["created"], json!(true), "{m}");
    let ops = json!([{"op": "add", "path": "/b", "value": 2}]);
    let err = expect_err(
        &mut c,
        "patch",
        json!({"key": "w/patch", "ops": ops}),
        -32001,
    )
    .await;
    assert_eq!(err["data"], json!({"key": "w/patch"}));
    expect_err(&mut c, "delete", json!({"key": "w/delete"}), -32001).await;
    let err = expect_err(
        &mut c,
        "update",
        json!({"key": "w/cas", "value": 2, "if_rev": old["w/cas"]}),
        -32002,
    )
    .await;
    assert_eq!(
        err["data"],
        json!({"rev": 0}),
        "expired means absent: {err}"
    );
    for key in ["w/patch", "w/delete", "w/cas"] {
        expect_err(&mut c, "get", json!({ "key": key }), -32001).await;
    }

    let events = events_before_sentinel(&mut c, &mut s, "w/zz").await;
    let mut per_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in &events {
        per_key
            .entry(e["key"].as_str().unwrap().to_string())
            .or_default()
            .push(e.clone());
    }
    for (key, new) in [("w/update", &u), ("w/incr", &i), ("w/merge", &m)] {
        let evs = &per_key[key];
        let kinds: Vec<&str> = evs.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["update", "expire", "update"], "{key}: {evs:?}");
        assert_eq!(rev_of(&evs[0]), old[key]);
        let exp = rev_of(&evs[1]);
        assert!(
            old[key] < exp && exp < rev_of(new),
            "{key}: expire rev between the writes: {evs:?}"
        );
        assert!(evs[1].get("value").is_none(), "{evs:?}");
        assert_eq!(rev_of(&evs[2]), rev_of(new));
        assert_eq!(
            evs[2]["value"],
            new.get("value").cloned().unwrap_or(json!("new"))
        );
    }
    for key in ["w/patch", "w/delete", "w/cas"] {
        let evs = &per_key[key];
        assert_eq!(evs[0]["event"], "update", "{key}: {evs:?}");
        assert!(
            evs[1..].iter().all(|e| e["event"] == "expire"),
            "{key}: a refused write emits no update/delete: {evs:?}"
        );
    }
}

#[tokio::test]
async fn keys_shows_expires_at_ms_only_for_keys_with_an_expiry() {
    const TTL: u64 = 60_000;
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let before = now_ms();
    c.call(
        "update",
        json!({"key": "x/update", "value": 1, "ttl_ms": TTL}),
    )
    .await;
    c.call(
        "memoize",
        json!({"key": "x/memoize", "value": 1, "ttl_ms": TTL}),
    )
    .await;
    c.call(
        "merge",
        json!({"key": "x/merge", "value": {"a": 1}, "ttl_ms": TTL}),
    )
    .await;
    c.call("incr", json!({"key": "x/incr", "ttl_ms": TTL}))
        .await;
    c.call("update", json!({"key": "x/plain", "value": 1}))
        .await;
    c.call("memoize", json!({"key": "x/plain2", "value": 1}))
        .await;
    let after = now_ms();
    let page = c.call("keys", json!({"prefix": "x/"})).await;
    let rows = page["keys"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{page}");
    for row in rows {
        let key = row["key"].as_str().unwrap();
        if key.starts_with("x/plain") {
            assert!(row.get("expires_at_ms").is_none(), "no expiry: {row}");
        } else {
            let t = row["expires_at_ms"]
                .as_u64()
                .unwrap_or_else(|| panic!("expires_at_ms in {row}"));
            assert!(
                before + TTL <= t && t <= after + TTL,
                "{key}: expires_at_ms {t} outside [{}, {}]",
                before + TTL,
                after + TTL
            );
        }
    }
}

#[tokio::test]
async fn update_without_ttl_clears_the_expiry() {
    const TTL: u64 = 100;
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    s.call("subscribe", json!({"prefix": "u/"})).await;
    c.call("update", json!({"key": "u/k", "value": 1, "ttl_ms": TTL}))
        .await;
    assert!(expires_at(&mut c, "u/k").await.is_some());
    // A companion written after u/k with the same ttl expires no earlier.
    c.call("update", json!({"key": "u/z", "value": 1, "ttl_ms": TTL}))
        .await;
    let w = c.call("update", json!({"key": "u/k", "value": 2})).await;
    assert_eq!(expires_at(&mut c, "u/k").await, None, "expiry cleared");

    let (before, _) = expire_event_of(&mut s, "u/z").await;
    assert!(
        before.iter().all(|e| e["event"] == "update"),
        "nothing but u/z expired: {before:?}"
    );
    assert_eq!(
        get(&mut c, "u/k").await,
        json!({"value": 2, "rev": w["rev"]}),
        "u/k survives past its old deadline"
    );
    let extra = events_before_sentinel(&mut c, &mut s, "u/sentinel").await;
    assert!(
        extra.iter().all(|e| e["key"] != "u/k"),
        "u/k never expires: {extra:?}"
    );
}

#[tokio::test]
async fn patch_merge_and_incr_keep_the_expiry() {
    const TTL: u64 = 200;
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    s.call("subscribe", json!({"prefix": "keep/"})).await;
    let t0 = now_ms();
    c.call(
        "update",
        json!({"key": "keep/p", "value": {"a": 1}, "ttl_ms": TTL}),
    )
    .await;
    c.call(
        "update",
        json!({"key": "keep/m", "value": {"a": 1}, "ttl_ms": TTL}),
    )
    .await;
    c.call(
        "update",
        json!({"key": "keep/i", "value": 1, "ttl_ms": TTL}),
    )
    .await;
    let mut deadlines = BTreeMap::new();
    for key in ["keep/p", "keep/m", "keep/i"] {
        deadlines.insert(key, expires_at(&mut c, key).await.expect("has an expiry"));
    }
    let writes = [
        (
            "patch",
            json!({"key": "keep/p", "ops": [{"op": "add", "path": "/b", "value": 2}]}),
        ),
        ("merge", json!({"key": "keep/m", "value": {"b": 2}})),
        ("incr", json!({"key": "keep/i", "by": 2})),
    ];
    for (method, params) in writes {
        let resp = c.request(method, params.clone()).await;
        if now_ms() < t0 + TTL {
            assert!(resp.get("result").is_some(), "{method} {params}: {resp}");
        }
    }
    for (key, t) in &deadlines {
        if now_ms() < *t {
            assert_eq!(
                expires_at(&mut c, key).await,
                Some(*t),
                "{key}: the write kept the expiry"
            );
        }
    }
    let mut left: HashSet<&str> = deadlines.keys().copied().collect();
    for _ in 0..MAX_EVENTS {
        if left.is_empty() {
            break;
        }
        let e = s.next_event().await;
        if e["event"] == "expire" {
            let key = e["key"].as_str().unwrap();
            assert!(left.remove(key), "one expire for {key}: {e}");
            assert!(now_ms() >= deadlines[key], "{key} expired early: {e}");
        }
    }
    assert!(left.is_empty(), "never expired: {left:?}");
    for key in deadlines.keys() {
        expect_err(&mut c, "get", json!({ "key": key }), -32001).await;
    }
}

#[tokio::test]
async fn patch_merge_and_incr_with_ttl_replace_the_expiry() {
    const SHORT: u64 = 150;
    const LONG: u64 = 60_000;
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    s.call("subscribe", json!({"prefix": "r/"})).await;
    for key in ["r/p", "r/m", "r/i"] {
        let value = if key == "r/i" {
            json!(1)
        } else {
            json!({"a": 1})
        };
        c.call(
            "update",
            json!({"key": key, "value": value, "ttl_ms": SHORT}),
        )
        .await;
    }
    // A key with a long expiry that a short ttl_ms shortens.
    c.call(
        "update",
        json!({"key": "r/short", "value": 1, "ttl_ms": LONG}),
    )
    .await;

    let before = now_ms();
    let p = c
        .call(
            "patch",
            json!({"key": "r/p", "ops": [{"op": "add", "path": "/b", "value": 2}], "ttl_ms": LONG}),
        )
        .await;
    let m = c
        .call(
            "merge",
            json!({"key": "r/m", "value": {"b": 2}, "ttl_ms": LONG}),
        )
        .await;
    let i = c
        .call("incr", json!({"key": "r/i", "by": 2, "ttl_ms": LONG}))
        .await;
    let after = now_ms();
    assert_eq!(p["value"], json!({"a": 1, "b": 2}));
    assert_eq!(m["value"], json!({"a": 1, "b": 2}));
    assert_eq!(i["value"], json!(3));
    for key in ["r/p", "r/m", "r/i"] {
        let t = expires_at(&mut c, key).await.expect("still expires");
        assert!(
            before + LONG <= t && t <= after + LONG,
            "{key}: expiry replaced by now+{LONG}: {t} not in [{}, {}]",
            before + LONG,
            after + LONG
        );
    }
    let t_short = now_ms();
    let i2 = c
        .call("incr", json!({"key": "r/short", "ttl_ms": SHORT}))
        .await;
    assert_eq!(i2["value"], json!(2));
    // A companion with the short ttl, written after everything else.
    c.call("update", json!({"key": "r/z", "value": 1, "ttl_ms": SHORT}))
        .await;

    let mut expired = HashSet::new();
    for _ in 0..MAX_EVENTS {
        if expired.contains("r/z") && expired.contains("r/short") {
            break;
        }
        let e = s.next_event().await;
        if e["event"] == "expire" {
            expired.insert(e["key"].as_str().unwrap().to_string());
        }
    }
    assert!(
        now_ms() >= t_short + SHORT,
        "r/short expired no earlier than its new ttl"
    );
    for key in ["r/p", "r/m", "r/i"] {
        assert!(!expired.contains(key), "{key} expired at its old deadline");
        let g = get(&mut c, key).await;
        assert!(g["rev"].as_u64().is_some(), "{key} survives: {g}");
    }
    assert_eq!(get(&mut c, "r/i").await["value"], json!(3));
}

#[tokio::test]
async fn memoize_on_an_existing_key_ignores_ttl_ms() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    s.call("subscribe", json!({"prefix": "mi/"})).await;

    // No expiry, and memoize with ttl_ms does not add one.
    let w = c
        .call("update", json!({"key": "mi/none", "value": "v"}))
        .await;
    let r = c
        .call(
            "memoize",
            json!({"key": "mi/none", "value": "other", "ttl_ms": 50}),
        )
        .await;
    assert_eq!(
        r,
        json!({"value": "v", "rev": w["rev"], "created": false}),
        "memoize returns what is held"
    );
    assert_eq!(expires_at(&mut c, "mi/none").await, None);

    // An expiry that memoize with another ttl_ms does not move.
    c.call(
        "update",
        json!({"key": "mi/ttl", "value": 1, "ttl_ms": 150}),
    )
    .await;
    let deadline = expires_at(&mut c, "mi/ttl").await.unwrap();
    let r = c
        .call(
            "memoize",
            json!({"key": "mi/ttl", "value": 2, "ttl_ms": 60_000}),
        )
        .await;
    assert_eq!(r["created"], json!(false));
    if now_ms() < deadline {
        assert_eq!(expires_at(&mut c, "mi/ttl").await, Some(deadline));
    }
    // A companion written after memoize, with a longer ttl than it asked for.
    c.call("update", json!({"key": "mi/z", "value": 1, "ttl_ms": 60}))
        .await;

    let mut expired = HashSet::new();
    for _ in 0..MAX_EVENTS {
        if expired.contains("mi/z") && expired.contains("mi/ttl") {
            break;
        }
        let e = s.next_event().await;
        if e["event"] == "expire" {
            let key = e["key"].as_str().unwrap().to_string();
            if key == "mi/ttl" {
                assert!(now_ms() >= deadline, "mi/ttl expired on time: {e}");
            }
            expired.insert(key);
        }
    }
    assert!(!expired.contains("mi/none"), "{expired:?}");
    assert_eq!(
        get(&mut c, "mi/none").await,
        json!({"value": "v", "rev": w["rev"]}),
        "mi/none never got an expiry"
    );
    expect_err(&mut c, "get", json!({"key": "mi/ttl"}), -32001).await;
}

// ---------------------------------------------------------------------------
// Property test: patch / merge / incr / update / delete against a model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum IfRev {
    Absent,
    Current,
    Zero,
    Stale,
}

#[derive(Debug, Clone)]
enum Op {
    Update(usize, Value),
    Delete(usize),
    Patch(usize, Vec<Value>, IfRev),
    Merge(usize, Value, IfRev),
    Incr(usize, Option<Value>),
}

const MODEL_KEYS: usize = 3;
const PATHS: [&str; 7] = ["/a", "/b", "/c", "/a/x", "/b/0", "/b/-", "/b/1"];

fn small_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (-2i64..3).prop_map(|n| json!(n)),
        Just(json!(0.5)),
        Just(json!("s")),
        Just(json!([1, 2])),
        (-1i64..2).prop_map(|n| json!({ "x": n })),
    ]
}

fn doc_value() -> impl Strategy<Value = Value> {
    let array = prop::collection::vec(-2i64..3, 0..3).prop_map(|v| json!(v));
    let object = (
        small_value(),
        prop_oneof![array, small_value()],
        prop::option::of(small_value()),
    )
        .prop_map(|(a, b, c)| {
            let mut m = Map::new();
            m.insert("a".into(), a);
            m.insert("b".into(), b);
            if let Some(c) = c {
                m.insert("c".into(), c);
            }
            Value::Object(m)
        });
    prop_oneof![
        8 => object,
        2 => (-5i64..5).prop_map(|n| json!(n)),
        1 => Just(json!(1.5)),
        1 => Just(json!(i64::MAX)),
        1 => Just(json!("text")),
        1 => Just(Value::Null),
    ]
}

fn patch_op() -> impl Strategy<Value = Value> {
    // Weighted towards ops that apply to the generated objects, so that
    // successful patches are common and failures still occur.
    let kind = prop_oneof![3 => Just(0usize), 1 => Just(1), 3 => Just(2), 1 => Just(3)];
    let path = prop_oneof![
        4 => Just(0usize),
        2 => Just(1),
        2 => Just(2),
        1 => 3..PATHS.len(),
    ];
    (kind, path, small_value()).prop_map(|(kind, p, v)| {
        let path = PATHS[p];
        match kind {
            0 => json!({"op": "add", "path": path, "value": v}),
            1 => json!({"op": "remove", "path": path}),
            2 => json!({"op": "replace", "path": path, "value": v}),
            _ => json!({"op": "test", "path": path, "value": v}),
        }
    })
}

fn merge_patch() -> impl Strategy<Value = Value> {
    let member = prop_oneof![
        2 => Just(Value::Null),
        3 => small_value(),
        1 => (prop::option::of(-1i64..2), -1i64..2).prop_map(|(x, y)| json!({"x": x, "y": y})),
    ];
    let object =
        prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c", "d"]), member, 0..3)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    prop_oneof![4 => object, 1 => small_value()]
}

fn incr_by() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        3 => (-3i64..4).prop_map(|n| Some(json!(n))),
        1 => Just(Some(json!(0.25))),
        1 => Just(Some(json!(-1.5))),
        1 => Just(Some(json!(i64::MAX))),
    ]
}

fn if_rev() -> impl Strategy<Value = IfRev> {
    prop_oneof![
        4 => Just(IfRev::Absent),
        2 => Just(IfRev::Current),
        1 => Just(IfRev::Zero),
        1 => Just(IfRev::Stale),
    ]
}

fn model_op() -> impl Strategy<Value = Op> {
    let k = 0..MODEL_KEYS;
    prop_oneof![
        4 => (k.clone(), doc_value()).prop_map(|(k, v)| Op::Update(k, v)),
        1 => k.clone().prop_map(Op::Delete),
        4 => (k.clone(), prop::collection::vec(patch_op(), 1..3), if_rev())
            .prop_map(|(k, ops, r)| Op::Patch(k, ops, r)),
        3 => (k.clone(), merge_patch(), if_rev()).prop_map(|(k, v, r)| Op::Merge(k, v, r)),
        3 => (k, incr_by()).prop_map(|(k, by)| Op::Incr(k, by)),
    ]
}

type Expected = Result<Value, (i64, Value)>;

/// The reference: key → (value, rev), the hub rev, and the events a prefix
/// subscriber must see (without their `sub`).
struct Model {
    map: BTreeMap<String, (Value, u64)>,
    rev: u64,
    events: Vec<Value>,
}

impl Model {
    fn resolve(&self, key: &str, r: &IfRev) -> Option<u64> {
        let cur = self.map.get(key).map_or(0, |e| e.1);
        match r {
            IfRev::Absent => None,
            IfRev::Current => Some(cur),
            IfRev::Zero => Some(0),
            IfRev::Stale => Some(cur + 1000),
        }
    }

    fn check_rev(&self, key: &str, if_rev: Option<u64>) -> Result<(), (i64, Value)> {
        let cur = self.map.get(key).map_or(0, |e| e.1);
        match if_rev {
            Some(r) if r != cur => Err((-32002, json!({ "rev": cur }))),
            _ => Ok(()),
        }
    }

    /// Stores `value` with a new rev and records its update event.
    fn write(&mut self, key: &str, value: Value) -> (u64, bool) {
        self.rev += 1;
        self.events
            .push(json!({"key": key, "event": "update", "value": value, "rev": self.rev}));
        let created = self
            .map
            .insert(key.to_string(), (value, self.rev))
            .is_none();
        (self.rev, created)
    }

    fn update(&mut self, key: &str, value: &Value) -> Expected {
        let (rev, created) = self.write(key, value.clone());
        Ok(json!({"rev": rev, "created": created}))
    }

    fn delete(&mut self, key: &str) -> Expected {
        if self.map.remove(key).is_none() {
            return Err((-32001, json!({ "key": key })));
        }
        self.rev += 1;
        self.events
            .push(json!({"key": key, "event": "delete", "rev": self.rev}));
        Ok(json!({ "rev": self.rev }))
    }

    fn patch(&mut self, key: &str, ops: &[Value], if_rev: Option<u64>) -> Expected {
        self.check_rev(key, if_rev)?;
        let Some((cur, _)) = self.map.get(key) else {
            return Err((-32001, json!({ "key": key })));
        };
        let p: json_patch::Patch =
            serde_json::from_value(Value::Array(ops.to_vec())).expect("well-formed ops");
        let mut doc = cur.clone();
        if let Err(e) = json_patch::patch(&mut doc, &p.0) {
            return Err((-32005, json!({ "op_index": e.operation })));
        }
        let (rev, _) = self.write(key, doc.clone());
        Ok(json!({"value": doc, "rev": rev}))
    }

    fn merge(&mut self, key: &str, patch: &Value, if_rev: Option<u64>) -> Expected {
        self.check_rev(key, if_rev)?;
        let mut doc = self.map.get(key).map_or(Value::Null, |e| e.0.clone());
        json_patch::merge(&mut doc, patch);
        let (rev, created) = self.write(key, doc.clone());
        Ok(json!({"value": doc, "rev": rev, "created": created}))
    }

    fn incr(&mut self, key: &str, by: Option<&Value>) -> Expected {
        let not_a_number = || (-32006, json!({ "key": key }));
        let held = match self.map.get(key) {
            None => serde_json::Number::from(0),
            Some((Value::Number(n), _)) => n.clone(),
            Some(_) => return Err(not_a_number()),
        };
        let by = match by {
            None => serde_json::Number::from(1),
            Some(Value::Number(n)) => n.clone(),
            Some(other) => panic!("the generator only makes numbers, not {other}"),
        };
        let sum = match (held.as_i64(), by.as_i64()) {
            (Some(x), Some(y)) => x.checked_add(y).map(serde_json::Number::from),
            _ => serde_json::Number::from_f64(held.as_f64().unwrap() + by.as_f64().unwrap()),
        }
        .ok_or_else(not_a_number)?;
        let (rev, created) = self.write(key, Value::Number(sum.clone()));
        Ok(json!({"value": sum, "rev": rev, "created": created}))
    }
}

struct Shared {
    rt: tokio::runtime::Runtime,
    hub: TestHub,
}

/// One hub and runtime for every case (only this test uses them, so the
/// hub's rev moves only with the model's writes).
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let hub = rt.block_on(TestHub::start());
        Shared { rt, hub }
    })
}

async fn run_case(hub: &TestHub, case: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let ns = format!("case{case:05}/");
    let mut c = hub.client().await;
    let mut s = hub.client().await;
    let sub = s.call("subscribe", json!({ "prefix": ns })).await["sub"].clone();
    let rev0 = c.call("stats", json!({})).await["rev"].as_u64().unwrap();
    let mut model = Model {
        map: BTreeMap::new(),
        rev: rev0,
        events: Vec::new(),
    };
    let key = |k: usize| format!("{ns}k{k}");
    for op in ops {
        let (method, params, expected) = match op {
            Op::Update(k, v) => {
                let key = key(*k);
                let expected = model.update(&key, v);
                ("update", json!({"key": key, "value": v}), expected)
            }
            Op::Delete(k) => {
                let key = key(*k);
                let expected = model.delete(&key);
                ("delete", json!({ "key": key }), expected)
            }
            Op::Patch(k, ops, r) => {
                let key = key(*k);
                let r = model.resolve(&key, r);
                let expected = model.patch(&key, ops, r);
                (
                    "patch",
                    json!({"key": key, "ops": ops, "if_rev": r}),
                    expected,
                )
            }
            Op::Merge(k, v, r) => {
                let key = key(*k);
                let r = model.resolve(&key, r);
                let expected = model.merge(&key, v, r);
                (
                    "merge",
                    json!({"key": key, "value": v, "if_rev": r}),
                    expected,
                )
            }
            Op::Incr(k, by) => {
                let key = key(*k);
                let expected = model.incr(&key, by.as_ref());
                ("incr", json!({"key": key, "by": by}), expected)
            }
        };
        let resp = c.request(method, params.clone()).await;
        match expected {
            Ok(result) => {
                prop_assert_eq!(&resp["result"], &result, "{} {} → {}", method, params, resp)
            }
            Err((code, data)) => {
                prop_assert_eq!(
                    &resp["error"]["code"],
                    &json!(code),
                    "{} {} → {}",
                    method,
                    params,
                    resp
                );
                prop_assert_eq!(
                    &resp["error"]["data"],
                    &data,
                    "{} {} → {}",
                    method,
                    params,
                    resp
                );
            }
        }
    }
    // A final write: the subscriber must see exactly the model's events up to it.
    let sentinel = format!("{ns}~sentinel");
    let r = c
        .call("update", json!({"key": sentinel, "value": "end"}))
        .await;
    model.update(&sentinel, &json!("end")).unwrap();
    prop_assert_eq!(rev_of(&r), model.rev, "sentinel rev");
    for expected in &model.events {
        let mut expected = expected.clone();
        expected["sub"] = sub.clone();
        let e = s.next_event().await;
        prop_assert_eq!(&e, &expected);
    }
    // Final state matches too.
    for (k, (v, rev)) in &model.map {
        prop_assert_eq!(get(&mut c, k).await, json!({"value": v, "rev": rev}));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn live_object_ops_match_a_json_patch_model(ops in prop::collection::vec(model_op(), 1..30)) {
        static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let s = shared();
        s.rt.block_on(run_case(&s.hub, case, &ops))?;
    }
}
