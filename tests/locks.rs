//! Named locks over the wire (`lock` / `unlock`, PROTOCOL.md note 5): mutual
//! exclusion, FIFO hand-off, try-once and timed waits, release when the
//! holder's connection goes away, leases, fencing tokens, errors, the
//! separate namespace, in-order answers behind a waiting `lock`, and the
//! `stats` / `/metrics` gauges. Real hub, real sockets.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use memhub::ServerConfig;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

// ---------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------

/// A wait long enough never to run out during a test.
const LONG_WAIT_MS: u64 = 30_000;

/// How soon a waiter must get a lock once it is free (far below its wait).
const PROMPT: Duration = Duration::from_secs(5);

/// Takes `name` (waiting up to `wait_ms`) and returns `(token, fence)`.
async fn lock(c: &mut Client, name: &str, wait_ms: u64) -> (String, u64) {
    let r = c
        .call("lock", json!({"name": name, "wait_ms": wait_ms}))
        .await;
    grant(&r)
}

/// `(token, fence)` out of a `lock` result, checking their types.
fn grant(result: &Value) -> (String, u64) {
    let token = result["token"].as_str().expect("token is a string");
    assert!(!token.is_empty(), "empty token in {result}");
    let fence = result["fence"].as_u64().expect("fence is a u64");
    (token.to_string(), fence)
}

async fn unlock(c: &mut Client, name: &str, token: &str) {
    let r = c
        .call("unlock", json!({"name": name, "token": token}))
        .await;
    assert_eq!(r, json!(true));
}

/// Sends a request with a caller-chosen (string) id without reading anything.
async fn send(c: &mut Client, id: &str, method: &str, params: Value) {
    let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    c.send_text(frame.to_string()).await;
}

/// The next response on `c`, which must come within `within`.
async fn answer_within(c: &mut Client, within: Duration) -> Value {
    tokio::time::timeout(within, c.recv_response())
        .await
        .unwrap_or_else(|_| panic!("no answer within {within:?}"))
}

/// The `result` of a response, panicking on an error.
fn ok(resp: &Value) -> &Value {
    assert!(resp.get("error").is_none(), "unexpected error: {resp}");
    &resp["result"]
}

/// Asserts `err` is code `code` with `data: {name}`.
fn assert_lock_err(err: &Value, code: i64, name: &str) {
    assert_eq!(err["code"], code, "{err}");
    assert_eq!(err["data"], json!({ "name": name }), "{err}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{err}"
    );
}

/// Polls `stats` until `locks_held` and `lock_waiters` are as given.
async fn wait_locks(hub: &TestHub, held: u64, waiters: u64) -> Value {
    hub.wait_stats(|s| s["locks_held"] == held && s["lock_waiters"] == waiters)
        .await
}

/// Queues a `lock` of `name` with a long wait on `c` (id `id`) and waits until
/// the hub counts `waiters_after` waiters, so the request is in the queue.
async fn enqueue(hub: &TestHub, c: &mut Client, id: &str, name: &str, waiters_after: u64) {
    send(
        c,
        id,
        "lock",
        json!({"name": name, "wait_ms": LONG_WAIT_MS}),
    )
    .await;
    hub.wait_stats(|s| s["lock_waiters"] == waiters_after).await;
}

/// Aborts the client's TCP connection with a RST (SO_LINGER 0, then drop).
fn reset(c: Client) {
    match c.ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.set_zero_linger().expect("SO_LINGER 0"),
        _ => unreachable!("plain TCP"),
    }
    drop(c);
}

/// Index of the first of `clients` to receive a frame (the others' pending
/// reads are cancelled, which loses nothing), and that frame.
async fn first_answer(clients: &mut [&mut Client]) -> (usize, Value) {
    let reads = clients
        .iter_mut()
        .map(|c| Box::pin(c.recv_response()))
        .collect::<Vec<_>>();
    let (v, i, _) = tokio::time::timeout(WAIT, futures_util::future::select_all(reads))
        .await
        .expect("nobody got an answer");
    (i, v)
}

/// Sends a WebSocket ping and waits for its pong, failing on any text frame
/// meanwhile (nothing may be answered yet).
async fn pong_after_ping(c: &mut Client, payload: &[u8]) {
    c.ws.send(Message::Ping(payload.to_vec().into()))
        .await
        .expect("send ping");
    loop {
        let msg = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("no pong in time")
            .expect("connection ended")
            .expect("websocket error");
        match msg {
            Message::Pong(p) if p.as_ref() == payload => return,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("answered while the lock waits: {other:?}"),
        }
    }
}

/// The value of an unlabelled metric line `name <value>` in `/metrics` text.
fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
        .trim()
        .parse()
        .expect("metric value")
}

// ---------------------------------------------------------------------------
// Mutual exclusion, FIFO
// ---------------------------------------------------------------------------

/// 20 connections × 20 rounds of lock → get → update(+1) → unlock lose no
/// increment, never overlap in the critical section, and every acquisition
/// gets its own fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_exclusion_counter() {
    const CONNS: u64 = 20;
    const ROUNDS: u64 = 20;
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    c.call("memoize", json!({"key": "counter", "value": 0}))
        .await;

    let inside = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let mut w = hub.client().await;
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            let mut fences = Vec::new();
            for _ in 0..ROUNDS {
                let (token, fence) = lock(&mut w, "counter-lock", LONG_WAIT_MS).await;
                assert!(
                    !inside.swap(true, Ordering::SeqCst),
                    "two holders in the critical section at once"
                );
                fences.push(fence);
                let got = w.call("get", json!({"key": "counter"})).await;
                let n = got["value"].as_u64().expect("counter is a number");
                // Widen the read-modify-write window: without the lock,
                // increments would be lost.
                tokio::task::yield_now().await;
                w.call("update", json!({"key": "counter", "value": n + 1}))
                    .await;
                inside.store(false, Ordering::SeqCst);
                unlock(&mut w, "counter-lock", &token).await;
            }
            fences
        }));
    }
    let mut fences = Vec::new();
    for t in tasks {
        let f = tokio::time::timeout(WAIT * 2, t)
            .await
            .expect("workers finished in time")
            .expect("worker panicked");
        assert!(
            f.windows(2).all(|w| w[0] < w[1]),
            "fences not increasing: {f:?}"
        );
        fences.extend(f);
    }
    let got = c.call("get", json!({"key": "counter"})).await;
    assert_eq!(got["value"], CONNS * ROUNDS, "lost increments");
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len() as u64, CONNS * ROUNDS, "a fence was reused");
    wait_locks(&hub, 0, 0).await;
}

/// Waiters are served in arrival order: B, then C, then D.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_fifo() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let (mut b, mut c, mut d) = (hub.client().await, hub.client().await, hub.client().await);
    let (ta, fa) = lock(&mut a, "f", 0).await;
    enqueue(&hub, &mut b, "b", "f", 1).await;
    enqueue(&hub, &mut c, "c", "f", 2).await;
    enqueue(&hub, &mut d, "d", "f", 3).await;

    unlock(&mut a, "f", &ta).await;
    let (who, resp) = first_answer(&mut [&mut b, &mut c, &mut d]).await;
    assert_eq!((who, &resp["id"]), (0, &json!("b")), "B first: {resp}");
    let (tb, fb) = grant(ok(&resp));
    assert!(fb > fa);
    wait_locks(&hub, 1, 2).await;

    unlock(&mut b, "f", &tb).await;
    let (who, resp) = first_answer(&mut [&mut c, &mut d]).await;
    assert_eq!((who, &resp["id"]), (0, &json!("c")), "C second: {resp}");
    let (tc, fc) = grant(ok(&resp));
    assert!(fc > fb);
    wait_locks(&hub, 1, 1).await;

    unlock(&mut c, "f", &tc).await;
    let resp = answer_within(&mut d, PROMPT).await;
    assert_eq!(resp["id"], "d");
    let (td, fd) = grant(ok(&resp));
    assert!(fd > fc);
    wait_locks(&hub, 1, 0).await;
    unlock(&mut d, "f", &td).await;
    wait_locks(&hub, 0, 0).await;
}

// ---------------------------------------------------------------------------
// Try-once and timed waits
// ---------------------------------------------------------------------------

/// Without `wait_ms` (absent, 0 or null) a held lock answers -32003 at once;
/// a wait that runs out answers -32003 and leaves the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_once_and_wait_timeout() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let (ta, _) = lock(&mut a, "t", 0).await;

    for params in [
        json!({"name": "t"}),
        json!({"name": "t", "wait_ms": 0}),
        json!({"name": "t", "wait_ms": null}),
        json!({"name": "t", "wait_ms": 0, "ttl_ms": 5000}),
    ] {
        let t0 = Instant::now();
        let err = b.call_err("lock", params.clone()).await;
        assert_lock_err(&err, -32003, "t");
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "try-once {params} took {:?}",
            t0.elapsed()
        );
    }
    // Nothing was queued by the failed tries.
    let s = hub.stats().await;
    assert_eq!(
        (&s["locks_held"], &s["lock_waiters"]),
        (&json!(1), &json!(0))
    );

    // A timed wait: queued while it waits, gone once it ran out.
    let t0 = Instant::now();
    send(&mut b, "w", "lock", json!({"name": "t", "wait_ms": 1000})).await;
    hub.wait_stats(|s| s["lock_waiters"] == 1).await;
    let resp = answer_within(&mut b, WAIT).await;
    let waited = t0.elapsed();
    assert_eq!(resp["id"], "w");
    assert_lock_err(&resp["error"], -32003, "t");
    assert!(
        waited >= Duration::from_millis(990),
        "gave up after {waited:?}"
    );
    let s = hub.stats().await;
    assert_eq!(
        (&s["locks_held"], &s["lock_waiters"]),
        (&json!(1), &json!(0)),
        "the timed-out waiter is still queued: {s}"
    );

    // The holder is unaffected; once free, a try-once succeeds.
    unlock(&mut a, "t", &ta).await;
    let (tb, _) = lock(&mut b, "t", 0).await;
    unlock(&mut b, "t", &tb).await;
    wait_locks(&hub, 0, 0).await;
}

// ---------------------------------------------------------------------------
// Release when connections go away
// ---------------------------------------------------------------------------

/// How the holder's connection ends.
#[derive(Debug, Clone, Copy)]
enum Gone {
    /// TCP RST (SO_LINGER 0).
    Reset,
    /// A WebSocket close handshake.
    Close,
    /// TCP FIN without a close frame.
    Drop,
}

async fn end(c: Client, how: Gone) {
    match how {
        Gone::Reset => reset(c),
        Gone::Close => {
            let mut c = c;
            c.ws.close(None).await.expect("close");
            drop(c);
        }
        Gone::Drop => drop(c),
    }
}

/// A holder whose connection ends loses the lock at once; the waiter (with a
/// 30 s wait) gets it promptly.
async fn holder_gone_releases(how: Gone) {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let (_ta, fa) = lock(&mut a, "d", 0).await;
    enqueue(&hub, &mut b, "b", "d", 1).await;

    let t0 = Instant::now();
    end(a, how).await;
    let resp = answer_within(&mut b, PROMPT).await;
    assert_eq!(resp["id"], "b", "{resp}");
    let (tb, fb) = grant(ok(&resp));
    assert!(t0.elapsed() < PROMPT, "{how:?}: took {:?}", t0.elapsed());
    assert!(fb > fa);
    wait_locks(&hub, 1, 0).await;
    unlock(&mut b, "d", &tb).await;
    wait_locks(&hub, 0, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_reset_releases_lock() {
    holder_gone_releases(Gone::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_close_releases_lock() {
    holder_gone_releases(Gone::Close).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_drop_releases_lock() {
    holder_gone_releases(Gone::Drop).await;
}

/// A holder's connection that ends with nobody waiting frees all its locks:
/// `locks_held` drops to 0 and the names can be taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_gone_without_waiters_frees_lock() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    lock(&mut a, "x", 0).await;
    lock(&mut a, "y", 0).await;
    wait_locks(&hub, 2, 0).await;
    reset(a);
    wait_locks(&hub, 0, 0).await;
    let mut b = hub.client().await;
    lock(&mut b, "x", 0).await;
    lock(&mut b, "y", 0).await;
}

/// Waiters whose connections end leave the queue; the next one behind them
/// gets the lock when the holder unlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_gone_leaves_queue() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let (mut b, mut c, mut d) = (hub.client().await, hub.client().await, hub.client().await);
    let (ta, _) = lock(&mut a, "q", 0).await;
    enqueue(&hub, &mut b, "b", "q", 1).await;
    enqueue(&hub, &mut c, "c", "q", 2).await;
    enqueue(&hub, &mut d, "d", "q", 3).await;

    end(b, Gone::Close).await;
    wait_locks(&hub, 1, 2).await;
    end(c, Gone::Reset).await;
    wait_locks(&hub, 1, 1).await;

    unlock(&mut a, "q", &ta).await;
    let resp = answer_within(&mut d, PROMPT).await;
    assert_eq!(resp["id"], "d");
    let (td, _) = grant(ok(&resp));
    wait_locks(&hub, 1, 0).await;
    unlock(&mut d, "q", &td).await;
    wait_locks(&hub, 0, 0).await;
}

// ---------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------

/// A lease runs out: the waiter gets the lock ~ttl_ms after it was taken, and
/// the stale token no longer unlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expires_to_waiter() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let t0 = Instant::now();
    let r = a
        .call("lock", json!({"name": "lease", "ttl_ms": 100}))
        .await;
    let (ta, fa) = grant(&r);

    let r = b
        .call("lock", json!({"name": "lease", "wait_ms": LONG_WAIT_MS}))
        .await;
    let waited = t0.elapsed();
    let (tb, fb) = grant(&r);
    assert!(
        waited >= Duration::from_millis(95),
        "lease ended early: {waited:?}"
    );
    assert!(waited < PROMPT, "lease ended late: {waited:?}");
    assert!(fb > fa);

    let err = a
        .call_err("unlock", json!({"name": "lease", "token": ta}))
        .await;
    assert_lock_err(&err, -32004, "lease");
    // B (no lease) still holds it.
    wait_locks(&hub, 1, 0).await;
    unlock(&mut b, "lease", &tb).await;
}

/// A lease with nobody waiting frees the lock by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expires_without_waiters() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let r = a.call("lock", json!({"name": "l", "ttl_ms": 50})).await;
    let (ta, _) = grant(&r);
    wait_locks(&hub, 0, 0).await;
    let err = a
        .call_err("unlock", json!({"name": "l", "token": ta}))
        .await;
    assert_lock_err(&err, -32004, "l");
    lock(&mut a, "l", 0).await;
}

/// A waiter's lease starts when it is granted the lock, not when it asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_lease_starts_at_grant() {
    const TTL: Duration = Duration::from_millis(200);
    let hub = TestHub::start().await;
    let (mut a, mut b, mut c) = (hub.client().await, hub.client().await, hub.client().await);
    let (ta, _) = lock(&mut a, "g", 0).await;
    send(
        &mut b,
        "b",
        "lock",
        json!({"name": "g", "wait_ms": LONG_WAIT_MS, "ttl_ms": TTL.as_millis() as u64}),
    )
    .await;
    hub.wait_stats(|s| s["lock_waiters"] == 1).await;
    // The scenario, not synchronisation: A holds longer than B's lease.
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    unlock(&mut a, "g", &ta).await;
    let resp = answer_within(&mut b, PROMPT).await;
    let granted = Instant::now();
    grant(ok(&resp));

    lock(&mut c, "g", LONG_WAIT_MS).await;
    let held = granted.elapsed();
    assert!(
        held >= TTL - Duration::from_millis(20),
        "B's lease ran out {held:?} after its grant; it must last {TTL:?} from the grant"
    );
}

// ---------------------------------------------------------------------------
// Fences, unlock errors, namespace
// ---------------------------------------------------------------------------

/// Fences strictly grow across acquisitions of the same and of different
/// locks, by any connection, whether taken at once, handed over or after a
/// lease ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_strictly_increase() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let mut fences = Vec::new();

    let (t1, f) = lock(&mut a, "one", 0).await;
    fences.push(f);
    let (t2, f) = lock(&mut b, "two", 0).await;
    fences.push(f);
    unlock(&mut a, "one", &t1).await;
    let (t3, f) = lock(&mut b, "one", 0).await;
    fences.push(f);
    unlock(&mut b, "one", &t3).await;
    let (t4, f) = lock(&mut a, "one", 0).await;
    fences.push(f);
    // Handed over to a waiter.
    enqueue(&hub, &mut b, "b", "one", 1).await;
    unlock(&mut a, "one", &t4).await;
    let (t5, f) = grant(ok(&answer_within(&mut b, PROMPT).await));
    fences.push(f);
    // After a lease.
    let r = a.call("lock", json!({"name": "three", "ttl_ms": 30})).await;
    fences.push(grant(&r).1);
    let (_, f) = lock(&mut b, "three", LONG_WAIT_MS).await;
    fences.push(f);
    unlock(&mut b, "two", &t2).await;
    unlock(&mut b, "one", &t5).await;
    let (_, f) = lock(&mut a, "two", 0).await;
    fences.push(f);

    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences not strictly increasing: {fences:?}"
    );
}

/// unlock with a wrong token, on a lock never held, with another lock's
/// token, or twice answers -32004 `{name}` and changes nothing.
#[tokio::test]
async fn unlock_errors() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let (tu, _) = lock(&mut a, "u", 0).await;
    let (tv, _) = lock(&mut a, "v", 0).await;

    let err = a
        .call_err("unlock", json!({"name": "u", "token": "not-the-token"}))
        .await;
    assert_lock_err(&err, -32004, "u");
    let err = a
        .call_err("unlock", json!({"name": "u", "token": ""}))
        .await;
    assert_lock_err(&err, -32004, "u");
    let err = a
        .call_err("unlock", json!({"name": "u", "token": tv}))
        .await;
    assert_lock_err(&err, -32004, "u");
    let err = a
        .call_err("unlock", json!({"name": "never", "token": tu}))
        .await;
    assert_lock_err(&err, -32004, "never");
    // Still held by A.
    let err = b.call_err("lock", json!({"name": "u"})).await;
    assert_lock_err(&err, -32003, "u");
    wait_locks(&hub, 2, 0).await;

    unlock(&mut a, "u", &tu).await;
    let err = a
        .call_err("unlock", json!({"name": "u", "token": tu}))
        .await;
    assert_lock_err(&err, -32004, "u");
    // A token from a previous acquisition does not unlock a later one.
    let (tu2, _) = lock(&mut b, "u", 0).await;
    assert_ne!(tu2, tu, "token reused");
    let err = a
        .call_err("unlock", json!({"name": "u", "token": tu}))
        .await;
    assert_lock_err(&err, -32004, "u");
    unlock(&mut b, "u", &tu2).await;
    unlock(&mut a, "v", &tv).await;
    wait_locks(&hub, 0, 0).await;
}

/// Locks and keys share no names: lock/unlock leave a same-named key (and
/// the rev) alone, and key writes leave a same-named lock alone.
#[tokio::test]
async fn lock_namespace_is_separate_from_keys() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let w = a
        .call("update", json!({"key": "shared", "value": {"n": 5}}))
        .await;
    let rev = w["rev"].clone();

    let (t, _) = lock(&mut a, "shared", 0).await;
    let got = b.call("get", json!({"key": "shared"})).await;
    assert_eq!(got, json!({"value": {"n": 5}, "rev": rev}));
    // Locking a name with no key creates none.
    let (t2, _) = lock(&mut a, "no-such-key", 0).await;
    assert_eq!(
        b.call("is_memoized", json!({"key": "no-such-key"})).await,
        false
    );
    let keys = b.call("keys", json!({})).await;
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");
    let s = hub.stats().await;
    assert_eq!((&s["keys"], &s["rev"]), (&json!(1), &rev), "{s}");

    // Key writes do not touch the lock.
    b.call("update", json!({"key": "shared", "value": 6})).await;
    b.call("delete", json!({"key": "shared"})).await;
    b.call("memoize", json!({"key": "shared", "value": 7}))
        .await;
    let err = b.call_err("lock", json!({"name": "shared"})).await;
    assert_lock_err(&err, -32003, "shared");

    unlock(&mut a, "shared", &t).await;
    unlock(&mut a, "no-such-key", &t2).await;
    let got = b.call("get", json!({"key": "shared"})).await;
    assert_eq!(got["value"], 7);
    assert_eq!(
        b.call("is_memoized", json!({"key": "no-such-key"})).await,
        false
    );
    let s = hub.stats().await;
    assert_eq!(s["keys"], 1, "{s}");
    wait_locks(&hub, 0, 0).await;
}

// ---------------------------------------------------------------------------
// Ordering behind a waiting lock
// ---------------------------------------------------------------------------

/// Frames sent after a waiting `lock` on the same connection are answered
/// after the lock's response, in the order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_behind_waiting_lock_answer_in_order() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    a.call("memoize", json!({"key": "k", "value": "v"})).await;
    let (ta, _) = lock(&mut a, "o", 0).await;

    send(
        &mut b,
        "L",
        "lock",
        json!({"name": "o", "wait_ms": LONG_WAIT_MS}),
    )
    .await;
    send(&mut b, "G", "get", json!({"key": "k"})).await;
    send(&mut b, "V", "version", json!({})).await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": "B1", "method": "is_memoized", "params": {"key": "k"}},
        {"jsonrpc": "2.0", "id": "B2", "method": "get", "params": {"key": "k"}},
    ]);
    b.send_text(batch.to_string()).await;
    // A notification (no answer) and a try-once on the same lock, which
    // runs after B holds it (so it fails: B holds it already).
    b.send_text(r#"{"jsonrpc":"2.0","method":"version"}"#).await;
    send(&mut b, "T", "lock", json!({"name": "o"})).await;
    hub.wait_stats(|s| s["lock_waiters"] == 1).await;
    // Make sure the hub has read all of the above before the lock is freed:
    // it answers a ping with a pong only on the read after the ping (a
    // tungstenite rule), so once the pong is here every earlier frame has
    // been read (and, as the lock still waits, buffered).
    pong_after_ping(&mut b, b"read-up-to-here").await;

    unlock(&mut a, "o", &ta).await;
    let l = answer_within(&mut b, PROMPT).await;
    assert_eq!(l["id"], "L", "the lock must be answered first: {l}");
    let (tb, _) = grant(ok(&l));
    let g = b.recv_response().await;
    assert_eq!(g["id"], "G", "{g}");
    assert_eq!(ok(&g)["value"], "v");
    let v = b.recv_response().await;
    assert_eq!(v["id"], "V", "{v}");
    assert_eq!(ok(&v)["name"], "memhub");
    let arr = b.recv_response().await;
    let ids: Vec<&Value> = arr
        .as_array()
        .unwrap_or_else(|| panic!("batch answer: {arr}"))
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&json!("B1"), &json!("B2")]);
    let t = b.recv_response().await;
    assert_eq!(t["id"], "T", "{t}");
    assert_lock_err(&t["error"], -32003, "o");

    unlock(&mut b, "o", &tb).await;
    wait_locks(&hub, 0, 0).await;
}

// ---------------------------------------------------------------------------
// Stats and metrics
// ---------------------------------------------------------------------------

/// `stats` and `/metrics` count locks held and requests waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_metrics_count_locks() {
    let hub = TestHub::start().await;
    let check_metrics = |held: f64, waiters: f64| {
        let hub = &hub;
        async move {
            let (status, body) = hub.http_get("/metrics").await;
            assert_eq!(status, 200);
            assert_eq!(metric(&body, "memhub_locks_held"), held, "{body}");
            assert_eq!(metric(&body, "memhub_lock_waiters"), waiters, "{body}");
        }
    };
    let s = hub.stats().await;
    assert_eq!(
        (&s["locks_held"], &s["lock_waiters"]),
        (&json!(0), &json!(0))
    );
    check_metrics(0.0, 0.0).await;

    let mut a = hub.client().await;
    let (mut b, mut c, mut d) = (hub.client().await, hub.client().await, hub.client().await);
    let (t1, _) = lock(&mut a, "s1", 0).await;
    lock(&mut a, "s2", 0).await;
    wait_locks(&hub, 2, 0).await;
    check_metrics(2.0, 0.0).await;

    enqueue(&hub, &mut b, "b", "s1", 1).await;
    enqueue(&hub, &mut c, "c", "s1", 2).await;
    enqueue(&hub, &mut d, "d", "s2", 3).await;
    wait_locks(&hub, 2, 3).await;
    check_metrics(2.0, 3.0).await;

    unlock(&mut a, "s1", &t1).await;
    answer_within(&mut b, PROMPT).await;
    wait_locks(&hub, 2, 2).await;
    check_metrics(2.0, 2.0).await;

    // A goes away: s2 passes to D. Then everyone goes away.
    reset(a);
    answer_within(&mut d, PROMPT).await;
    wait_locks(&hub, 2, 1).await;
    drop((b, c, d));
    wait_locks(&hub, 0, 0).await;
    check_metrics(0.0, 0.0).await;
}

// ---------------------------------------------------------------------------
// Bad params
// ---------------------------------------------------------------------------

/// Malformed lock/unlock params answer -32602, take no lock, and leave the
/// connection usable.
#[tokio::test]
async fn bad_params() {
    let hub = TestHub::start().await;
    let mut c = hub.client().await;
    let long = "n".repeat(1025);
    for (method, params) in [
        ("lock", json!({"name": ""})),
        ("lock", json!({"name": "x", "ttl_ms": 0})),
        ("lock", json!({"name": "x", "ttl_ms": -1})),
        ("lock", json!({"name": "x", "ttl_ms": "100"})),
        ("lock", json!({"name": "x", "wait_ms": -5})),
        ("lock", json!({"name": "x", "wait_ms": 1.5})),
        ("lock", json!({})),
        ("lock", json!({"name": 7})),
        ("lock", json!({"name": long})),
        ("lock", json!(["x"])),
        ("unlock", json!({"name": "x"})),
        ("unlock", json!({"token": "t"})),
        ("unlock", json!({"name": "", "token": "t"})),
        ("unlock", json!({"name": "x", "token": 5})),
        ("unlock", json!({"name": "x", "token": null})),
        ("unlock", json!(["x", "t"])),
    ] {
        let err = c.call_err(method, params.clone()).await;
        assert_eq!(err["code"], -32602, "{method} {params}: {err}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{err}"
        );
    }
    let s = hub.stats().await;
    assert_eq!(
        (&s["locks_held"], &s["lock_waiters"]),
        (&json!(0), &json!(0))
    );
    let (t, _) = lock(&mut c, "x", 0).await;
    unlock(&mut c, "x", &t).await;
    // Nothing above closed the connection.
    c.ws.send(tokio_tungstenite::tungstenite::Message::Ping(
        Default::default(),
    ))
    .await
    .expect("still open");
}

/// Huge `wait_ms` / `ttl_ms` (up to u64::MAX) are accepted (clamped by the
/// hub, not overflowed): the lock is taken, waited for and handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_durations_are_accepted() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let r = a
        .call(
            "lock",
            json!({"name": "h", "ttl_ms": u64::MAX, "wait_ms": u64::MAX}),
        )
        .await;
    let (ta, _) = grant(&r);
    send(
        &mut b,
        "b",
        "lock",
        json!({"name": "h", "wait_ms": u64::MAX, "ttl_ms": u64::MAX}),
    )
    .await;
    hub.wait_stats(|s| s["lock_waiters"] == 1).await;
    unlock(&mut a, "h", &ta).await;
    let (tb, _) = grant(ok(&answer_within(&mut b, PROMPT).await));
    unlock(&mut b, "h", &tb).await;
    wait_locks(&hub, 0, 0).await;
}

/// The token is what unlocks: another connection presenting it may unlock
/// (PROTOCOL.md: `-32004` only "if that token does not hold the lock").
#[tokio::test]
async fn unlock_by_token_from_another_connection() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let (ta, _) = lock(&mut a, "p", 0).await;
    unlock(&mut b, "p", &ta).await;
    let err = a
        .call_err("unlock", json!({"name": "p", "token": ta}))
        .await;
    assert_lock_err(&err, -32004, "p");
    wait_locks(&hub, 0, 0).await;
}

/// A waiter whose peer falls silent (stops answering pings) while it waits
/// is dropped by the keepalive and leaves the queue, instead of being granted
/// the lock later and holding it for nobody.
#[tokio::test]
async fn a_silent_waiter_is_dropped_by_keepalive() {
    let hub = TestHub::with_config(ServerConfig {
        ping_interval: Duration::from_millis(100),
        ..ServerConfig::default()
    })
    .await;
    let mut holder = hub.client().await;
    let (token, _) = lock(&mut holder, "quiet", 0).await;
    let mut waiter = hub.client().await;
    // After this the waiter never reads again, so it never answers a ping.
    enqueue(&hub, &mut waiter, "w", "quiet", 1).await;
    // The holder keeps reading (and answering pings) while the hub gives up
    // on the silent waiter within about two ping intervals.
    let deadline = Instant::now() + WAIT;
    loop {
        let s = holder.call("stats", json!({})).await;
        if s["lock_waiters"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "silent waiter still queued: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unlock(&mut holder, "quiet", &token).await;
    let s = holder.call("stats", json!({})).await;
    assert_eq!(s["locks_held"], 0, "nobody may hold the lock: {s}");
    drop(waiter);
}

/// A connection whose `lock` waits still gets its subscription's events at
/// once: the wait keeps the connection's writing going, not only its reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_connection_while_its_lock_waits() {
    let hub = TestHub::start().await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let sub = b.call("subscribe", json!({"key": "watched"})).await;
    let (ta, _) = lock(&mut a, "busy", 0).await;
    enqueue(&hub, &mut b, "L", "busy", 1).await;

    let rev = a
        .call(
            "update",
            json!({"key": "watched", "value": "while waiting"}),
        )
        .await["rev"]
        .clone();
    let event = tokio::time::timeout(PROMPT, b.next_event())
        .await
        .expect("no event while the lock waits");
    assert_eq!(event["sub"], sub["sub"], "{event}");
    assert_eq!(event["value"], "while waiting", "{event}");
    assert_eq!(event["rev"], rev, "{event}");
    // The lock is still waiting: nothing answered it yet.
    assert_eq!(wait_locks(&hub, 1, 1).await["lock_waiters"], 1);

    unlock(&mut a, "busy", &ta).await;
    let l = answer_within(&mut b, PROMPT).await;
    assert_eq!(l["id"], "L", "{l}");
    let (tb, _) = grant(ok(&l));
    unlock(&mut b, "busy", &tb).await;
}
