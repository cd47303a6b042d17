//! Integration tests of the Rust client (`memhub::Client`) against a real hub
//! on a loopback port: every call, typed errors, concurrency, subscriptions,
//! reconnects, retry limits, version checks and `memoize_with`.
//!
//! Nothing here sleeps to synchronize: every wait is for an event, an answer
//! or a polled condition, bounded by `WAIT`.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestHub, WAIT};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use memhub::client::{
    ClientOptions, Error, Event, EventKind, KeyInfo, LockOptions, Subscription, WriteOptions,
};
use memhub::Client as MemClient;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------- helpers

/// Options for tests: short retry pauses so reconnects happen quickly.
fn fast_opts() -> ClientOptions {
    ClientOptions {
        max_retry: 50,
        retry_delay: Duration::from_millis(100),
        request_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

async fn connect(hub: &TestHub) -> MemClient {
    MemClient::connect_with(&hub.url(), fast_opts())
        .await
        .expect("connect to the test hub")
}

/// Awaits `f`, failing the test if it takes longer than `WAIT`.
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The subscription's next event, within `WAIT`.
async fn next(sub: &mut Subscription, what: &str) -> Event {
    within(what, sub.next_event())
        .await
        .unwrap_or_else(|| panic!("subscription ended while waiting for {what}"))
}

/// Polls `cond` every 10 ms until it holds; fails after `WAIT`.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that an error's `Display` is a readable sentence, not a dump.
fn assert_sentence(e: &Error, must_contain: &[&str]) {
    let text = e.to_string();
    assert!(
        text.split_whitespace().count() >= 3,
        "not a sentence: {text:?}"
    );
    assert_ne!(text, format!("{e:?}"), "Display is the Debug form");
    for variant in [
        "NotFound",
        "RevMismatch",
        "LockTimeout",
        "PatchFailed",
        "Rpc(",
    ] {
        assert!(!text.contains(variant), "Display names a variant: {text:?}");
    }
    for part in must_contain {
        assert!(text.contains(part), "{text:?} does not mention {part:?}");
    }
}

/// A port on 127.0.0.1 with nothing listening on it.
async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Restarts a hub on `addr`'s port after `prepare` has seeded its store
/// (before it accepts a single connection).
async fn restart_hub(addr: SocketAddr, prepare: impl FnOnce(&memhub::Store)) -> TestHub {
    let server = memhub::MemService::new("127.0.0.1", addr.port())
        .bind()
        .await
        .expect("rebind the hub on the same port");
    prepare(&server.store());
    let handle = server.shutdown_handle();
    TestHub {
        addr: server.local_addr(),
        locks: server.locks(),
        handle,
        task: Some(tokio::spawn(server.run())),
    }
}

/// A stand-in WebSocket server speaking just enough JSON-RPC for the client
/// to connect: it answers `version` with the given protocol number and
/// every other request with `{"result": null}`.
///
/// No real hub speaks any protocol but 1, so a hub of a future release that
/// speaks protocol 2 can only be simulated; this also lets tests count
/// connection attempts and cut connections at will.
struct StandIn {
    addr: SocketAddr,
    /// TCP connections accepted so far (each is one connection attempt).
    accepted: Arc<AtomicUsize>,
    /// While false, new connections are accepted and dropped at once.
    serving: Arc<AtomicBool>,
    /// Set to true to drop every connection being served.
    kill: tokio::sync::watch::Sender<bool>,
}

impl StandIn {
    async fn start(protocol: u64) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let serving = Arc::new(AtomicBool::new(true));
        let (kill, kill_rx) = tokio::sync::watch::channel(false);
        let (acc, srv) = (accepted.clone(), serving.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                if srv.load(Ordering::SeqCst) {
                    tokio::spawn(serve_stand_in(sock, protocol, kill_rx.clone()));
                } else {
                    drop(sock);
                }
            }
        });
        StandIn {
            addr,
            accepted,
            serving,
            kill,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

async fn serve_stand_in(
    sock: TcpStream,
    protocol: u64,
    mut kill: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(sock).await else {
        return;
    };
    loop {
        tokio::select! {
            // Dropping `ws` cuts the TCP connection.
            () = async { let _ = kill.wait_for(|k| *k).await; } => return,
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return };
                let Message::Text(text) = msg else { continue };
                let req: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                let Some(id) = req.get("id").cloned() else { continue };
                let result = if req["method"] == "version" {
                    json!({"name": "memhub", "version": "9.0.0", "protocol": protocol, "epoch": "stand-in"})
                } else {
                    Value::Null
                };
                let resp = json!({"jsonrpc": "2.0", "id": id, "result": result});
                if ws.send(Message::text(resp.to_string())).await.is_err() {
                    return;
                }
            }
        }
    }
}

// ------------------------------------------------------------ every call

#[tokio::test]
async fn memoize_returns_the_value_held() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    let first: Vec<i32> = c.memoize("m", &vec![1, 2]).await.unwrap();
    assert_eq!(first, vec![1, 2]);
    let second: Vec<i32> = c.memoize("m", &vec![9, 9, 9]).await.unwrap();
    assert_eq!(
        second,
        vec![1, 2],
        "second memoize must return the first value"
    );
    let held: Vec<i32> = c.get("m").await.unwrap();
    assert_eq!(held, vec![1, 2]);
    // A key holding null exists; memoize does not replace it.
    let n: Option<i32> = c.memoize("null", &None::<i32>).await.unwrap();
    assert_eq!(n, None);
    let n: Option<i32> = c.memoize("null", &Some(5)).await.unwrap();
    assert_eq!(n, None);
}

#[tokio::test]
async fn get_try_get_and_get_with_rev() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    assert_eq!(c.try_get::<String>("k").await.unwrap(), None);
    match c.get::<String>("k").await {
        Err(Error::NotFound { key }) => assert_eq!(key, "k"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let rev = c.update("k", "hello").await.unwrap();
    assert_eq!(
        c.try_get::<String>("k").await.unwrap().as_deref(),
        Some("hello")
    );
    assert_eq!(c.get::<String>("k").await.unwrap(), "hello");
    let (v, r): (String, u64) = c.get_with_rev("k").await.unwrap();
    assert_eq!((v.as_str(), r), ("hello", rev));
    // null is a value: the key exists.
    c.update("n", &Value::Null).await.unwrap();
    assert_eq!(c.try_get::<Value>("n").await.unwrap(), Some(Value::Null));
    assert!(c.is_memoized("n").await.unwrap());
}

#[tokio::test]
async fn update_revs_increase_and_update_with_checks_if_rev() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    let r1 = c.update("k", &1).await.unwrap();
    let r2 = c.update("k", &2).await.unwrap();
    assert!(r2 > r1, "rev must increase: {r1} then {r2}");
    assert_eq!(c.get_with_rev::<i32>("k").await.unwrap(), (2, r2));

    // if_rev matching
    let r3 = c
        .update_with(
            "k",
            &3,
            WriteOptions {
                if_rev: Some(r2),
                ttl: None,
            },
        )
        .await
        .unwrap();
    assert!(r3 > r2);
    // if_rev mismatching: nothing changes, the current rev is reported
    let err = c
        .update_with(
            "k",
            &4,
            WriteOptions {
                if_rev: Some(r1),
                ttl: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::RevMismatch { current: r3 });
    assert_eq!(c.get_with_rev::<i32>("k").await.unwrap(), (3, r3));
    // if_rev 0: only if absent
    let err = c
        .update_with(
            "k",
            &5,
            WriteOptions {
                if_rev: Some(0),
                ttl: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::RevMismatch { current: r3 });
    let r = c
        .update_with(
            "fresh",
            &5,
            WriteOptions {
                if_rev: Some(0),
                ttl: None,
            },
        )
        .await
        .unwrap();
    assert!(r > r3);
    // a mismatch on an absent key reports rev 0
    let err = c
        .update_with(
            "absent",
            &1,
            WriteOptions {
                if_rev: Some(7),
                ttl: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::RevMismatch { current: 0 });
    assert!(!c.is_memoized("absent").await.unwrap());
}

#[tokio::test]
async fn delete_and_delete_if() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    let r1 = c.update("k", &1).await.unwrap();
    let d = c.delete("k").await.unwrap();
    assert!(d > r1, "the deletion has its own rev");
    assert!(!c.is_memoized("k").await.unwrap());
    assert_eq!(
        c.delete("k").await.unwrap_err(),
        Error::NotFound { key: "k".into() }
    );

    let r2 = c.update("k", &2).await.unwrap();
    let r3 = c.update("k", &3).await.unwrap();
    assert_eq!(
        c.delete_if("k", r2).await.unwrap_err(),
        Error::RevMismatch { current: r3 }
    );
    assert!(
        c.is_memoized("k").await.unwrap(),
        "a failed delete_if deletes nothing"
    );
    let d = c.delete_if("k", r3).await.unwrap();
    assert!(d > r3);
    assert_eq!(c.try_get::<i32>("k").await.unwrap(), None);
}

#[tokio::test]
async fn ttl_key_expires_with_an_expire_event() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    let mut sub = c.subscribe("t").await.unwrap();
    assert!(!sub.initial().unwrap().exists);
    let rev = c
        .update_with(
            "t",
            &"short-lived",
            WriteOptions {
                if_rev: None,
                ttl: Some(Duration::from_millis(150)),
            },
        )
        .await
        .unwrap();
    let info: Vec<KeyInfo> = c.keys("t").try_collect().await.unwrap();
    assert_eq!(info.len(), 1);
    assert!(
        info[0].expires_at_ms.is_some(),
        "a ttl key reports its expiry"
    );

    let ev = next(&mut sub, "the write's update event").await;
    assert_eq!((ev.kind, ev.rev), (EventKind::Update, Some(rev)));
    let ev = next(&mut sub, "the expire event").await;
    assert_eq!(ev.kind, EventKind::Expire, "{ev:?}");
    assert_eq!(ev.key.as_deref(), Some("t"));
    assert_eq!(ev.value, None);
    assert!(
        ev.rev.unwrap() > rev,
        "expiry has a rev above the write's: {ev:?}"
    );
    assert_eq!(c.try_get::<String>("t").await.unwrap(), None);
    assert!(!c.is_memoized("t").await.unwrap());
}

#[tokio::test]
async fn is_memoized_version_and_stats() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    assert!(!c.is_memoized("a").await.unwrap());
    c.update("a", &1).await.unwrap();
    let last = c.update("b", &[1, 2, 3]).await.unwrap();
    assert!(c.is_memoized("a").await.unwrap());

    let v = c.version().await.unwrap();
    assert_eq!(v.name, "memhub");
    assert_eq!(v.protocol, 1);
    assert_eq!(v.protocol, u64::from(memhub::PROTOCOL_VERSION));
    assert!(!v.epoch.is_empty());
    assert!(!v.version.is_empty());

    let _sub = c.subscribe("a").await.unwrap();
    let s = c.stats().await.unwrap();
    assert_eq!(s.keys, 2);
    assert_eq!(s.rev, last);
    assert_eq!(s.connections, 1, "only this client is connected: {s:?}");
    assert_eq!(s.subscriptions, 1);
    assert_eq!(s.extra.get("epoch"), Some(&json!(v.epoch)), "{s:?}");
    // The epoch stays while the hub lives.
    assert_eq!(c.version().await.unwrap().epoch, v.epoch);
}

#[tokio::test]
async fn keys_stream_spans_pages_in_key_order() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    const N: usize = 1500; // more than one page of 1000
    let mut expected: Vec<String> = (0..N).map(|i| format!("page/{i:05}")).collect();
    futures_util::stream::iter(expected.clone())
        .map(|k| {
            let c = c.clone();
            async move { c.update(&k, &json!({ "k": k })).await }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<u64>>()
        .await
        .unwrap();
    // Keys outside the prefix, on both sides of it in key order.
    for k in ["page", "pagd/1", "pagf/1", "page0"] {
        c.update(k, &0).await.unwrap();
    }
    expected.sort();

    let listed: Vec<KeyInfo> = within("the keys listing", c.keys("page/").try_collect())
        .await
        .unwrap();
    let names: Vec<&str> = listed.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(names.len(), N);
    assert_eq!(names, expected, "keys come in key order, each once");
    for k in &listed {
        let compact = json!({ "k": k.key }).to_string();
        assert_eq!(k.bytes as usize, compact.len(), "{k:?}");
        assert!(k.rev > 0);
        assert_eq!(k.expires_at_ms, None);
    }
    let all: Vec<KeyInfo> = c.keys("").try_collect().await.unwrap();
    assert_eq!(all.len(), N + 4);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key));
    let none: Vec<KeyInfo> = c.keys("zzz").try_collect().await.unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn mem_handle_memoizes_initial_only_if_absent() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    let m = c.mem("counter", 10i64).await.unwrap();
    assert_eq!(m.key(), "counter");
    assert_eq!(m.get().await.unwrap(), 10);
    // Present: the new initial is ignored.
    let again = c.mem("counter", 99i64).await.unwrap();
    assert_eq!(again.get().await.unwrap(), 10);

    let mut watch = m.watch().await.unwrap();
    assert_eq!(watch.initial().unwrap().value, Some(json!(10)));
    let rev = m.update(&11).await.unwrap();
    assert_eq!(m.try_get().await.unwrap(), Some(11));
    let ev = next(&mut watch, "the Mem update").await;
    assert_eq!((ev.kind, ev.rev), (EventKind::Update, Some(rev)));
    assert_eq!(ev.value_as::<i64>().unwrap(), Some(11));

    let obj = c.mem("obj", json!({"a": 1})).await.unwrap();
    let patched = obj
        .patch(&json!([{"op": "add", "path": "/b", "value": 2}]))
        .await
        .unwrap();
    assert_eq!(patched, json!({"a": 1, "b": 2}));

    m.delete().await.unwrap();
    let ev = next(&mut watch, "the Mem delete").await;
    assert_eq!(ev.kind, EventKind::Delete);
    assert_eq!(m.try_get().await.unwrap(), None);
    assert_eq!(
        m.get().await.unwrap_err(),
        Error::NotFound {
            key: "counter".into()
        }
    );
}

#[tokio::test]
async fn patch_applies_all_ops_or_none() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    let r0 = c
        .update("doc", &json!({"a": 1, "list": [1]}))
        .await
        .unwrap();
    let (v, r1) = c
        .patch(
            "doc",
            &json!([
                {"op": "replace", "path": "/a", "value": 2},
                {"op": "add", "path": "/list/-", "value": 2}
            ]),
        )
        .await
        .unwrap();
    assert_eq!(v, json!({"a": 2, "list": [1, 2]}));
    assert!(r1 > r0);

    // The second op fails: nothing is applied, and the error names op 1.
    let err = c
        .patch(
            "doc",
            &json!([
                {"op": "replace", "path": "/a", "value": 3},
                {"op": "remove", "path": "/missing"}
            ]),
        )
        .await
        .unwrap_err();
    match &err {
        Error::PatchFailed { op_index, message } => {
            assert_eq!(*op_index, Some(1), "{err:?}");
            assert!(!message.is_empty());
        }
        other => panic!("expected PatchFailed, got {other:?}"),
    }
    assert_sentence(&err, &[]);
    assert_eq!(
        c.get_with_rev::<Value>("doc").await.unwrap(),
        (json!({"a": 2, "list": [1, 2]}), r1)
    );
    // A failed test op is a PatchFailed too.
    let err = c
        .patch("doc", &json!([{"op": "test", "path": "/a", "value": 99}]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::PatchFailed {
                op_index: Some(0),
                ..
            }
        ),
        "{err:?}"
    );
    // Absent key, and ops that are not RFC 6902.
    assert_eq!(
        c.patch("nope", &json!([])).await.unwrap_err(),
        Error::NotFound { key: "nope".into() }
    );
    let err = c.patch("doc", &json!({"op": "add"})).await.unwrap_err();
    assert!(matches!(err, Error::InvalidParams { .. }), "{err:?}");
}

#[tokio::test]
async fn merge_patches_objects() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    // Absent key: the patch applies to null, dropping null members.
    let (v, r1) = c.merge("cfg", &json!({"a": 1, "b": null})).await.unwrap();
    assert_eq!(v, json!({"a": 1}));
    let (v, r2) = c
        .merge("cfg", &json!({"b": {"c": true}, "a": null}))
        .await
        .unwrap();
    assert_eq!(v, json!({"b": {"c": true}}));
    assert!(r2 > r1);
    assert_eq!(
        c.get::<Value>("cfg").await.unwrap(),
        json!({"b": {"c": true}})
    );
}

#[tokio::test]
async fn incr_and_incr_f64_and_their_errors() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    assert_eq!(c.incr("n", 1).await.unwrap(), 1, "absent starts at 0");
    assert_eq!(c.incr("n", 41).await.unwrap(), 42);
    assert_eq!(c.incr("n", -50).await.unwrap(), -8);
    assert_eq!(c.get::<i64>("n").await.unwrap(), -8);

    let f = c.incr_f64("f", 0.5).await.unwrap();
    assert!((f - 0.5).abs() < 1e-12);
    let f = c.incr_f64("f", 1.25).await.unwrap();
    assert!((f - 1.75).abs() < 1e-12);

    c.update("s", "text").await.unwrap();
    let err = c.incr("s", 1).await.unwrap_err();
    match &err {
        Error::NotANumber { key, message } => {
            assert_eq!(key, "s");
            assert!(!message.is_empty());
        }
        other => panic!("expected NotANumber, got {other:?}"),
    }
    assert_sentence(&err, &[]);
    let err = c.incr_f64("s", 1.0).await.unwrap_err();
    assert!(matches!(err, Error::NotANumber { .. }), "{err:?}");
    assert_eq!(c.get::<String>("s").await.unwrap(), "text", "unchanged");

    c.update("max", &i64::MAX).await.unwrap();
    let err = c.incr("max", 1).await.unwrap_err();
    assert!(
        matches!(err, Error::NotANumber { ref key, .. } if key == "max"),
        "{err:?}"
    );
    assert_eq!(c.get::<i64>("max").await.unwrap(), i64::MAX);
}

#[tokio::test]
async fn lock_and_unlock_and_their_errors() {
    let hub = TestHub::start().await;
    let a = connect(&hub).await;
    let b = connect(&hub).await;
    let held = a.lock("L", LockOptions::default()).await.unwrap();
    assert_eq!(held.name, "L");
    assert!(!held.token.is_empty());

    let err = b
        .lock(
            "L",
            LockOptions {
                ttl: None,
                wait: Some(Duration::from_millis(50)),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::LockTimeout { name: "L".into() });
    assert_sentence(&err, &["\"L\""]);
    let err = b.lock("L", LockOptions::default()).await.unwrap_err();
    assert_eq!(err, Error::LockTimeout { name: "L".into() }, "try-once");

    a.unlock(&held).await.unwrap();
    let err = a.unlock(&held).await.unwrap_err();
    assert_eq!(err, Error::LockNotHeld { name: "L".into() });
    assert_sentence(&err, &["\"L\""]);

    // A lease runs out: a waiter gets the lock, the old token no longer holds it.
    let leased = b
        .lock(
            "L",
            LockOptions {
                ttl: Some(Duration::from_millis(100)),
                wait: None,
            },
        )
        .await
        .unwrap();
    assert!(leased.fence > held.fence, "fences grow");
    let next_holder = within(
        "the lease to run out",
        a.lock(
            "L",
            LockOptions {
                ttl: None,
                wait: Some(WAIT),
            },
        ),
    )
    .await
    .unwrap();
    assert!(next_holder.fence > leased.fence);
    assert_eq!(
        b.unlock(&leased).await.unwrap_err(),
        Error::LockNotHeld { name: "L".into() }
    );
    a.unlock(&next_holder).await.unwrap();
}

#[tokio::test]
async fn error_display_texts_are_human_readable_sentences() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    let e = c.get::<i32>("nope").await.unwrap_err();
    assert_sentence(&e, &["no value exists", "nope"]);
    let r = c.update("k", &1).await.unwrap();
    let e = c.delete_if("k", r + 100).await.unwrap_err();
    assert_sentence(&e, &["revision", &r.to_string()]);
    c.update("s", "x").await.unwrap();
    let e = c.get::<Vec<i32>>("s").await.unwrap_err();
    assert_sentence(&e, &["decode"]);

    let port = dead_port().await;
    let e = MemClient::connect_with(
        &format!("ws://127.0.0.1:{port}/ws"),
        ClientOptions {
            max_retry: 0,
            ..fast_opts()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Connection(_)), "{e:?}");
    assert_sentence(&e, &["connect", &port.to_string()]);
}

// ----------------------------------------------------------- concurrency

#[tokio::test]
async fn hundred_concurrent_tasks_on_one_client() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    let tasks: Vec<_> = (0..100i64)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let key = format!("task/{i}");
                let r1 = c.update(&key, &json!({ "i": i })).await?;
                assert_eq!(c.get::<Value>(&key).await?, json!({ "i": i }));
                let (merged, _) = c.merge(&key, &json!({ "j": i * 2 })).await?;
                assert_eq!(merged, json!({ "i": i, "j": i * 2 }));
                let (patched, _) = c
                    .patch(
                        &key,
                        &json!([{"op": "replace", "path": "/i", "value": i + 1}]),
                    )
                    .await?;
                assert_eq!(patched, json!({ "i": i + 1, "j": i * 2 }));
                let (v, r2): (Value, u64) = c.get_with_rev(&key).await?;
                assert_eq!(v, patched);
                assert!(r2 > r1);
                let memo: i64 = c.memoize(&format!("memo/{i}"), &i).await?;
                assert_eq!(memo, i);
                let count = c.incr("shared", 1).await?;
                c.delete(&key).await?;
                assert!(!c.is_memoized(&key).await?);
                Ok::<i64, Error>(count)
            })
        })
        .collect();
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(
            within("a task", t)
                .await
                .expect("task panicked")
                .expect("task call"),
        );
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=100).collect::<Vec<i64>>(),
        "every incr seen once"
    );
    assert_eq!(c.get::<i64>("shared").await.unwrap(), 100);
    let memos: Vec<KeyInfo> = c.keys("memo/").try_collect().await.unwrap();
    assert_eq!(memos.len(), 100);
    assert!(c
        .keys("task/")
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn typed_decode_errors() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    c.update("s", "a string").await.unwrap();
    let err = c.get::<Vec<i32>>("s").await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    let err = c.try_get::<Vec<i32>>("s").await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    let err = c.get_with_rev::<u64>("s").await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    // memoize on a key holding another type decodes what is held
    let err = c.memoize::<Vec<i32>>("s", &vec![1]).await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    // the value is untouched and readable with the right type
    assert_eq!(c.get::<String>("s").await.unwrap(), "a string");
    c.update("f", &1.5).await.unwrap();
    let err = c.incr("f", 1).await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "incr on a float: {err:?}");
}

// --------------------------------------------------------- subscriptions

#[tokio::test]
async fn subscription_delivers_500_updates_in_order() {
    let hub = TestHub::start().await;
    let writer = connect(&hub).await;
    let reader = connect(&hub).await;
    let mut sub = reader.subscribe("seq").await.unwrap();
    assert!(!sub.initial().unwrap().exists);
    let mut revs = Vec::new();
    for i in 0..500 {
        revs.push(writer.update("seq", &i).await.unwrap());
    }
    for (i, rev) in revs.iter().enumerate() {
        let ev = next(&mut sub, &format!("update #{i}")).await;
        assert_eq!(ev.kind, EventKind::Update, "{ev:?}");
        assert_eq!(ev.key.as_deref(), Some("seq"));
        assert_eq!(
            ev.value_as::<usize>().unwrap(),
            Some(i),
            "event #{i} out of order"
        );
        assert_eq!(ev.rev, Some(*rev));
    }
}

#[tokio::test]
async fn prefix_subscription_sees_only_matching_keys() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    let mut sub = c.subscribe_prefix("p/").await.unwrap();
    assert!(sub.initial().is_none());
    c.update("p/a", &1).await.unwrap();
    c.update("q/b", &2).await.unwrap();
    c.update("p", &3).await.unwrap();
    c.update("pp/c", &4).await.unwrap();
    c.incr("p/n", 5).await.unwrap();
    c.delete("q/b").await.unwrap();
    c.delete("p/a").await.unwrap();
    c.update("p/end", &0).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..20 {
        let ev = next(&mut sub, "prefix events").await;
        let key = ev.key.clone().unwrap();
        seen.push((key.clone(), ev.kind));
        if key == "p/end" {
            break;
        }
    }
    assert_eq!(
        seen,
        vec![
            ("p/a".to_string(), EventKind::Update),
            ("p/n".to_string(), EventKind::Update),
            ("p/a".to_string(), EventKind::Delete),
            ("p/end".to_string(), EventKind::Update),
        ]
    );
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    let a = c.subscribe("a").await.unwrap();
    let b = c.subscribe("b").await.unwrap();
    let p = c.subscribe_prefix("x/").await.unwrap();
    assert_eq!(c.stats().await.unwrap().subscriptions, 3);
    drop(a);
    eventually("the hub to drop one subscription", || async {
        c.stats().await.unwrap().subscriptions == 2
    })
    .await;
    drop(b);
    drop(p);
    eventually("the hub to drop every subscription", || async {
        c.stats().await.unwrap().subscriptions == 0
    })
    .await;
    // The client still works and can subscribe again.
    let mut again = c.subscribe("a").await.unwrap();
    c.update("a", &1).await.unwrap();
    assert_eq!(
        next(&mut again, "a fresh subscription's event").await.kind,
        EventKind::Update
    );
}

#[tokio::test]
async fn close_ends_streams_and_fails_calls() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    let mut sub = c.subscribe("k").await.unwrap();
    c.close();
    assert!(
        within("the stream to end", sub.next_event())
            .await
            .is_none(),
        "a closed client's subscription ends"
    );
    let err = within("a call on a closed client", c.get::<i32>("k"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
}

// ------------------------------------------------------------- reconnect

#[tokio::test]
async fn reconnect_after_hub_restart_resumes_subscriptions() {
    let hub = TestHub::start().await;
    let addr = hub.addr;
    let reconnects = Arc::new(AtomicUsize::new(0));
    let counter = reconnects.clone();
    let c = MemClient::connect_with(
        &hub.url(),
        ClientOptions {
            on_reconnect: Some(Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            })),
            ..fast_opts()
        },
    )
    .await
    .unwrap();
    c.update("a", &1).await.unwrap();
    c.update("gone", &1).await.unwrap();
    c.update("same", &1).await.unwrap();
    let mut sub_a = c.subscribe("a").await.unwrap();
    let mut sub_gone = c.subscribe("gone").await.unwrap();
    let mut sub_same = c.subscribe("same").await.unwrap();
    let mut sub_all = c.subscribe_prefix("").await.unwrap();

    // An in-flight call: a long wait for a lock held in-process by the hub
    // itself, which no closing connection can release, so the wait is
    // certainly still in flight when the hub stops.
    let _held = hub
        .locks
        .acquire("L", 0, None, Duration::ZERO)
        .await
        .expect("in-process holder");
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move {
            let r = c
                .lock(
                    "L",
                    LockOptions {
                        ttl: None,
                        wait: Some(Duration::from_secs(20)),
                    },
                )
                .await;
            (r, Instant::now())
        })
    };
    hub.wait_stats(|s| s["lock_waiters"] == 1).await;

    let stopped_at = Instant::now();
    hub.stop().await.unwrap();
    let (r, failed_at) = within("the in-flight lock to fail", waiting).await.unwrap();
    assert!(matches!(r, Err(Error::Connection(_))), "{r:?}");
    assert!(
        failed_at.duration_since(stopped_at) < Duration::from_secs(2),
        "the in-flight call failed only after {:?}",
        failed_at.duration_since(stopped_at)
    );
    // While away, calls fail promptly too.
    let err = within("a call while the hub is down", c.get::<i32>("a"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    assert_eq!(reconnects.load(Ordering::SeqCst), 0);

    // The hub comes back empty on the same port; changes happen before the
    // client gets back: `a` changed, `gone` is gone, `same` holds what it held.
    let hub = restart_hub(addr, |store| {
        store.update("a", Arc::from("2"), None, None).unwrap();
        store.update("same", Arc::from("1"), None, None).unwrap();
    })
    .await;

    let ev = next(&mut sub_a, "the resumed update of a").await;
    assert_eq!(ev.kind, EventKind::Update, "{ev:?}");
    assert_eq!(ev.value, Some(json!(2)));
    let ev = next(&mut sub_gone, "the resumed delete of gone").await;
    assert_eq!(ev.kind, EventKind::Delete, "{ev:?}");
    assert_eq!(ev.key.as_deref(), Some("gone"));
    let ev = next(&mut sub_all, "the prefix subscription's lagged").await;
    assert_eq!(
        ev.kind,
        EventKind::Lagged,
        "a prefix cannot tell what it missed: {ev:?}"
    );
    eventually("on_reconnect to be called", || async {
        reconnects.load(Ordering::SeqCst) >= 1
    })
    .await;

    // Calls work again.
    assert_eq!(c.get::<i32>("a").await.unwrap(), 2);
    assert_eq!(c.try_get::<i32>("gone").await.unwrap(), None);
    let lock = c.lock("L", LockOptions::default()).await.unwrap();
    c.unlock(&lock).await.unwrap();
    // `same` did not change: its first event is the next real change.
    let rev = c.update("same", &3).await.unwrap();
    let ev = next(&mut sub_same, "the next change of same").await;
    assert_eq!(
        (ev.kind, ev.rev, ev.value),
        (EventKind::Update, Some(rev), Some(json!(3)))
    );
    // Resumed subscriptions keep delivering live events.
    let rev = c.update("a", &4).await.unwrap();
    let ev = next(&mut sub_a, "a live event after resuming").await;
    assert_eq!((ev.rev, ev.value), (Some(rev), Some(json!(4))));
    let ev = next(&mut sub_all, "a live prefix event after resuming").await;
    assert_eq!(ev.key.as_deref(), Some("same"));
    assert_eq!(
        reconnects.load(Ordering::SeqCst),
        1,
        "one reconnect, one hook call"
    );
    assert_eq!(
        c.stats().await.unwrap().subscriptions,
        4,
        "all four resubscribed"
    );
    drop(hub);
}

#[tokio::test]
async fn out_of_retries_calls_fail_promptly_and_streams_end() {
    let hub = TestHub::start().await;
    let c = MemClient::connect_with(
        &hub.url(),
        ClientOptions {
            max_retry: 2,
            retry_delay: Duration::from_millis(50),
            ..fast_opts()
        },
    )
    .await
    .unwrap();
    c.update("k", &1).await.unwrap();
    let mut sub = c.subscribe("k").await.unwrap();
    let stopped_at = Instant::now();
    hub.stop().await.unwrap();
    // The stream ends once every retry failed (it does not hang).
    assert!(
        within("the stream to end after the retries", sub.next_event())
            .await
            .is_none(),
        "no event can come from a stopped hub"
    );
    assert!(
        stopped_at.elapsed() >= Duration::from_millis(100),
        "the stream ended before 2 retries 50 ms apart: {:?}",
        stopped_at.elapsed()
    );
    for _ in 0..3 {
        let t = Instant::now();
        let err = within("a call after the retries", c.get::<i32>("k"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Connection(_)), "{err:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn reconnect_makes_exactly_max_retry_attempts() {
    let hub = StandIn::start(1).await;
    let c = MemClient::connect_with(
        &hub.url(),
        ClientOptions {
            max_retry: 2,
            retry_delay: Duration::from_millis(50),
            ..fast_opts()
        },
    )
    .await
    .unwrap();
    assert_eq!(hub.accepted.load(Ordering::SeqCst), 1);
    let mut sub = c.subscribe_prefix("").await.unwrap();
    // Cut the connection; from now on every attempt is accepted and dropped.
    hub.serving.store(false, Ordering::SeqCst);
    hub.kill.send(true).unwrap();
    assert!(within("the stream to end", sub.next_event())
        .await
        .is_none());
    assert_eq!(
        hub.accepted.load(Ordering::SeqCst),
        1 + 2,
        "the first connection plus max_retry reconnect attempts"
    );
    // After that, each call tries exactly once more.
    let err = within("a call", c.get::<i32>("k")).await.unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    assert_eq!(hub.accepted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn connect_fails_after_max_retry_in_bounded_time() {
    // Nothing listening.
    let port = dead_port().await;
    let t = Instant::now();
    let err = within(
        "connect to fail",
        MemClient::connect_with(
            &format!("ws://127.0.0.1:{port}/ws"),
            ClientOptions {
                max_retry: 2,
                retry_delay: Duration::from_millis(50),
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "2 retries 50 ms apart"
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );

    // A listener that drops every connection counts the attempts: 1 + max_retry.
    let counter = StandIn::start(1).await;
    counter.serving.store(false, Ordering::SeqCst);
    let err = within(
        "connect to fail",
        MemClient::connect_with(
            &counter.url(),
            ClientOptions {
                max_retry: 2,
                retry_delay: Duration::from_millis(50),
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    assert_eq!(counter.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn version_mismatch_fails_unless_ignored() {
    // Stands in for a future hub release speaking protocol 2: no real hub does.
    let future_hub = StandIn::start(2).await;
    let opts = ClientOptions {
        max_retry: 2,
        retry_delay: Duration::from_millis(50),
        ..Default::default()
    };
    let err = within(
        "connect to a protocol-2 hub",
        MemClient::connect_with(&future_hub.url(), opts.clone()),
    )
    .await
    .unwrap_err();
    assert_eq!(err, Error::Version { hub: 2, client: 1 });
    assert_sentence(&err, &["protocol 2", "ignore_version"]);
    assert_eq!(
        future_hub.accepted.load(Ordering::SeqCst),
        1,
        "a version mismatch is not retried"
    );

    let c = within(
        "connect with ignore_version",
        MemClient::connect_with(
            &future_hub.url(),
            ClientOptions {
                ignore_version: true,
                ..opts
            },
        ),
    )
    .await
    .expect("ignore_version connects to a protocol-2 hub");
    assert_eq!(c.version().await.unwrap().protocol, 2);
    assert_eq!(
        c.call_raw("anything", json!({})).await.unwrap(),
        Value::Null
    );
}

// ----------------------------------------------------------- memoize_with

#[tokio::test]
async fn memoize_with_runs_the_generator_once_across_racing_clients() {
    let hub = TestHub::start().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = connect(&hub).await;
        let (runs, start) = (runs.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            c.memoize_with("expensive", || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await; // the "expensive" work
                format!("made by task {i}")
            })
            .await
        }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.push(within("a memoize_with task", t).await.unwrap().unwrap());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the generator ran once");
    assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
    let c = connect(&hub).await;
    assert_eq!(c.get::<String>("expensive").await.unwrap(), values[0]);
}

#[tokio::test]
async fn memoize_with_never_runs_the_generator_when_the_key_exists() {
    let hub = TestHub::start().await;
    let c = connect(&hub).await;
    c.update("there", &vec![7, 8]).await.unwrap();
    let runs = AtomicUsize::new(0);
    let v: Vec<i32> = c
        .memoize_with("there", || async {
            runs.fetch_add(1, Ordering::SeqCst);
            vec![0]
        })
        .await
        .unwrap();
    assert_eq!(v, vec![7, 8]);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    // Absent: it runs, once.
    let v: Vec<i32> = c
        .memoize_with("new", || async {
            runs.fetch_add(1, Ordering::SeqCst);
            vec![1]
        })
        .await
        .unwrap();
    assert_eq!(v, vec![1]);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(c.get::<Vec<i32>>("new").await.unwrap(), vec![1]);
}

// The Client promises that any number of tasks may call it at once. A task
// waiting for a lock must not stall the other tasks' calls on the same Client.
#[tokio::test]
async fn a_waiting_lock_does_not_stall_other_calls_of_the_same_client() {
    let hub = TestHub::start().await;
    let c = MemClient::connect_with(
        &hub.url(),
        ClientOptions {
            request_timeout: Duration::from_secs(1),
            ..fast_opts()
        },
    )
    .await
    .unwrap();
    c.update("k", &1).await.unwrap();
    let mut holder = common::Client::connect(&hub.url()).await;
    let held = holder.call("lock", json!({"name": "L"})).await;
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            c.lock(
                "L",
                LockOptions {
                    ttl: None,
                    wait: Some(Duration::from_secs(3)),
                },
            )
            .await
        })
    };
    hub.wait_stats(|s| s["lock_waiters"] == 1).await;
    let t = Instant::now();
    let got = c.get::<i32>("k").await;
    let took = t.elapsed();
    holder
        .call("unlock", json!({"name": "L", "token": held["token"]}))
        .await;
    let lock = within("the waiter", waiter).await.unwrap();
    assert_eq!(
        got,
        Ok(1),
        "a get behind a waiting lock on the same client (took {took:?})"
    );
    assert!(took < Duration::from_millis(500), "the get took {took:?}");
    c.unlock(&lock.unwrap()).await.unwrap();
}

// memoize_with's promise (the generator runs at most once, every racer gets
// the value) must hold for tasks sharing one Client too.
#[tokio::test]
async fn memoize_with_racing_tasks_sharing_one_client() {
    let hub = TestHub::start().await;
    let c = MemClient::connect_with(
        &hub.url(),
        ClientOptions {
            request_timeout: Duration::from_secs(1),
            memoize_wait: Duration::from_secs(2),
            ..fast_opts()
        },
    )
    .await
    .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(5));
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let (c, runs, start) = (c.clone(), runs.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                c.memoize_with("shared", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    i
                })
                .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(within("a memoize_with task", t).await.unwrap());
    }
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let first = results[0].clone().unwrap();
    assert!(results.iter().all(|r| *r == Ok(first)), "{results:?}");
}
