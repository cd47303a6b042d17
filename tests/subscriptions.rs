//! Subscriptions and events against a real hub over real sockets: ordering,
//! snapshot atomicity, prefixes, unsubscribe, vanishing clients, the lagged
//! path (and its memory bound), and compare-and-set races.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use memhub::ServerConfig;
use serde_json::{json, Value};
use tokio_tungstenite::MaybeTlsStream;

// ---------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------

/// A config whose outbound queue is so large that no test that reads its
/// events can lag: for tests about ordering, not about the lagged path.
fn roomy() -> ServerConfig {
    ServerConfig {
        outbound_max_events: 1 << 20,
        outbound_max_bytes: 1 << 30,
        ..ServerConfig::default()
    }
}

/// The small outbound queue of the lagged tests.
fn tight() -> ServerConfig {
    ServerConfig {
        outbound_max_events: 8,
        outbound_max_bytes: 64 << 10,
        ..ServerConfig::default()
    }
}

/// An `update` request frame built by hand (no JSON escaping of big values).
/// `value_json` must already be valid JSON text.
fn update_frame(id: &str, key: &str, value_json: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":"{id}","method":"update","params":{{"key":"{key}","value":{value_json}}}}}"#
    )
}

/// A big JSON string value whose first five characters number it.
fn big_value(i: usize, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 8);
    s.push('"');
    s.push_str(&format!("{i:05}"));
    s.push_str(&"x".repeat(bytes.saturating_sub(5)));
    s.push('"');
    s
}

/// The number at the start of a `big_value` string.
fn big_index(v: &Value) -> usize {
    v.as_str().expect("a string value")[..5]
        .parse()
        .expect("numbered value")
}

/// The next event's params, or `None` if none arrives within `d`.
async fn next_event_within(c: &mut Client, d: Duration) -> Option<Value> {
    if let Some(e) = c.events.pop_front() {
        return Some(e);
    }
    let v = tokio::time::timeout(d, c.recv()).await.ok()?;
    assert_eq!(v["method"], "event", "expected an event, got {v}");
    Some(v["params"].clone())
}

fn rev(v: &Value) -> u64 {
    v["rev"].as_u64().unwrap_or_else(|| panic!("no rev in {v}"))
}

fn sub_id(v: &Value) -> u64 {
    v["sub"].as_u64().unwrap_or_else(|| panic!("no sub in {v}"))
}

/// Sends `n` pipelined updates with big values (ids "w1".."wn"; update `i`
/// writes value `i` to `keys[i % keys.len()]`),
/// then collects every response, in order, and returns their revs. The
/// responses are collected within `Client::recv`'s timeout, so a writer
/// that is held up by somebody else's socket fails this.
async fn pipelined_big_updates(
    w: &mut Client,
    keys: &[String],
    n: usize,
    bytes: usize,
) -> Vec<u64> {
    for i in 1..=n {
        let key = &keys[i % keys.len()];
        w.send_text(update_frame(&format!("w{i}"), key, &big_value(i, bytes)))
            .await;
    }
    let mut revs = Vec::with_capacity(n);
    for i in 1..=n {
        let r = w.recv_response().await;
        assert_eq!(r["id"], format!("w{i}"), "response out of order: {r}");
        assert!(r.get("error").is_none(), "update {i} failed: {r}");
        revs.push(rev(&r["result"]));
    }
    assert!(
        revs.windows(2).all(|p| p[0] < p[1]),
        "writer revs not increasing"
    );
    revs
}

// ---------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_updates_arrives_complete_and_in_order() {
    init_logs();
    let hub = TestHub::start().await;
    let mut s = hub.client().await;
    let snap = s.call("subscribe", json!({"key": "k"})).await;
    assert_eq!(snap, json!({"sub": 1, "exists": false}));

    // 1000 pipelined updates: all frames first, then all responses.
    let mut w = hub.client().await;
    for i in 1..=1000u64 {
        let f = json!({"jsonrpc": "2.0", "id": i, "method": "update",
                       "params": {"key": "k", "value": i}});
        w.send_text(f.to_string()).await;
    }
    let mut wrevs = Vec::new();
    for i in 1..=1000u64 {
        let r = w.recv_response().await;
        assert_eq!(r["id"], i, "{r}");
        wrevs.push(rev(&r["result"]));
    }

    let mut last = 0;
    for i in 1..=1000u64 {
        let e = s.next_event().await;
        assert_eq!(e["sub"], 1, "{e}");
        assert_eq!(e["key"], "k", "{e}");
        assert_eq!(e["event"], "update", "{e}");
        assert_eq!(e["value"], i, "event {i} out of order: {e}");
        assert!(rev(&e) > last, "revs not increasing: {e} after rev {last}");
        assert_eq!(
            rev(&e),
            wrevs[i as usize - 1],
            "event rev differs from the write's"
        );
        last = rev(&e);
    }
    // Exactly 1000: the next thing on the socket is the answer to a request.
    let r = s.request("version", json!({})).await;
    assert!(r.get("result").is_some(), "{r}");
    assert!(s.events.is_empty(), "extra events: {:?}", s.events);
    hub.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Snapshot atomicity
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_snapshot_is_atomic_with_a_concurrent_writer() {
    init_logs();
    let hub = TestHub::with_config(roomy()).await;
    let mut w = hub.client().await;
    w.call("update", json!({"key": "k", "value": 0})).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n: u64 = 0;
            while !stop.load(Ordering::SeqCst) && n < 2_000_000 {
                n += 1;
                w.call("update", json!({"key": "k", "value": n})).await;
            }
            n
        })
    };

    let mut s = hub.client().await;
    for round in 0..50 {
        let snap = s.call("subscribe", json!({"key": "k"})).await;
        // Events of the new subscription are held until its response; older
        // subscriptions are gone. So nothing may have arrived before it.
        assert!(
            s.events.is_empty(),
            "round {round}: events before the snapshot: {:?}",
            s.events
        );
        let id = sub_id(&snap);
        assert_eq!(snap["exists"], true, "{snap}");
        let v0 = snap["value"].as_u64().expect("numeric snapshot");
        let r0 = rev(&snap);

        let first = s.next_event().await;
        assert_eq!(
            sub_id(&first),
            id,
            "round {round}: event of another sub {first}"
        );
        assert_eq!(first["event"], "update", "{first}");
        assert_eq!(
            first["value"].as_u64(),
            Some(v0 + 1),
            "round {round}: snapshot value {v0} rev {r0}, first event {first}"
        );
        assert!(
            rev(&first) > r0,
            "round {round}: event rev ≤ snapshot rev {r0}: {first}"
        );

        // A couple more, still consecutive.
        let mut last = (v0 + 1, rev(&first));
        for _ in 0..2 {
            let e = s.next_event().await;
            assert_eq!(sub_id(&e), id, "{e}");
            assert_eq!(
                e["value"].as_u64(),
                Some(last.0 + 1),
                "gap: {e} after {last:?}"
            );
            assert!(rev(&e) > last.1, "{e}");
            last = (last.0 + 1, rev(&e));
        }

        assert_eq!(s.call("unsubscribe", json!({"sub": id})).await, json!(true));
        // Whatever arrived before the unsubscribe response continues the stream.
        for e in s.events.drain(..) {
            assert_eq!(sub_id(&e), id, "{e}");
            assert_eq!(
                e["value"].as_u64(),
                Some(last.0 + 1),
                "gap: {e} after {last:?}"
            );
            assert!(rev(&e) > last.1, "{e}");
            last = (last.0 + 1, rev(&e));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let writes = tokio::time::timeout(WAIT, writer)
        .await
        .expect("writer stops")
        .unwrap();
    assert!(writes >= 150, "writer made only {writes} writes");
    // No event of any unsubscribed subscription arrived after its unsubscribe.
    let r = s.request("version", json!({})).await;
    assert!(r.get("result").is_some(), "{r}");
    assert!(
        s.events.is_empty(),
        "events after the last unsubscribe: {:?}",
        s.events
    );
    hub.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Absent keys
// ---------------------------------------------------------------------------

#[tokio::test]
async fn subscribing_to_an_absent_key_sees_creation_and_deletion() {
    init_logs();
    let hub = TestHub::start().await;
    let mut s = hub.client().await;
    let snap = s.call("subscribe", json!({"key": "ghost"})).await;
    assert_eq!(snap, json!({"sub": 1, "exists": false}));

    let mut w = hub.client().await;
    let m = w
        .call(
            "memoize",
            json!({"key": "ghost", "value": {"a": [1, null]}}),
        )
        .await;
    assert_eq!(m["created"], true);
    let e = s.next_event().await;
    assert_eq!(
        e,
        json!({"sub": 1, "key": "ghost", "event": "update", "value": {"a": [1, null]}, "rev": m["rev"]})
    );

    // memoize on an existing key changes nothing and emits nothing.
    let m2 = w.call("memoize", json!({"key": "ghost", "value": 5})).await;
    assert_eq!(m2["created"], false);

    let d = w.call("delete", json!({"key": "ghost"})).await;
    assert!(rev(&d) > rev(&m));
    let e = s.next_event().await;
    assert_eq!(
        e,
        json!({"sub": 1, "key": "ghost", "event": "delete", "rev": d["rev"]})
    );
    assert!(e.get("value").is_none());

    // A value of null is a present key: update event with value null.
    let u = w
        .call("update", json!({"key": "ghost", "value": null}))
        .await;
    let e = s.next_event().await;
    assert_eq!(
        e,
        json!({"sub": 1, "key": "ghost", "event": "update", "value": null, "rev": u["rev"]})
    );
    hub.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Prefix subscriptions
// ---------------------------------------------------------------------------

// More worker threads than cores: the writers' publishes really interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefix_subscriptions_filter_order_and_overlap() {
    init_logs();
    let hub = TestHub::with_config(roomy()).await;
    let mut s = hub.client().await;
    assert_eq!(
        s.call("subscribe", json!({"prefix": "room/"})).await,
        json!({"sub": 1})
    );
    assert_eq!(
        s.call("subscribe", json!({"prefix": ""})).await,
        json!({"sub": 2})
    );
    let k = s.call("subscribe", json!({"key": "room/a"})).await;
    assert_eq!(k, json!({"sub": 3, "exists": false}));

    // Sequential writes: a write that completed before another began is
    // delivered first, across keys.
    let mut w = hub.client().await;
    let r1 = rev(&w.call("update", json!({"key": "room/a", "value": 1})).await);
    let r2 = rev(&w
        .call("update", json!({"key": "other/x", "value": 1}))
        .await);
    let r3 = rev(&w.call("update", json!({"key": "room/b", "value": 1})).await);
    let r4 = rev(&w.call("delete", json!({"key": "room/a"})).await);
    let expected = vec![
        json!({"sub": 1, "key": "room/a", "event": "update", "value": 1, "rev": r1}),
        json!({"sub": 2, "key": "room/a", "event": "update", "value": 1, "rev": r1}),
        json!({"sub": 3, "key": "room/a", "event": "update", "value": 1, "rev": r1}),
        json!({"sub": 2, "key": "other/x", "event": "update", "value": 1, "rev": r2}),
        json!({"sub": 1, "key": "room/b", "event": "update", "value": 1, "rev": r3}),
        json!({"sub": 2, "key": "room/b", "event": "update", "value": 1, "rev": r3}),
        json!({"sub": 1, "key": "room/a", "event": "delete", "rev": r4}),
        json!({"sub": 2, "key": "room/a", "event": "delete", "rev": r4}),
        json!({"sub": 3, "key": "room/a", "event": "delete", "rev": r4}),
    ];
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(s.next_event().await);
    }
    // Per subscription the order is fixed; across subscriptions of one write
    // the hub may interleave, so compare each subscription's stream.
    for id in 1..=3 {
        let g: Vec<&Value> = got.iter().filter(|e| e["sub"] == id).collect();
        let x: Vec<&Value> = expected.iter().filter(|e| e["sub"] == id).collect();
        assert_eq!(g, x, "subscription {id}");
    }

    // Concurrent writers on five keys, one connection each: every event
    // reaches every matching subscription, each key's events in rev order.
    const N: u64 = 200;
    const KEYS: [&str; 5] = ["room/a", "room/b", "room/c", "other/x", "other/y"];
    let mut tasks = Vec::new();
    for key in KEYS {
        let mut c = hub.client().await;
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 1..=N {
                revs.push(rev(&c
                    .call("update", json!({"key": key, "value": i}))
                    .await));
            }
            (key, revs)
        }));
    }
    let mut writes = std::collections::HashMap::new();
    for t in tasks {
        let (key, revs) = t.await.unwrap();
        writes.insert(key.to_string(), revs);
    }
    // sub 1: the three room/ keys; sub 2: all five; sub 3: room/a.
    let mut streams: Vec<(u64, &str)> = Vec::new();
    for key in KEYS {
        if key.starts_with("room/") {
            streams.push((1, key));
        }
        streams.push((2, key));
    }
    streams.push((3, "room/a"));
    let total = streams.len() * N as usize;
    let mut seen: std::collections::HashMap<(u64, String), Vec<(u64, u64)>> = Default::default();
    for n in 0..total {
        let Some(e) = next_event_within(&mut s, Duration::from_secs(3)).await else {
            let mut missing: Vec<String> = seen
                .iter()
                .filter_map(|((id, k), v)| {
                    let vals: Vec<u64> = v.iter().map(|p| p.0).collect();
                    let gone: Vec<u64> = (1..=N).filter(|x| !vals.contains(x)).collect();
                    (!gone.is_empty()).then(|| format!("sub {id} key {k}: values missing {gone:?}"))
                })
                .collect();
            missing.sort();
            panic!(
                "only {n} of {total} events arrived:\n{}",
                missing.join("\n")
            );
        };
        assert_eq!(e["event"], "update", "{e}");
        let key = e["key"].as_str().unwrap().to_string();
        let id = sub_id(&e);
        match id {
            1 => assert!(key.starts_with("room/"), "room/ sub got {e}"),
            2 => {}
            3 => assert_eq!(key, "room/a", "{e}"),
            _ => panic!("unknown sub in {e}"),
        }
        seen.entry((id, key))
            .or_default()
            .push((e["value"].as_u64().unwrap(), rev(&e)));
    }
    let want_values: Vec<u64> = (1..=N).collect();
    for (id, key) in streams {
        let got = seen.remove(&(id, key.to_string())).unwrap_or_default();
        let values: Vec<u64> = got.iter().map(|p| p.0).collect();
        let revs: Vec<u64> = got.iter().map(|p| p.1).collect();
        assert_eq!(
            values, want_values,
            "sub {id} key {key}: values out of order"
        );
        assert_eq!(
            revs, writes[key],
            "sub {id} key {key}: revs differ from the writes'"
        );
    }
    assert!(seen.is_empty(), "unexpected streams: {seen:?}");

    // Nothing else is pending: the next event is a fresh write's.
    let rz = rev(&w.call("update", json!({"key": "zzz", "value": true})).await);
    let e = s.next_event().await;
    assert_eq!(
        e,
        json!({"sub": 2, "key": "zzz", "event": "update", "value": true, "rev": rz})
    );
    hub.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Unsubscribe
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_events_for_that_subscription_only() {
    init_logs();
    let hub = TestHub::with_config(roomy()).await;
    let mut s = hub.client().await;
    let a = sub_id(&s.call("subscribe", json!({"key": "a"})).await);
    let b = sub_id(&s.call("subscribe", json!({"key": "b"})).await);
    assert_ne!(a, b);
    assert_eq!(hub.stats().await["subscriptions"], 2);

    // A writer hammers "a" while the subscription goes away.
    let stop = Arc::new(AtomicBool::new(false));
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let mut w = hub.client().await;
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && n < 1_000_000 {
                n += 1;
                w.call("update", json!({"key": "a", "value": n})).await;
                let _ = progress_tx.send(n);
            }
            (w, n)
        })
    };
    // The subscription is live mid-stream.
    for _ in 0..5 {
        let e = s.next_event().await;
        assert_eq!(sub_id(&e), a, "{e}");
    }
    assert_eq!(s.call("unsubscribe", json!({"sub": a})).await, json!(true));
    for e in s.events.drain(..) {
        assert_eq!(sub_id(&e), a, "{e}");
    }
    // Keep writing "a" for a while after the unsubscribe.
    let at_unsubscribe = *progress.borrow();
    tokio::time::timeout(WAIT, progress.wait_for(|&n| n >= at_unsubscribe + 50))
        .await
        .expect("writer progresses")
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let (mut w, n) = tokio::time::timeout(WAIT, writer)
        .await
        .expect("writer stops")
        .unwrap();
    assert!(
        n >= at_unsubscribe + 50,
        "writer wrote only {n}, {at_unsubscribe} of them before the unsubscribe"
    );

    // Every write of "a" completed before this one began, so any leaked
    // event for the old subscription would arrive before this event.
    let rb = rev(&w.call("update", json!({"key": "b", "value": "x"})).await);
    let e = s.next_event().await;
    assert_eq!(
        e,
        json!({"sub": b, "key": "b", "event": "update", "value": "x", "rev": rb})
    );

    assert_eq!(s.call("unsubscribe", json!({"sub": a})).await, json!(false));
    assert_eq!(
        s.call("unsubscribe", json!({"sub": 999})).await,
        json!(false)
    );
    assert_eq!(hub.stats().await["subscriptions"], 1);
    // Another connection cannot remove this connection's subscription.
    assert_eq!(w.call("unsubscribe", json!({"sub": b})).await, json!(false));
    assert_eq!(s.call("unsubscribe", json!({"sub": b})).await, json!(true));
    assert_eq!(hub.stats().await["subscriptions"], 0);
    assert!(s.events.is_empty(), "{:?}", s.events);
    hub.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// A client vanishing mid-stream
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanishing_subscriber_disturbs_nobody_and_is_cleaned_up() {
    init_logs();
    let hub = TestHub::with_config(roomy()).await;
    const N: u64 = 1500;

    let mut doomed = hub.client().await;
    doomed.call("subscribe", json!({"key": "k"})).await;
    doomed.call("subscribe", json!({"prefix": ""})).await;

    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut c = hub.client().await;
        let id = sub_id(&c.call("subscribe", json!({"key": "k"})).await);
        readers.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 1..=N {
                let e = c.next_event().await;
                assert_eq!(sub_id(&e), id, "{e}");
                assert_eq!(e["value"], i, "missing or reordered event: {e}");
                assert!(rev(&e) > last, "{e}");
                last = rev(&e);
            }
            c
        }));
    }
    assert_eq!(hub.stats().await["subscriptions"], 4);

    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let mut w = hub.client().await;
    let writer = tokio::spawn(async move {
        for i in 1..=N {
            // `call` panics on an error response.
            w.call("update", json!({"key": "k", "value": i})).await;
            let _ = progress_tx.send(i);
        }
        w
    });

    // Mid-stream (the doomed client has not read a single event), reset it.
    tokio::time::timeout(WAIT, progress.wait_for(|&i| i >= N / 4))
        .await
        .expect("writer progresses")
        .unwrap();
    match doomed.ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.set_zero_linger().expect("SO_LINGER 0"),
        _ => unreachable!("plain TCP"),
    }
    drop(doomed); // close with linger 0: the peer sees a TCP RST

    let _w = tokio::time::timeout(WAIT * 3, writer)
        .await
        .expect("writer done")
        .unwrap();
    let mut alive = Vec::new();
    for r in readers {
        let mut c = tokio::time::timeout(WAIT * 3, r)
            .await
            .expect("reader done")
            .unwrap();
        assert!(c
            .request("version", json!({}))
            .await
            .get("result")
            .is_some());
        assert!(c.events.is_empty(), "extra events {:?}", c.events);
        alive.push(c);
    }
    // Two readers, the writer and the stats connection itself; 2 subscriptions.
    hub.wait_stats(|s| s["subscriptions"] == 2 && s["connections"] == 4)
        .await;
    hub.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// The lagged path
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_key_subscriber_lags_then_converges_without_blocking_writers() {
    init_logs();
    let hub = TestHub::with_config(tight()).await;
    let mut w = hub.client().await;
    w.call("update", json!({"key": "k", "value": "start"}))
        .await;

    let mut s = hub.client().await;
    let snap = s.call("subscribe", json!({"key": "k"})).await;
    let id = sub_id(&snap);
    let r0 = rev(&snap);

    // From here `s` does not read. 300 × 50 KB ≫ the socket buffers.
    const N: usize = 300;
    let keys = vec!["k".to_string()];
    let wrevs = pipelined_big_updates(&mut w, &keys, N, 50_000).await;
    let final_rev = *wrevs.last().unwrap();

    // Now the stuck subscriber reads.
    let mut events = Vec::new();
    loop {
        let e = s.next_event().await;
        assert_eq!(sub_id(&e), id, "{e}");
        let done = e.get("rev").and_then(Value::as_u64) == Some(final_rev);
        events.push(e);
        assert!(events.len() <= N + 10, "too many events");
        if done {
            break;
        }
    }
    let mut last = r0;
    let mut lagged = 0;
    for (i, e) in events.iter().enumerate() {
        if e["event"] == "lagged" {
            lagged += 1;
            assert_eq!(e, &json!({"sub": id, "key": "k", "event": "lagged"}));
            let next = events.get(i + 1).expect("state event after lagged");
            assert_eq!(next["event"], "update", "after lagged: {next}");
            continue;
        }
        assert_eq!(e["event"], "update", "{e}");
        assert_eq!(e["key"], "k");
        assert!(
            rev(e) > last,
            "rev {} after {last}: stale or reordered",
            rev(e)
        );
        last = rev(e);
        let idx = big_index(&e["value"]);
        assert_eq!(rev(e), wrevs[idx - 1], "value {idx} carries the wrong rev");
    }
    assert!(lagged >= 1, "no lagged event among {} events", events.len());
    // The final state arrives last, either as the catch-up after a lagged
    // marker or, when the connection had room again by the time the last
    // writes were published (its task was late to run, not the socket
    // full), as the ordinary event: both converge.
    let n = events.len();
    assert_eq!(big_index(&events[n - 1]["value"]), N);
    assert_eq!(rev(&events[n - 1]), final_rev);

    // After catching up, nothing stale: the next event is the next write.
    let r_end = rev(&w.call("update", json!({"key": "k", "value": "end"})).await);
    let e = s.next_event().await;
    assert_eq!(
        e,
        json!({"sub": id, "key": "k", "event": "update", "value": "end", "rev": r_end})
    );

    let metrics = hub.http_get("/metrics").await.1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("memhub_lagged_events_total ")
                && l.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() >= 1.0),
        "lagged counter not counted:\n{metrics}"
    );
    hub.stop().await.unwrap();
}

/// A subscriber that reads but cannot keep up with a tiny queue lags again
/// and again; it must converge, and every update event it sees must carry a
/// rev above the previous one (a catch-up never repeats what it already has).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_subscriber_that_lags_never_sees_a_rev_twice() {
    init_logs();
    let hub = TestHub::with_config(tight()).await;
    let mut w = hub.client().await;
    let mut r = hub.client().await;
    let id = sub_id(&r.call("subscribe", json!({"key": "k"})).await);
    // Alongside a subscriber that never reads, which must not hold `r` up.
    let mut stuck = hub.client().await;
    stuck.call("subscribe", json!({"key": "k"})).await;

    const N: usize = 300;
    let reader = tokio::spawn(async move {
        // (value index, rev); a lagged marker is (0, 0).
        let mut seen: Vec<(usize, u64)> = Vec::new();
        for _ in 0..3 * N {
            let e = r.next_event().await;
            assert_eq!(sub_id(&e), id);
            if e["event"] == "lagged" {
                assert_eq!(e, json!({"sub": id, "key": "k", "event": "lagged"}));
                seen.push((0, 0));
                continue;
            }
            seen.push((big_index(&e["value"]), rev(&e)));
            if seen.last().unwrap().0 == N {
                break;
            }
        }
        seen
    });
    let keys = vec!["k".to_string()];
    let wrevs = pipelined_big_updates(&mut w, &keys, N, 50_000).await;
    let final_rev = *wrevs.last().unwrap();
    let seen = tokio::time::timeout(WAIT, reader)
        .await
        .expect("reader done")
        .unwrap();
    drop(stuck);

    assert_eq!(seen.last().unwrap(), &(N, final_rev), "did not converge");
    for &(idx, r) in seen.iter().filter(|p| p.1 != 0) {
        assert_eq!(r, wrevs[idx - 1], "value {idx} carries the wrong rev");
    }
    let revs: Vec<u64> = seen.iter().map(|p| p.1).filter(|&r| r != 0).collect();
    if let Some(i) = revs.windows(2).position(|p| p[0] >= p[1]) {
        let at = seen.iter().position(|p| p.1 == revs[i]).unwrap();
        panic!(
            "rev {} was followed by rev {}; around it ((value, rev), lagged = (0, 0)): {:?}",
            revs[i],
            revs[i + 1],
            &seen[at.saturating_sub(2)..(at + 5).min(seen.len())]
        );
    }
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_prefix_subscriber_gets_lagged_and_later_events() {
    init_logs();
    let hub = TestHub::with_config(tight()).await;
    let mut s = hub.client().await;
    let id = sub_id(&s.call("subscribe", json!({"prefix": "p/"})).await);
    let r0 = hub.stats().await["rev"].as_u64().unwrap();

    const N: usize = 300;
    let keys: Vec<String> = (0..10).map(|i| format!("p/{i}")).collect();
    let mut w = hub.client().await;
    let wrevs = pipelined_big_updates(&mut w, &keys, N, 50_000).await;

    // Read until the lagged marker, then re-list as the protocol says.
    let mut events = Vec::new();
    loop {
        let e = s.next_event().await;
        let is_lagged = e["event"] == "lagged";
        events.push(e);
        assert!(
            events.len() <= N + 10,
            "no lagged event in {} events",
            events.len()
        );
        if is_lagged {
            break;
        }
    }
    let page = s.call("keys", json!({"prefix": "p/"})).await;
    let listed: Vec<(String, u64)> = page["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key"].as_str().unwrap().to_string(), rev(k)))
        .collect();
    let mut want: Vec<(String, u64)> = keys
        .iter()
        .enumerate()
        .map(|(k, key)| {
            let last_i = (1..=N).rev().find(|i| i % keys.len() == k).unwrap();
            (key.clone(), wrevs[last_i - 1])
        })
        .collect();
    want.sort();
    assert_eq!(listed, want, "re-listing shows the final revs");

    // Later events keep flowing.
    let r_end = rev(&w.call("update", json!({"key": "p/end", "value": 1})).await);
    loop {
        let e = s.next_event().await;
        let done = e["key"] == "p/end";
        events.push(e);
        assert!(events.len() <= N + 20, "p/end never arrived");
        if done {
            break;
        }
    }
    let last = events.last().unwrap();
    assert_eq!(
        last,
        &json!({"sub": id, "key": "p/end", "event": "update", "value": 1, "rev": r_end})
    );

    let mut per_key: std::collections::HashMap<String, u64> = Default::default();
    let mut lagged = 0;
    for e in &events {
        if e["event"] == "lagged" {
            lagged += 1;
            assert_eq!(
                e,
                &json!({"sub": id, "event": "lagged"}),
                "prefix lagged has no key"
            );
            continue;
        }
        assert_eq!(sub_id(e), id);
        assert_eq!(e["event"], "update", "{e}");
        let key = e["key"].as_str().unwrap().to_string();
        assert!(key.starts_with("p/"));
        let r = rev(e);
        assert!(r > r0);
        let prev = per_key.insert(key.clone(), r).unwrap_or(0);
        assert!(r > prev, "key {key}: rev {r} after {prev}");
    }
    assert!(lagged >= 1);
    hub.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Compare-and-set race
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_rev_increments_from_20_connections_lose_nothing() {
    init_logs();
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    c.call("update", json!({"key": "counter", "value": 0}))
        .await;

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut c = hub.client().await;
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            let mut conflicts = 0u64;
            for _attempt in 0..20_000 {
                if done == 25 {
                    break;
                }
                let cur = c.call("get", json!({"key": "counter"})).await;
                let v = cur["value"].as_u64().unwrap();
                let resp = c
                    .request(
                        "update",
                        json!({"key": "counter", "value": v + 1, "if_rev": cur["rev"]}),
                    )
                    .await;
                if resp.get("result").is_some() {
                    done += 1;
                } else {
                    assert_eq!(resp["error"]["code"], -32002, "{resp}");
                    assert!(resp["error"]["data"]["rev"].as_u64().unwrap() > rev(&cur));
                    conflicts += 1;
                }
            }
            assert_eq!(done, 25, "gave up after too many conflicts");
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += tokio::time::timeout(WAIT * 2, t)
            .await
            .expect("task done")
            .unwrap();
    }
    let end = c.call("get", json!({"key": "counter"})).await;
    assert_eq!(end["value"], 500, "lost updates ({conflicts} conflicts)");
    hub.stop().await.unwrap();
}
