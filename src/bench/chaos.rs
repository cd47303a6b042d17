//! `chaos`: a soak of the hub under abuse, with a PASS/FAIL verdict
//! (`memhub bench --mode chaos`).
//!
//! First 1000 known keys `chaos:known:{n}` are written (after deleting any
//! left under that prefix by an earlier run); nothing else ever writes under
//! that prefix. Then, during a warmup (`--warmup`) and the measured period
//! (`--seconds`), these run at once, each bounded (one connection or one
//! burst at a time, every wait with a timeout, every loop ending at the
//! deadline):
//!
//! - `--clients` **valid clients**, `--pipeline` requests in flight each:
//!   `get`, `update` (some with a TTL), `incr`, `patch`, `merge`, `delete`,
//!   `memoize`, `is_memoized`, `keys`, `stats`, batches, `subscribe` and
//!   `unsubscribe` on keys `chaos:t:*` and `chaos:n:*`, and `get`s of known
//!   keys. Every answer is checked (its id, its shape, the error codes that
//!   may legitimately come back) and so is every event (it belongs to a
//!   subscription that was announced and not yet ended, its key is the
//!   subscription's, its rev is above the previous one);
//! - **disconnectors**: TCP resets (`SO_LINGER` 0, then drop) with requests
//!   unanswered, halfway through a frame and in the middle of a prefix
//!   subscription's event stream; drops without a close handshake;
//! - a **reconnect storm**: bursts of 16 to 64 connections opened at once and
//!   closed politely, dropped or reset;
//! - **oversized messages**: `--max-message-bytes` + 1 MiB as one text frame,
//!   one binary frame, or text fragments each under the limit, one at a
//!   time; the hub must answer each with close code 1009;
//! - **garbage** on two live connections (invalid JSON, junk, binary frames,
//!   nesting deeper than any hub allows, non-objects, bad envelopes, unknown
//!   methods, bad params, empty and mixed batches): each must get its error
//!   response with the right code and id, and the connection must stay
//!   usable (it reads a known key every eighth frame);
//! - **lock holders and waiters that vanish** (reset or dropped): the lock
//!   must pass to the waiter within its `wait_ms`; leases that run out must
//!   make `unlock` answer `-32004`; a shared lock is contended;
//! - a **monitor**: `stats` every 250 ms on the control connection, which
//!   must answer within 5 s.
//!
//! After the warmup and after the chaos, the run waits (at most 30 s) until
//! the hub's connections, subscriptions, held locks and lock waiters are back
//! to what they were before the warmup, then reads the RSS of the hub: this
//! process with `--spawn` (hub and load together), else `/proc/PID/status`
//! with `--pid`. Finally the known keys are listed and read back: the same
//! set, the same values, the same revs.
//!
//! FAIL when a known key changed or vanished, anything unexpected happened,
//! the hub stopped answering, its state did not return to the baseline, or
//! its RSS grew by more than max(16 MiB, 25 %) (64 MiB with `--spawn`,
//! where the load shares the process). `memhub serve` keeps large buffers
//! out of glibc's arenas (`src/allocator.rs`), so a leak-free hub grows by
//! about 1 MiB over the 60 s soak, and a leak of a few hundred bytes per
//! connection storm shows. Run it against an otherwise
//! idle hub: other clients' connections and locks count against the
//! baseline.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

use super::progress::Progress;
use super::report::{rate, ChaosReport, HubState, Latency, Report};
use super::{
    nanos, new_histogram, record_ns, BenchConfig, Rng, Ws, CONNECT_TIMEOUT, DEFAULT_SECONDS,
    RESPONSE_TIMEOUT,
};

/// Prefix of the keys written before the chaos and checked after it.
pub const KNOWN_PREFIX: &str = "chaos:known:";
/// How many known keys there are.
pub const KNOWN_KEYS: usize = 1000;
/// Keys `chaos:t:{0..N}` (objects) and `chaos:n:{0..N}` (counters).
const TRAFFIC_KEYS: u64 = 64;
/// Most key subscriptions a valid client keeps.
const MAX_SUBS: usize = 8;
const DISCONNECTORS: u64 = 2;
const GARBAGE_CLIENTS: u64 = 2;
const LOCKERS: u64 = 2;
/// How long a lock waiter waits for a holder that unlocks or vanishes.
const LOCK_WAIT_MS: u64 = 5000;
/// Lease of the shared lock.
const LEASE_MS: u64 = 20;
/// When the holder of the shared lock unlocks: long after the lease ran out
/// (a lease is a timer, which may fire late on a loaded machine).
const UNLOCK_AFTER_MS: u64 = 500;
/// Longest wait for the hub to return to its baseline.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
const MONITOR_EVERY: Duration = Duration::from_millis(250);
/// `stats` slower than this means the hub stopped answering.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(5);
/// How long tasks may take to finish after the deadline.
const STRAGGLER_GRACE: Duration = Duration::from_secs(60);
/// Unexpected errors described in the report.
const SAMPLES: usize = 20;
/// RSS growth always allowed for a separate hub process (`--pid`): leak-free
/// soaks of 60 and 150 s grew by 0.8–1.3 MiB.
const RSS_SLACK_MIN: u64 = 16 << 20;
/// RSS growth always allowed with `--spawn`, where the load's own memory
/// (a 16 KiB buffer pair per connection, storms of connections, big values
/// in flight) shares the process and the allocator with the hub: a
/// leak-free 5 s run grew by either about 2 or about 28 MiB, depending on
/// where the allocator's high-water mark landed (this process does not
/// keep large buffers on mmap as `memhub serve` does), too close to 32 MiB for a
/// test that must not fail by chance. The leak check proper is the soak
/// against a separate hub (`just soak`), with the tighter slack.
const RSS_SLACK_IN_PROCESS: u64 = 64 << 20;
/// Deeper than any hub allows (`max_nesting` is at most 1024).
const DEEP: u64 = 1025;
/// Read and write buffer of each load connection.
const CLIENT_BUFFER_BYTES: usize = 16 * 1024;
/// Oversized messages are written in pieces of this size.
const WRITE_PIECE: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// What is counted
// ---------------------------------------------------------------------------

macro_rules! names {
    ($(#[$m:meta])* enum $name:ident { $($v:ident = $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum $name { $($v,)* }
        impl $name {
            const ALL: &'static [$name] = &[$($name::$v,)*];
            fn name(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }
        }
    };
}

names! {
    /// Kinds of operation.
    enum Op {
        Get = "get",
        KnownGet = "get-known",
        Update = "update",
        Incr = "incr",
        Patch = "patch",
        Merge = "merge",
        Delete = "delete",
        Memoize = "memoize",
        IsMemoized = "is_memoized",
        Keys = "keys",
        Batch = "batch",
        Subscribe = "subscribe",
        Unsubscribe = "unsubscribe",
        Stats = "stats",
        Event = "events-received",
        Lock = "lock",
        Unlock = "unlock",
        HolderVanished = "lock-holder-vanished",
        WaiterVanished = "lock-waiter-vanished",
        LeaseRanOut = "lock-lease-ran-out",
        ResetMidRequest = "reset-mid-request",
        ResetMidFrame = "reset-mid-frame",
        ResetMidSubscription = "reset-mid-subscription",
        DropWithoutClose = "drop-without-close",
        StormConnection = "storm-connections",
        OversizedText = "oversized-text",
        OversizedBinary = "oversized-binary",
        OversizedFragmented = "oversized-fragmented",
        GarbageTruncated = "garbage-truncated-json",
        GarbageJunk = "garbage-junk-text",
        GarbageBinary = "garbage-binary",
        GarbageDeepArrays = "garbage-deep-arrays",
        GarbageDeepValue = "garbage-deep-value",
        GarbageUnclosed = "garbage-unclosed-nesting",
        GarbageNotObject = "garbage-not-an-object",
        GarbageBadVersion = "garbage-bad-jsonrpc",
        GarbageBadId = "garbage-bad-id",
        GarbageBadParams = "garbage-params-not-object",
        GarbagePositional = "garbage-positional-params",
        GarbageUnknownMethod = "garbage-unknown-method",
        GarbageBadKey = "garbage-bad-key",
        GarbageMissingValue = "garbage-missing-value",
        GarbageEmptyBatch = "garbage-empty-batch",
        GarbageMixedBatch = "garbage-mixed-batch",
    }
}

names! {
    /// Answers that are errors but the right answer.
    enum Expect {
        NotFound = "not-found(-32001)",
        LockBusy = "lock-busy(-32003)",
        LockNotHeld = "lock-not-held(-32004)",
        ParseError = "parse-error(-32700)",
        InvalidRequest = "invalid-request(-32600)",
        MethodNotFound = "method-not-found(-32601)",
        InvalidParams = "invalid-params(-32602)",
        Close1009 = "close-1009",
        Lagged = "lagged-events",
    }
}

impl Expect {
    fn of_code(code: i64) -> Option<Self> {
        Some(match code {
            -32001 => Expect::NotFound,
            -32003 => Expect::LockBusy,
            -32004 => Expect::LockNotHeld,
            -32700 => Expect::ParseError,
            -32600 => Expect::InvalidRequest,
            -32601 => Expect::MethodNotFound,
            -32602 => Expect::InvalidParams,
            _ => return None,
        })
    }
}

/// Counters shared by every task of a run.
struct Tally {
    ops: Vec<AtomicU64>,
    expected: Vec<AtomicU64>,
    unexpected: AtomicU64,
    samples: Mutex<Vec<String>>,
    /// A `stats` call timed out, or the hub refused the control connection.
    hub_silent: AtomicBool,
    /// A `get` of a known key returned something else during the run.
    known_changed: AtomicBool,
    /// What the run is doing, for the progress line and the samples.
    stage: Mutex<&'static str>,
}

impl Tally {
    fn new() -> Self {
        Self {
            ops: Op::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            expected: Expect::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            unexpected: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
            hub_silent: AtomicBool::new(false),
            known_changed: AtomicBool::new(false),
            stage: Mutex::new("starting"),
        }
    }

    fn op(&self, op: Op) {
        self.ops[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn expect(&self, e: Expect) {
        self.expected[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn unexpected(&self, what: impl fmt::Display) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        let stage = *self.stage.lock();
        let mut samples = self.samples.lock();
        if samples.len() < SAMPLES {
            samples.push(format!("[{stage}] {what}"));
        }
    }

    /// An event on a connection whose events are not checked.
    fn event(&self, ev: &Value) {
        self.op(Op::Event);
        if ev["params"]["event"] == "lagged" {
            self.expect(Expect::Lagged);
        }
    }

    fn set_stage(&self, stage: &'static str) {
        *self.stage.lock() = stage;
    }

    fn total_ops(&self) -> u64 {
        self.ops.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn unexpected_count(&self) -> u64 {
        self.unexpected.load(Ordering::Relaxed)
    }

    /// Counts by name, minus those of `since` (the warmup's), zeros left out.
    fn counts(&self, since: &Snapshot) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let diff = |now: &[AtomicU64], then: &[u64], names: Vec<&'static str>| {
            names
                .into_iter()
                .zip(now.iter().zip(then))
                .map(|(n, (c, t))| (n.to_string(), c.load(Ordering::Relaxed) - t))
                .filter(|(_, v)| *v > 0)
                .collect::<BTreeMap<_, _>>()
        };
        (
            diff(
                &self.ops,
                &since.ops,
                Op::ALL.iter().map(|o| o.name()).collect(),
            ),
            diff(
                &self.expected,
                &since.expected,
                Expect::ALL.iter().map(|e| e.name()).collect(),
            ),
        )
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            ops: self.ops.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            expected: self
                .expected
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// Counter values at one instant.
struct Snapshot {
    ops: Vec<u64>,
    expected: Vec<u64>,
}

// ---------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------

/// Why a connection stopped being usable.
#[derive(Debug)]
enum Fail {
    Timeout(Duration),
    Closed(String),
    Bad(String),
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Timeout(d) => write!(f, "no answer within {d:?}"),
            Fail::Closed(why) | Fail::Bad(why) => f.write_str(why),
        }
    }
}

/// A JSON-RPC error answer.
#[derive(Debug)]
struct RpcErr {
    code: i64,
    message: String,
}

impl fmt::Display for RpcErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {} ({})", self.code, self.message)
    }
}

type Answer = Result<Value, RpcErr>;

/// A frame from the hub.
enum Incoming {
    Event(Value),
    Reply(Value),
}

/// A raw JSON-RPC connection.
struct Conn {
    ws: Ws,
    next_id: u64,
}

impl Conn {
    /// Opens a connection with small socket buffers: with `--spawn` the RSS
    /// measured is that of hub and load together, and the load's share
    /// should stay small.
    async fn open(url: &str) -> anyhow::Result<Self> {
        let config = WebSocketConfig::default()
            .read_buffer_size(CLIENT_BUFFER_BYTES)
            .write_buffer_size(CLIENT_BUFFER_BYTES);
        let conn = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
        let ws = match tokio::time::timeout(CONNECT_TIMEOUT, conn).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => bail!("cannot connect to {url}: {e}"),
            Err(_) => bail!("cannot connect to {url}: no answer within {CONNECT_TIMEOUT:?}"),
        };
        Ok(Self { ws, next_id: 0 })
    }

    /// The text of a request with a fresh id.
    fn request(&mut self, method: &str, params: Value) -> (u64, String) {
        self.next_id += 1;
        let id = self.next_id;
        let text = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        (id, text.to_string())
    }

    async fn send(&mut self, msg: Message) -> Result<(), Fail> {
        self.ws
            .send(msg)
            .await
            .map_err(|e| Fail::Closed(format!("send failed: {e}")))
    }

    async fn next(&mut self, wait: Duration) -> Result<Incoming, Fail> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(Fail::Timeout(wait)),
                Ok(None) => {
                    return Err(Fail::Closed(
                        "the connection ended without a close frame".into(),
                    ))
                }
                Ok(Some(Err(e))) => return Err(Fail::Closed(format!("read failed: {e}"))),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).map_err(|e| {
                        Fail::Bad(format!("unreadable frame ({e}): {}", clip(t.as_str())))
                    })?;
                    return Ok(if v.get("method").is_some() && v.get("id").is_none() {
                        Incoming::Event(v)
                    } else {
                        Incoming::Reply(v)
                    });
                }
                Message::Close(f) => {
                    return Err(Fail::Closed(match f {
                        Some(f) => format!(
                            "the hub closed the connection with {} \"{}\"",
                            u16::from(f.code),
                            f.reason
                        ),
                        None => "the hub closed the connection".into(),
                    }))
                }
                Message::Binary(_) => return Err(Fail::Bad("a binary frame from the hub".into())),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// The next answer; events in between go to `on_event`.
    async fn reply(
        &mut self,
        wait: Duration,
        on_event: &mut impl FnMut(Value),
    ) -> Result<Value, Fail> {
        loop {
            match self.next(wait).await? {
                Incoming::Event(v) => on_event(v),
                Incoming::Reply(v) => return Ok(v),
            }
        }
    }

    /// Sends one request and waits for its answer, counting events.
    async fn call(
        &mut self,
        method: &str,
        params: Value,
        tally: &Tally,
        wait: Duration,
    ) -> Result<Answer, Fail> {
        let (id, text) = self.request(method, params);
        self.send(Message::text(text)).await?;
        let v = self.reply(wait, &mut |ev| tally.event(&ev)).await?;
        answer_of(v, id)
    }

    /// Resets the TCP connection: `SO_LINGER` 0, then close.
    fn reset(self) {
        if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
            let _ = s.set_zero_linger();
        }
    }

    /// Closes politely and waits (briefly) for the hub's close frame.
    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if self.ws.close(None).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        })
        .await;
    }
}

/// The result or error of the answer `v` to request `id`.
fn answer_of(mut v: Value, id: u64) -> Result<Answer, Fail> {
    if v.get("id") != Some(&json!(id)) {
        return Err(Fail::Bad(format!(
            "expected the answer to id {id}, got {}",
            clip(&v.to_string())
        )));
    }
    if let Some(r) = v.get_mut("result") {
        return Ok(Ok(r.take()));
    }
    match v.get("error") {
        Some(e) => Ok(Err(RpcErr {
            code: e["code"].as_i64().unwrap_or(0),
            message: e["message"].as_str().unwrap_or_default().to_string(),
        })),
        None => Err(Fail::Bad(format!(
            "an answer with neither result nor error: {}",
            clip(&v.to_string())
        ))),
    }
}

/// At most 200 characters of `s`.
fn clip(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_string();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

fn sleep_ms(ms: u64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_millis(ms))
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// A known key and what it must still hold.
struct KnownKey {
    key: String,
    value: Value,
    rev: u64,
}

/// Everything the tasks of one phase share.
struct Ctx {
    url: String,
    end: Instant,
    tally: Arc<Tally>,
    known: Arc<Vec<KnownKey>>,
    /// ASCII text of `--max-message-bytes` + 1 MiB, shaped like an update.
    big: Bytes,
    /// Fragment size for the fragmented oversized message (under the limit).
    chunk: usize,
    /// Padding in the values of valid writes (`--value-size` characters).
    pad: String,
    pipeline: usize,
}

impl Ctx {
    fn running(&self) -> bool {
        Instant::now() < self.end
    }
}

/// Whose RSS is read.
#[derive(Clone, Copy)]
pub(crate) enum RssSource {
    InProcess,
    Pid(u32),
}

impl RssSource {
    /// The current RSS in bytes, if /proc can tell.
    pub(crate) fn read(self) -> Option<u64> {
        let path = match self {
            RssSource::InProcess => "/proc/self/status".to_string(),
            RssSource::Pid(p) => format!("/proc/{p}/status"),
        };
        let status = std::fs::read_to_string(path).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line
            .trim_start_matches("VmRSS:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// Whose RSS this is, for reports and errors.
    pub(crate) fn describe(self) -> String {
        match self {
            RssSource::InProcess => "in-process: hub and load together".into(),
            RssSource::Pid(p) => format!("pid {p}"),
        }
    }
}

pub(crate) async fn run(cfg: &BenchConfig, url: &str) -> anyhow::Result<Report> {
    let rss = if cfg.spawn {
        Some(RssSource::InProcess)
    } else {
        cfg.pid.map(RssSource::Pid)
    };
    if let Some(src) = rss {
        if src.read().is_none() {
            bail!("cannot read the RSS of {} from /proc", src.describe());
        }
    }
    let duration = cfg.duration.unwrap_or(Duration::from_secs(DEFAULT_SECONDS));
    let tally = Arc::new(Tally::new());
    let mut control = Conn::open(url)
        .await
        .context("cannot open the control connection")?;

    let started = Instant::now();
    let total = cfg.warmup + duration;
    let progress = Progress::start(cfg.progress, {
        let tally = tally.clone();
        let mut last = (Instant::now(), 0u64);
        move || {
            let now = Instant::now();
            let ops = tally.total_ops();
            let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
            let rate = (ops - last.1.min(ops)) as f64 / dt;
            last = (now, ops);
            format!(
                "chaos [{}]: {rate:>9.0} ops/s  {} unexpected  {:.0}/{:.0} s",
                *tally.stage.lock(),
                tally.unexpected_count(),
                now.duration_since(started).as_secs_f64(),
                total.as_secs_f64()
            )
        }
    });

    tally.set_stage("writing known keys");
    let known = Arc::new(write_known(&mut control, &tally).await?);
    let baseline = match hub_state(&mut control, &tally).await {
        Ok(s) => s,
        Err(f) => bail!("stats failed before the chaos: {f}"),
    };

    let big = oversized_text(cfg.max_message_bytes);
    let ctx = |end: Instant| {
        Arc::new(Ctx {
            url: url.to_string(),
            end,
            tally: tally.clone(),
            known: known.clone(),
            big: big.clone(),
            chunk: (cfg.max_message_bytes / 16).max(1),
            pad: "x".repeat(cfg.value_size),
            pipeline: cfg.pipeline,
        })
    };
    let mut failures = Vec::new();
    let mut max_conns = 0;

    // Warmup: the same mix, so that the RSS before has seen every kind once.
    if !cfg.warmup.is_zero() {
        tally.set_stage("warmup");
        run_phase(
            ctx(Instant::now() + cfg.warmup),
            cfg.clients,
            &mut control,
            &mut max_conns,
        )
        .await;
    }
    tally.set_stage("settling after the warmup");
    if let Err(why) = settle(&mut control, &baseline, &tally).await {
        failures.push(format!("after the warmup, {why}"));
    }
    let rss_before = rss.and_then(RssSource::read);

    tally.set_stage("chaos");
    let before = tally.snapshot();
    let chaos_start = Instant::now();
    max_conns = 0;
    let hist = run_phase(
        ctx(chaos_start + duration),
        cfg.clients,
        &mut control,
        &mut max_conns,
    )
    .await;
    let seconds = chaos_start.elapsed().as_secs_f64().max(1e-6);
    let (ops, expected_errors) = tally.counts(&before);

    tally.set_stage("settling after the chaos");
    let after = match settle(&mut control, &baseline, &tally).await {
        Ok(s) => Some(s),
        Err(why) => {
            failures.push(why.to_string());
            why.state()
        }
    };
    // Let the allocator see the last connections go.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after = rss.and_then(RssSource::read);

    tally.set_stage("verifying known keys");
    let (intact_count, problems) = match verify_known(&mut control, &known, &tally).await {
        Ok(r) => r,
        Err(f) => {
            tally.hub_silent.store(true, Ordering::Relaxed);
            (0, vec![format!("the known keys could not be read: {f}")])
        }
    };
    let known_intact = problems.is_empty() && !tally.known_changed.load(Ordering::Relaxed);
    if !known_intact {
        let mut why = format!("known keys changed or vanished: {intact_count}/{KNOWN_KEYS} intact");
        for p in problems.iter().take(5) {
            why.push_str("; ");
            why.push_str(p);
        }
        if tally.known_changed.load(Ordering::Relaxed) {
            why.push_str("; a read during the run saw a changed known key");
        }
        failures.push(why);
    }
    // The hub must still answer at the very end.
    match control
        .call("version", json!({}), &tally, MONITOR_TIMEOUT)
        .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tally.unexpected(format!("version at the end answered {e}")),
        Err(f) => {
            tally.hub_silent.store(true, Ordering::Relaxed);
            tally.unexpected(format!("version at the end: {f}"));
        }
    }
    control.close().await;
    if let Some(p) = progress {
        p.finish();
    }

    let hub_answering = !tally.hub_silent.load(Ordering::Relaxed);
    if !hub_answering {
        failures.push("the hub stopped answering".to_string());
    }
    let unexpected = tally.unexpected_count();
    let samples = tally.samples.lock().clone();
    if unexpected > 0 {
        failures.push(format!(
            "{unexpected} unexpected errors (first: {})",
            samples.first().map_or("?", String::as_str)
        ));
    }
    let (growth, limit) = match (rss_before, rss_after) {
        (Some(b), Some(a)) => {
            let slack = match rss {
                Some(RssSource::InProcess) => RSS_SLACK_IN_PROCESS,
                _ => RSS_SLACK_MIN,
            };
            let limit = slack.max(b / 4);
            let growth = a as i64 - b as i64;
            if growth > limit as i64 {
                failures.push(format!(
                    "RSS grew by {:.1} MiB ({:.1} → {:.1} MiB), over the {:.1} MiB allowed",
                    growth as f64 / 1048576.0,
                    b as f64 / 1048576.0,
                    a as f64 / 1048576.0,
                    limit as f64 / 1048576.0
                ));
            }
            (Some(growth), Some(limit))
        }
        (None, None) => (None, None),
        _ => {
            failures.push("the RSS could not be read".to_string());
            (None, None)
        }
    };

    let total_ops: u64 = ops.values().sum();
    Ok(Report {
        mode: cfg.mode,
        url: url.to_string(),
        spawned: cfg.spawn,
        clients: cfg.clients,
        pipeline: cfg.pipeline,
        value_size: cfg.value_size,
        keyspace: TRAFFIC_KEYS,
        ops: total_ops,
        seconds,
        ops_per_sec: rate(total_ops, seconds),
        errors: unexpected,
        latency_us: Latency::from_nanos(&hist),
        fanout: None,
        chaos: Some(ChaosReport {
            passed: failures.is_empty(),
            failures,
            warmup_seconds: cfg.warmup.as_secs_f64(),
            ops,
            expected_errors,
            unexpected_errors: unexpected,
            unexpected_samples: samples,
            known_keys: KNOWN_KEYS as u64,
            known_keys_intact_count: intact_count,
            known_keys_intact: known_intact,
            hub_answering,
            rss_source: rss.map(RssSource::describe),
            rss_before_bytes: rss_before,
            rss_after_bytes: rss_after,
            rss_growth_bytes: growth,
            rss_growth_limit_bytes: limit,
            baseline,
            after,
            max_connections_seen: max_conns,
        }),
        idle: None,
    })
}

/// Runs every chaos task until `ctx.end`, monitoring the hub on `control`
/// meanwhile; returns the valid clients' request latencies.
async fn run_phase(
    ctx: Arc<Ctx>,
    clients: usize,
    control: &mut Conn,
    max_conns: &mut u64,
) -> Histogram<u64> {
    let mut set: JoinSet<Option<Histogram<u64>>> = JoinSet::new();
    for i in 0..clients {
        set.spawn(valid_client(ctx.clone(), i as u64));
    }
    for i in 0..DISCONNECTORS {
        let ctx = ctx.clone();
        set.spawn(async move {
            disconnector(ctx, i).await;
            None
        });
    }
    for i in 0..GARBAGE_CLIENTS {
        let ctx = ctx.clone();
        set.spawn(async move {
            garbage_client(ctx, i).await;
            None
        });
    }
    for i in 0..LOCKERS {
        let ctx = ctx.clone();
        set.spawn(async move {
            locker(ctx, i).await;
            None
        });
    }
    {
        let ctx = ctx.clone();
        set.spawn(async move {
            storm(ctx).await;
            None
        });
    }
    {
        let ctx = ctx.clone();
        set.spawn(async move {
            oversizer(ctx).await;
            None
        });
    }

    // The monitor.
    let tally = &ctx.tally;
    while ctx.running() {
        let left = ctx.end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(MONITOR_EVERY)).await;
        match hub_state(control, tally).await {
            Ok(s) => *max_conns = (*max_conns).max(s.connections),
            Err(f) => {
                if matches!(f, Fail::Timeout(_)) {
                    tally.hub_silent.store(true, Ordering::Relaxed);
                }
                tally.unexpected(format!("monitor: stats failed: {f}"));
                match Conn::open(&ctx.url).await {
                    Ok(c) => *control = c,
                    Err(e) => {
                        tally.hub_silent.store(true, Ordering::Relaxed);
                        tally.unexpected(format!("monitor: cannot reconnect: {e:#}"));
                        break;
                    }
                }
            }
        }
    }

    let mut hist = new_histogram();
    let grace = tokio::time::Instant::now() + STRAGGLER_GRACE;
    loop {
        match tokio::time::timeout_at(grace, set.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok(Some(h)))) => {
                // Both grow automatically: adding cannot run out of range.
                let _ = hist.add(&h);
            }
            Ok(Some(Ok(None))) => {}
            Ok(Some(Err(e))) => tally.unexpected(format!("a chaos task failed: {e}")),
            Err(_) => {
                tally.unexpected(format!(
                    "{} chaos tasks were still running {STRAGGLER_GRACE:?} after the deadline",
                    set.len()
                ));
                set.abort_all();
                break;
            }
        }
    }
    hist
}

/// Reads the hub-wide numbers of `stats`.
async fn hub_state(control: &mut Conn, tally: &Tally) -> Result<HubState, Fail> {
    let s = match control
        .call("stats", json!({}), tally, MONITOR_TIMEOUT)
        .await?
    {
        Ok(s) => s,
        Err(e) => return Err(Fail::Bad(format!("stats answered {e}"))),
    };
    tally.op(Op::Stats);
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    Ok(HubState {
        connections: n("connections"),
        subscriptions: n("subscriptions"),
        locks_held: n("locks_held"),
        lock_waiters: n("lock_waiters"),
        keys: n("keys"),
    })
}

/// Why the hub did not settle.
enum Unsettled {
    Stats(Fail),
    Timeout(HubState, HubState),
}

impl Unsettled {
    fn state(&self) -> Option<HubState> {
        match self {
            Unsettled::Stats(_) => None,
            Unsettled::Timeout(s, _) => Some(*s),
        }
    }
}

impl fmt::Display for Unsettled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsettled::Stats(e) => write!(f, "stats failed: {e}"),
            Unsettled::Timeout(s, base) => write!(
                f,
                "the hub did not return to its baseline within {SETTLE_TIMEOUT:?}: {s} (before: {base})"
            ),
        }
    }
}

/// Waits until the hub has no more connections, subscriptions, held locks
/// and lock waiters than at `base`.
async fn settle(control: &mut Conn, base: &HubState, tally: &Tally) -> Result<HubState, Unsettled> {
    let until = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let s = match hub_state(control, tally).await {
            Ok(s) => s,
            Err(f) => {
                tally.hub_silent.store(true, Ordering::Relaxed);
                return Err(Unsettled::Stats(f));
            }
        };
        if s.connections <= base.connections
            && s.subscriptions <= base.subscriptions
            && s.locks_held <= base.locks_held
            && s.lock_waiters <= base.lock_waiters
        {
            return Ok(s);
        }
        if Instant::now() >= until {
            return Err(Unsettled::Timeout(s, *base));
        }
        sleep_ms(100).await;
    }
}

// ---------------------------------------------------------------------------
// Known keys
// ---------------------------------------------------------------------------

fn known_value(n: usize) -> Value {
    json!({
        "n": n,
        "label": format!("known-{n}"),
        "tags": ["chaos", n % 7, null, true],
        "nested": {"half": n as f64 / 2.0 + 0.25, "even": n % 2 == 0},
        "text": "é ✓ \"quoted\" \\ back\nslash",
    })
}

/// Sends `items` (request texts) as one batch and returns the answers in
/// order, checked against `ids`.
async fn batch(
    conn: &mut Conn,
    items: &[(u64, String)],
    tally: &Tally,
) -> Result<Vec<Answer>, Fail> {
    let text = format!(
        "[{}]",
        items
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    conn.send(Message::text(text)).await?;
    let v = conn
        .reply(RESPONSE_TIMEOUT, &mut |ev| tally.event(&ev))
        .await?;
    let Value::Array(answers) = v else {
        return Err(Fail::Bad(format!(
            "a batch answered by a non-array: {}",
            clip(&v.to_string())
        )));
    };
    if answers.len() != items.len() {
        return Err(Fail::Bad(format!(
            "a batch of {} answered with {} entries",
            items.len(),
            answers.len()
        )));
    }
    answers
        .into_iter()
        .zip(items)
        .map(|(a, (id, _))| answer_of(a, *id))
        .collect()
}

/// Lists every key under `prefix` (bounded to 1000 pages).
async fn list_keys(
    conn: &mut Conn,
    prefix: &str,
    tally: &Tally,
) -> Result<Vec<(String, u64)>, Fail> {
    let mut out = Vec::new();
    let mut after = Value::Null;
    for _ in 0..1000 {
        let page = conn
            .call(
                "keys",
                json!({"prefix": prefix, "limit": 1000, "after": after}),
                tally,
                RESPONSE_TIMEOUT,
            )
            .await?
            .map_err(|e| Fail::Bad(format!("keys answered {e}")))?;
        for row in page["keys"].as_array().into_iter().flatten() {
            let key = row["key"].as_str().unwrap_or_default().to_string();
            out.push((key, row["rev"].as_u64().unwrap_or(0)));
        }
        match &page["next"] {
            Value::String(s) => after = json!(s),
            _ => return Ok(out),
        }
    }
    Err(Fail::Bad(format!("keys under {prefix} did not end")))
}

/// Deletes what an earlier run left under the known prefix, then writes the
/// known keys (`if_rev: 0`: each must be created by this write).
async fn write_known(control: &mut Conn, tally: &Tally) -> anyhow::Result<Vec<KnownKey>> {
    let stale = list_keys(control, KNOWN_PREFIX, tally)
        .await
        .map_err(|f| anyhow::anyhow!("listing {KNOWN_PREFIX}*: {f}"))?;
    for chunk in stale.chunks(100) {
        let items: Vec<_> = chunk
            .iter()
            .map(|(k, _)| control.request("delete", json!({ "key": k })))
            .collect();
        batch(control, &items, tally)
            .await
            .map_err(|f| anyhow::anyhow!("deleting stale known keys: {f}"))?;
    }
    let mut known = Vec::with_capacity(KNOWN_KEYS);
    let numbers: Vec<usize> = (0..KNOWN_KEYS).collect();
    for chunk in numbers.chunks(100) {
        let items: Vec<_> = chunk
            .iter()
            .map(|&n| {
                control.request(
                    "update",
                    json!({"key": format!("{KNOWN_PREFIX}{n}"), "value": known_value(n), "if_rev": 0}),
                )
            })
            .collect();
        let answers = batch(control, &items, tally)
            .await
            .map_err(|f| anyhow::anyhow!("writing the known keys: {f}"))?;
        for (&n, a) in chunk.iter().zip(answers) {
            let r = a.map_err(|e| anyhow::anyhow!("writing {KNOWN_PREFIX}{n}: {e}"))?;
            let Some(rev) = r["rev"].as_u64() else {
                bail!("writing {KNOWN_PREFIX}{n}: no rev in {r}");
            };
            known.push(KnownKey {
                key: format!("{KNOWN_PREFIX}{n}"),
                value: known_value(n),
                rev,
            });
        }
    }
    Ok(known)
}

/// Lists and reads the known keys; returns how many are intact and what is
/// wrong (at most 20 problems described, plus a count of the rest).
async fn verify_known(
    control: &mut Conn,
    known: &[KnownKey],
    tally: &Tally,
) -> Result<(u64, Vec<String>), Fail> {
    let mut problems = Vec::new();
    let mut more = 0u64;
    let mut note = |p: String| {
        if problems.len() < 20 {
            problems.push(p);
        } else {
            more += 1;
        }
    };
    let listed: HashMap<String, u64> = list_keys(control, KNOWN_PREFIX, tally)
        .await?
        .into_iter()
        .collect();
    if listed.len() != known.len() {
        note(format!(
            "keys lists {} keys under {KNOWN_PREFIX}, {} were written",
            listed.len(),
            known.len()
        ));
    }
    let mut intact = 0u64;
    for chunk in known.chunks(100) {
        let items: Vec<_> = chunk
            .iter()
            .map(|k| control.request("get", json!({ "key": k.key })))
            .collect();
        let answers = batch(control, &items, tally).await?;
        for (k, a) in chunk.iter().zip(answers) {
            let mut ok = true;
            match listed.get(&k.key) {
                None => {
                    ok = false;
                    note(format!("{} is not listed by keys", k.key));
                }
                Some(&rev) if rev != k.rev => {
                    ok = false;
                    note(format!(
                        "keys lists {} at rev {rev}, written at {}",
                        k.key, k.rev
                    ));
                }
                Some(_) => {}
            }
            match a {
                Ok(r) if r == json!({"value": k.value, "rev": k.rev}) => {}
                Ok(r) => {
                    ok = false;
                    note(format!(
                        "{} holds {} (written: rev {}, {})",
                        k.key,
                        clip(&r.to_string()),
                        k.rev,
                        k.value
                    ));
                }
                Err(e) => {
                    ok = false;
                    note(format!("get {} answered {e}", k.key));
                }
            }
            if ok {
                intact += 1;
            }
        }
    }
    for key in listed.keys() {
        if !known.iter().any(|k| &k.key == key) {
            note(format!("{key} appeared under the known prefix"));
        }
    }
    if more > 0 {
        problems.push(format!("and {more} more problems"));
    }
    Ok((intact, problems))
}

// ---------------------------------------------------------------------------
// Valid clients
// ---------------------------------------------------------------------------

/// What an outstanding request was.
enum Kind {
    Get,
    KnownGet(usize),
    Update,
    Incr,
    Patch,
    Merge,
    Delete,
    Memoize,
    IsMemoized,
    Keys,
    Stats,
    /// A batch of `get`, `incr` and `version`.
    Batch,
    Subscribe(String),
    Unsubscribe(u64),
}

struct Pending {
    id: u64,
    kind: Kind,
    sent: Instant,
}

/// A subscription of a valid client.
struct SubState {
    key: String,
    /// Rev of the last event (or of the subscribe snapshot).
    last_rev: u64,
}

/// The subscriptions of a valid client, and the checks on their events.
#[derive(Default)]
struct Subs {
    live: HashMap<u64, SubState>,
    /// Live subscriptions not being unsubscribed, oldest first.
    order: VecDeque<u64>,
    /// Subscribe requests outstanding.
    pending: usize,
}

impl Subs {
    fn on_event(&mut self, ev: &Value, tally: &Tally) -> Result<(), String> {
        tally.op(Op::Event);
        let p = &ev["params"];
        let (Some(sub), Some(event)) = (p["sub"].as_u64(), p["event"].as_str()) else {
            return Err(format!("a malformed event: {}", clip(&ev.to_string())));
        };
        let Some(state) = self.live.get_mut(&sub) else {
            return Err(format!(
                "an event for sub {sub}, which is not live (never announced, or its \
                 unsubscribe was answered): {}",
                clip(&ev.to_string())
            ));
        };
        if p["key"] != state.key.as_str() {
            return Err(format!(
                "an event of sub {sub} (key {}) for another key: {}",
                state.key,
                clip(&ev.to_string())
            ));
        }
        if event == "lagged" {
            tally.expect(Expect::Lagged);
            return Ok(());
        }
        if !matches!(event, "update" | "delete" | "expire") {
            return Err(format!("an unknown event kind: {}", clip(&ev.to_string())));
        }
        if event == "update" && p.get("value").is_none() {
            return Err(format!(
                "an update event without a value: {}",
                clip(&ev.to_string())
            ));
        }
        let Some(rev) = p["rev"].as_u64() else {
            return Err(format!("an event without a rev: {}", clip(&ev.to_string())));
        };
        if rev <= state.last_rev {
            return Err(format!(
                "sub {sub} ({}): rev {rev} arrived after rev {} (events must come in rev order)",
                state.key, state.last_rev
            ));
        }
        state.last_rev = rev;
        Ok(())
    }
}

/// One valid client: random valid requests, `pipeline` in flight, every
/// answer and event checked, until the deadline; then the outstanding
/// answers are collected and the connection closed politely.
async fn valid_client(ctx: Arc<Ctx>, idx: u64) -> Option<Histogram<u64>> {
    let tally = &ctx.tally;
    let mut hist = new_histogram();
    let mut conn = match Conn::open(&ctx.url).await {
        Ok(c) => c,
        Err(e) => {
            tally.unexpected(format!("valid client {idx}: {e:#}"));
            return Some(hist);
        }
    };
    let mut rng = Rng::new(0xC4A0_5000 + idx);
    let mut subs = Subs::default();
    let mut inflight: VecDeque<Pending> = VecDeque::with_capacity(ctx.pipeline);
    let mut seq = 0u64;
    loop {
        if ctx.running() && inflight.len() < ctx.pipeline {
            seq += 1;
            let (text, kind, next_id) =
                next_request(&ctx, &mut rng, &mut subs, idx, seq, conn.next_id);
            let id = conn.next_id + 1;
            conn.next_id = next_id;
            if let Err(f) = conn.send(Message::text(text)).await {
                tally.unexpected(format!("valid client {idx}: {f}"));
                return Some(hist);
            }
            inflight.push_back(Pending {
                id,
                kind,
                sent: Instant::now(),
            });
            continue;
        }
        if inflight.is_empty() {
            break;
        }
        match conn.next(RESPONSE_TIMEOUT).await {
            Ok(Incoming::Event(ev)) => {
                if let Err(why) = subs.on_event(&ev, tally) {
                    tally.unexpected(format!("valid client {idx}: {why}"));
                }
            }
            Ok(Incoming::Reply(v)) => {
                let Some(p) = inflight.pop_front() else {
                    tally.unexpected(format!(
                        "valid client {idx}: an answer nobody asked for: {}",
                        clip(&v.to_string())
                    ));
                    return Some(hist);
                };
                record_ns(&mut hist, nanos(p.sent.elapsed()));
                if let Err(why) = check_answer(&ctx, &mut subs, p, v) {
                    tally.unexpected(format!("valid client {idx}: {why}"));
                    if why.fatal {
                        return Some(hist);
                    }
                }
            }
            Err(f) => {
                tally.unexpected(format!(
                    "valid client {idx}: {f} ({} requests outstanding)",
                    inflight.len()
                ));
                return Some(hist);
            }
        }
    }
    conn.close().await;
    Some(hist)
}

/// An unexpected answer; `fatal` when the connection cannot go on (its
/// answers no longer match its requests).
struct Wrong {
    what: String,
    fatal: bool,
}

impl fmt::Display for Wrong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

fn wrong(what: String) -> Wrong {
    Wrong { what, fatal: false }
}

/// The text of the next valid request, its kind, and the connection's next
/// id after it (`id` is the last id used).
fn next_request(
    ctx: &Ctx,
    rng: &mut Rng,
    subs: &mut Subs,
    idx: u64,
    seq: u64,
    id: u64,
) -> (String, Kind, u64) {
    let k = rng.below(TRAFFIC_KEYS);
    let t = format!("chaos:t:{k}");
    let n = format!("chaos:n:{k}");
    let value = || json!({"c": idx, "s": seq, "pad": ctx.pad});
    let req = |method: &str, params: Value| {
        json!({"jsonrpc": "2.0", "id": id + 1, "method": method, "params": params}).to_string()
    };
    let roll = rng.below(100);
    let (text, kind) = match roll {
        0..=19 | 95..=99 => (req("get", json!({ "key": t })), Kind::Get),
        20..=24 => {
            let i = rng.below(ctx.known.len() as u64) as usize;
            (
                req("get", json!({ "key": ctx.known[i].key })),
                Kind::KnownGet(i),
            )
        }
        25..=39 => {
            let params = if rng.below(8) == 0 {
                json!({"key": t, "value": value(), "ttl_ms": 20 + rng.below(480)})
            } else {
                json!({"key": t, "value": value()})
            };
            (req("update", params), Kind::Update)
        }
        40..=54 => (req("incr", json!({"key": n, "by": 1})), Kind::Incr),
        55..=62 => (
            req(
                "patch",
                json!({"key": t, "ops": [{"op": "add", "path": "/p", "value": seq}]}),
            ),
            Kind::Patch,
        ),
        63..=67 => (
            req(
                "merge",
                json!({"key": t, "value": {"m": seq, "gone": null}}),
            ),
            Kind::Merge,
        ),
        68..=70 => (req("delete", json!({ "key": t })), Kind::Delete),
        71..=73 => (
            req("memoize", json!({"key": t, "value": value()})),
            Kind::Memoize,
        ),
        74..=75 => (req("is_memoized", json!({ "key": t })), Kind::IsMemoized),
        76..=77 => (
            req("keys", json!({"prefix": "chaos:t:", "limit": 20})),
            Kind::Keys,
        ),
        78..=82 => {
            let item = |i: u64, method: &str, params: Value| {
                json!({"jsonrpc": "2.0", "id": id + i, "method": method, "params": params})
                    .to_string()
            };
            let text = format!(
                "[{},{},{}]",
                item(1, "get", json!({ "key": t })),
                item(2, "incr", json!({ "key": n })),
                item(3, "version", Value::Null)
            );
            return (text, Kind::Batch, id + 3);
        }
        83..=92 => {
            if subs.order.len() + subs.pending >= MAX_SUBS {
                match subs.order.pop_front() {
                    Some(sub) => (
                        req("unsubscribe", json!({ "sub": sub })),
                        Kind::Unsubscribe(sub),
                    ),
                    None => (req("get", json!({ "key": t })), Kind::Get),
                }
            } else {
                let key = if rng.below(4) == 0 { n } else { t };
                subs.pending += 1;
                (
                    req("subscribe", json!({ "key": key })),
                    Kind::Subscribe(key),
                )
            }
        }
        _ => (req("stats", Value::Null), Kind::Stats),
    };
    (text, kind, id + 1)
}

/// Checks the answer `v` to `p` and counts it.
fn check_answer(ctx: &Ctx, subs: &mut Subs, p: Pending, v: Value) -> Result<(), Wrong> {
    let tally = &ctx.tally;
    if let Kind::Batch = p.kind {
        tally.op(Op::Batch);
        let Value::Array(items) = v else {
            return Err(Wrong {
                what: format!("a batch answered by {}", clip(&v.to_string())),
                fatal: true,
            });
        };
        if items.len() != 3 {
            return Err(wrong(format!(
                "a batch of 3 answered with {} entries",
                items.len()
            )));
        }
        for (i, a) in items.into_iter().enumerate() {
            let answer = answer_of(a, p.id + i as u64).map_err(|f| Wrong {
                what: format!("batch: {f}"),
                fatal: true,
            })?;
            match (i, answer) {
                (0, Err(e)) if e.code == -32001 => tally.expect(Expect::NotFound),
                (_, Ok(_)) => {}
                (_, Err(e)) => return Err(wrong(format!("batch entry {i} answered {e}"))),
            }
        }
        return Ok(());
    }
    let answer = answer_of(v, p.id).map_err(|f| Wrong {
        what: f.to_string(),
        fatal: true,
    })?;
    let (op, may_be_absent) = match &p.kind {
        Kind::Get => (Op::Get, true),
        Kind::KnownGet(_) => (Op::KnownGet, false),
        Kind::Update => (Op::Update, false),
        Kind::Incr => (Op::Incr, false),
        Kind::Patch => (Op::Patch, true),
        Kind::Merge => (Op::Merge, false),
        Kind::Delete => (Op::Delete, true),
        Kind::Memoize => (Op::Memoize, false),
        Kind::IsMemoized => (Op::IsMemoized, false),
        Kind::Keys => (Op::Keys, false),
        Kind::Stats => (Op::Stats, false),
        Kind::Subscribe(_) => (Op::Subscribe, false),
        Kind::Unsubscribe(_) => (Op::Unsubscribe, false),
        Kind::Batch => (Op::Batch, false),
    };
    tally.op(op);
    if let Kind::Subscribe(_) = p.kind {
        subs.pending = subs.pending.saturating_sub(1);
    }
    let r = match answer {
        Ok(r) => r,
        Err(e) if may_be_absent && e.code == -32001 => {
            tally.expect(Expect::NotFound);
            return Ok(());
        }
        Err(e) => return Err(wrong(format!("{} answered {e}", op.name()))),
    };
    let bad = |what: &str| {
        Err(wrong(format!(
            "{} answered {what}: {}",
            op.name(),
            clip(&r.to_string())
        )))
    };
    match p.kind {
        Kind::KnownGet(i) => {
            let k = &ctx.known[i];
            if r != json!({"value": k.value, "rev": k.rev}) {
                tally.known_changed.store(true, Ordering::Relaxed);
                return Err(wrong(format!(
                    "known key {} changed during the run: {} (written: rev {})",
                    k.key,
                    clip(&r.to_string()),
                    k.rev
                )));
            }
        }
        Kind::Get | Kind::Patch => {
            if !r["value"].is_object() || r["rev"].as_u64().is_none() {
                return bad("something else than an object value and a rev");
            }
        }
        Kind::Update | Kind::Delete => {
            if r["rev"].as_u64().is_none() {
                return bad("no rev");
            }
        }
        Kind::Incr => {
            if r["value"].as_i64().is_none_or(|n| n < 1) {
                return bad("something else than a positive integer");
            }
        }
        Kind::Merge | Kind::Memoize => {
            if !r["value"].is_object() {
                return bad("something else than an object");
            }
        }
        Kind::IsMemoized => {
            if !r.is_boolean() {
                return bad("something else than a boolean");
            }
        }
        Kind::Keys => {
            if !r["keys"].is_array() {
                return bad("no keys");
            }
        }
        Kind::Stats => {
            if r["connections"].as_u64().is_none() {
                return bad("no connections");
            }
        }
        Kind::Subscribe(key) => {
            let Some(sub) = r["sub"].as_u64() else {
                return bad("no sub");
            };
            if subs.live.contains_key(&sub) {
                return bad("a sub id already in use");
            }
            let last_rev = if r["exists"] == true {
                r["rev"].as_u64().unwrap_or(0)
            } else {
                0
            };
            subs.live.insert(sub, SubState { key, last_rev });
            subs.order.push_back(sub);
        }
        Kind::Unsubscribe(sub) => {
            if r != true {
                return bad("something else than true");
            }
            subs.live.remove(&sub);
        }
        Kind::Batch => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Disconnects and storms
// ---------------------------------------------------------------------------

/// Connections that end abruptly: reset with requests unanswered, reset in
/// the middle of a frame, reset while a prefix subscription streams, dropped
/// without a close handshake.
async fn disconnector(ctx: Arc<Ctx>, idx: u64) {
    let tally = &ctx.tally;
    let mut rng = Rng::new(0xD15C_0000 + idx);
    while ctx.running() {
        let mut conn = match Conn::open(&ctx.url).await {
            Ok(c) => c,
            Err(e) => {
                tally.unexpected(format!("disconnector: {e:#}"));
                sleep_ms(100).await;
                continue;
            }
        };
        match rng.below(4) {
            0 => {
                for _ in 0..=rng.below(16) {
                    let k = rng.below(TRAFFIC_KEYS);
                    let (_, text) = if rng.below(2) == 0 {
                        conn.request(
                            "update",
                            json!({"key": format!("chaos:t:{k}"), "value": {"r": k}}),
                        )
                    } else {
                        conn.request("get", json!({"key": format!("chaos:t:{k}")}))
                    };
                    if conn.ws.feed(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                let _ = conn.ws.flush().await;
                conn.reset();
                tally.op(Op::ResetMidRequest);
            }
            1 => {
                // A masked text frame header announcing `len` bytes, then
                // only part of them.
                let len = 10 + rng.below(1 << 20);
                let mut raw = frame_header(0x1, true, len as usize);
                raw.extend(std::iter::repeat_n(b'a', (len / 2).min(4096) as usize));
                if let MaybeTlsStream::Plain(s) = conn.ws.get_mut() {
                    let _ = s.write_all(&raw).await;
                }
                conn.reset();
                tally.op(Op::ResetMidFrame);
            }
            2 => {
                let key = format!("chaos:t:{}", rng.below(TRAFFIC_KEYS));
                for params in [json!({"prefix": "chaos:"}), json!({ "key": key })] {
                    match conn
                        .call("subscribe", params, tally, RESPONSE_TIMEOUT)
                        .await
                    {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tally.unexpected(format!("disconnector: subscribe answered {e}"))
                        }
                        Err(f) => tally.unexpected(format!("disconnector: subscribe: {f}")),
                    }
                }
                // Take some events, leave the rest queued.
                let until = Instant::now() + Duration::from_millis(rng.below(100));
                while Instant::now() < until {
                    match conn.next(Duration::from_millis(20)).await {
                        Ok(Incoming::Event(ev)) => tally.event(&ev),
                        Ok(Incoming::Reply(_)) | Err(Fail::Timeout(_)) => {}
                        Err(f) => {
                            tally.unexpected(format!("disconnector: while subscribed: {f}"));
                            break;
                        }
                    }
                }
                conn.reset();
                tally.op(Op::ResetMidSubscription);
            }
            _ => {
                for _ in 0..=rng.below(4) {
                    let (_, text) = conn.request(
                        "incr",
                        json!({"key": format!("chaos:n:{}", rng.below(TRAFFIC_KEYS))}),
                    );
                    if conn.ws.feed(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                let _ = conn.ws.flush().await;
                drop(conn);
                tally.op(Op::DropWithoutClose);
            }
        }
        sleep_ms(2 + rng.below(8)).await;
    }
}

/// Bursts of 16 to 64 connections opened at once; each asks `version` and
/// closes politely, is dropped, or is reset.
async fn storm(ctx: Arc<Ctx>) {
    let mut rng = Rng::new(0x5708_0000);
    while ctx.running() {
        let n = 16 + rng.below(49);
        let mut set = JoinSet::new();
        for i in 0..n {
            let ctx = ctx.clone();
            set.spawn(async move {
                let tally = &ctx.tally;
                let mut conn = match Conn::open(&ctx.url).await {
                    Ok(c) => c,
                    Err(e) => {
                        tally.unexpected(format!("storm: {e:#}"));
                        return;
                    }
                };
                tally.op(Op::StormConnection);
                match i % 4 {
                    0 | 1 => {
                        match conn
                            .call("version", Value::Null, tally, RESPONSE_TIMEOUT)
                            .await
                        {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => tally.unexpected(format!("storm: version answered {e}")),
                            Err(f) => tally.unexpected(format!("storm: version: {f}")),
                        }
                        conn.close().await;
                    }
                    2 => drop(conn),
                    _ => conn.reset(),
                }
            });
        }
        while let Some(r) = set.join_next().await {
            if let Err(e) = r {
                ctx.tally
                    .unexpected(format!("storm: a connection task failed: {e}"));
            }
        }
        sleep_ms(50 + rng.below(100)).await;
    }
}

// ---------------------------------------------------------------------------
// Oversized messages
// ---------------------------------------------------------------------------

/// An update request of `max + 1 MiB` bytes (ASCII).
fn oversized_text(max: usize) -> Bytes {
    let total = max + (1 << 20);
    let head = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"key\":\"chaos:t:0\",\"value\":\"";
    let tail = "\"}}";
    let mut s = String::with_capacity(total);
    s.push_str(head);
    s.extend(std::iter::repeat_n('x', total - head.len() - tail.len()));
    s.push_str(tail);
    Bytes::from(s)
}

/// The header of a client frame: masked with the key 0, so that the
/// payload goes out as it is, straight from the shared buffer.
fn frame_header(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
    let mut h = vec![if fin { 0x80 | opcode } else { opcode }];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len < 65536 {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&(len as u64).to_be_bytes());
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// Writes `frames` (header, payload) straight to the socket, in pieces,
/// without copying the payloads; stops at the first error (the hub may reset
/// the connection once it has seen enough).
async fn write_raw(ws: &mut Ws, frames: &[(Vec<u8>, Bytes)]) {
    let MaybeTlsStream::Plain(s) = ws.get_mut() else {
        return;
    };
    for (header, payload) in frames {
        if s.write_all(header).await.is_err() {
            return;
        }
        for piece in payload.chunks(WRITE_PIECE) {
            if s.write_all(piece).await.is_err() {
                return;
            }
        }
    }
}

/// One oversized message at a time; each must be answered by close 1009.
/// The message is written straight to the socket (see [`write_raw`]), then
/// the close frame read.
async fn oversizer(ctx: Arc<Ctx>) {
    let tally = &ctx.tally;
    let mut i = 0u64;
    while ctx.running() {
        i += 1;
        let mut conn = match Conn::open(&ctx.url).await {
            Ok(c) => c,
            Err(e) => {
                tally.unexpected(format!("oversized: {e:#}"));
                sleep_ms(100).await;
                continue;
            }
        };
        let big = &ctx.big;
        let (op, kind, frames) = match i % 3 {
            0 => (
                Op::OversizedText,
                "text",
                vec![(frame_header(0x1, true, big.len()), big.clone())],
            ),
            1 => (
                Op::OversizedBinary,
                "binary",
                vec![(frame_header(0x2, true, big.len()), big.clone())],
            ),
            _ => {
                let parts = big.len().div_ceil(ctx.chunk);
                let frames = (0..parts)
                    .map(|p| {
                        let part = big.slice(p * ctx.chunk..((p + 1) * ctx.chunk).min(big.len()));
                        let opcode = if p == 0 { 0x1 } else { 0x0 };
                        (frame_header(opcode, p + 1 == parts, part.len()), part)
                    })
                    .collect();
                (Op::OversizedFragmented, "fragmented", frames)
            }
        };
        tally.op(op);
        // The hub may give up before everything is written: a write that
        // fails or stalls ends the writing, not the check.
        let _ =
            tokio::time::timeout(Duration::from_secs(10), write_raw(&mut conn.ws, &frames)).await;
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match conn.ws.next().await {
                    Some(Ok(Message::Close(Some(f)))) => return Ok(f.code),
                    Some(Ok(Message::Close(None))) => {
                        return Err("a close frame without a code".to_string())
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("read failed before a close frame: {e}")),
                    None => return Err("the connection ended without a close frame".to_string()),
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(CloseCode::Size)) => tally.expect(Expect::Close1009),
            Ok(Ok(code)) => tally.unexpected(format!(
                "oversized {kind} message: closed with {} instead of 1009",
                u16::from(code)
            )),
            Ok(Err(why)) => tally.unexpected(format!("oversized {kind} message: {why}")),
            Err(_) => tally.unexpected(format!(
                "oversized {kind} message: no close frame within 30 s"
            )),
        }
        drop(conn);
        sleep_ms(150).await;
    }
}

// ---------------------------------------------------------------------------
// Garbage
// ---------------------------------------------------------------------------

/// A garbage message and the error it must get.
struct Garbage {
    op: Op,
    msg: Message,
    code: i64,
    /// The id of the error answer (`null` when the hub cannot know it).
    id: Value,
}

fn garbage(rng: &mut Rng, id: u64) -> Garbage {
    let g = |op: Op, text: String, code: i64, id: Value| Garbage {
        op,
        msg: Message::text(text),
        code,
        id,
    };
    let depth = (DEEP + rng.below(20_000)) as usize;
    match rng.below(16) {
        0 => g(
            Op::GarbageTruncated,
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"get\",\"params\":{{\"key\":\"chaos:t:1\""),
            -32700,
            Value::Null,
        ),
        1 => {
            let len = 1 + rng.below(200);
            let junk: String = std::iter::once('}')
                .chain((0..len).map(|_| char::from(b' ' + rng.below(95) as u8)))
                .collect();
            g(Op::GarbageJunk, junk, -32700, Value::Null)
        }
        2 => {
            let len = rng.below(2000) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            Garbage {
                op: Op::GarbageBinary,
                msg: Message::binary(bytes),
                code: -32600,
                id: Value::Null,
            }
        }
        3 => Garbage {
            op: Op::GarbageBinary,
            msg: Message::binary(format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"version\"}}").into_bytes()),
            code: -32600,
            id: Value::Null,
        },
        4 => {
            let text = if rng.below(2) == 0 {
                format!("{}{}", "[".repeat(depth), "]".repeat(depth))
            } else {
                format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
            };
            g(Op::GarbageDeepArrays, text, -32700, Value::Null)
        }
        5 => g(
            Op::GarbageDeepValue,
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"update\",\"params\":{{\"key\":\"chaos:t:0\",\"value\":{}{}}}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            ),
            -32700,
            Value::Null,
        ),
        6 => g(Op::GarbageUnclosed, "[".repeat(depth * 4), -32700, Value::Null),
        7 => {
            let text = match rng.below(3) {
                0 => "42",
                1 => "\"a string\"",
                _ => "null",
            };
            g(Op::GarbageNotObject, text.to_string(), -32600, Value::Null)
        }
        8 => g(
            Op::GarbageBadVersion,
            format!("{{\"jsonrpc\":\"1.0\",\"id\":{id},\"method\":\"version\"}}"),
            -32600,
            json!(id),
        ),
        9 => g(
            Op::GarbageBadId,
            "{\"jsonrpc\":\"2.0\",\"id\":{\"x\":[1]},\"method\":\"version\"}".to_string(),
            -32600,
            Value::Null,
        ),
        10 => g(
            Op::GarbageBadParams,
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"get\",\"params\":\"chaos:t:1\"}}"),
            -32600,
            json!(id),
        ),
        11 => g(
            Op::GarbagePositional,
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"update\",\"params\":[\"chaos:t:1\",1]}}"),
            -32602,
            json!(id),
        ),
        12 => g(
            Op::GarbageUnknownMethod,
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"frobnicate\",\"params\":{{}}}}"),
            -32601,
            json!(id),
        ),
        13 => {
            let key = match rng.below(3) {
                0 => "\"\"".to_string(),
                1 => "42".to_string(),
                _ => "null".to_string(),
            };
            g(
                Op::GarbageBadKey,
                format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"update\",\"params\":{{\"key\":{key},\"value\":1}}}}"),
                -32602,
                json!(id),
            )
        }
        14 => g(
            Op::GarbageMissingValue,
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"update\",\"params\":{{\"key\":\"chaos:t:2\"}}}}"),
            -32602,
            json!(id),
        ),
        _ => g(Op::GarbageEmptyBatch, "[]".to_string(), -32600, Value::Null),
    }
}

/// A live connection that sends garbage; each must get its error, and the
/// connection must stay usable. The odd ones also watch a prefix, so events
/// interleave with the errors.
async fn garbage_client(ctx: Arc<Ctx>, idx: u64) {
    let tally = &ctx.tally;
    let mut rng = Rng::new(0x6A2B_0000 + idx);
    let mut conn = match Conn::open(&ctx.url).await {
        Ok(c) => c,
        Err(e) => {
            tally.unexpected(format!("garbage client {idx}: {e:#}"));
            return;
        }
    };
    if idx % 2 == 1 {
        match conn
            .call(
                "subscribe",
                json!({"prefix": "chaos:n:"}),
                tally,
                RESPONSE_TIMEOUT,
            )
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tally.unexpected(format!("garbage client {idx}: subscribe answered {e}")),
            Err(f) => {
                tally.unexpected(format!("garbage client {idx}: subscribe: {f}"));
                return;
            }
        }
    }
    let mut i = 0u64;
    while ctx.running() {
        i += 1;
        if i % 8 == 0 {
            // Still usable, and the data is intact.
            let k = &ctx.known[rng.below(ctx.known.len() as u64) as usize];
            match conn
                .call("get", json!({ "key": k.key }), tally, RESPONSE_TIMEOUT)
                .await
            {
                Ok(Ok(r)) if r == json!({"value": k.value, "rev": k.rev}) => tally.op(Op::KnownGet),
                Ok(Ok(r)) => {
                    tally.known_changed.store(true, Ordering::Relaxed);
                    tally.unexpected(format!(
                        "garbage client {idx}: known key {} changed: {}",
                        k.key,
                        clip(&r.to_string())
                    ));
                }
                Ok(Err(e)) => {
                    tally.unexpected(format!("garbage client {idx}: get {} answered {e}", k.key))
                }
                Err(f) => {
                    tally.unexpected(format!(
                        "garbage client {idx}: a connection that got garbage died: {f}"
                    ));
                    return;
                }
            }
            continue;
        }
        if i % 29 == 0 {
            // A batch mixing a non-object, a valid request and bad params.
            let id = conn.next_id + 1;
            conn.next_id += 2;
            let text = format!(
                "[1,{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"version\"}},{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"get\",\"params\":{{\"key\":\"\"}}}}]",
                id + 1
            );
            tally.op(Op::GarbageMixedBatch);
            if let Err(f) = conn.send(Message::text(text)).await {
                tally.unexpected(format!("garbage client {idx}: {f}"));
                return;
            }
            match conn
                .reply(RESPONSE_TIMEOUT, &mut |ev| tally.event(&ev))
                .await
            {
                Ok(Value::Array(items)) if items.len() == 3 => {
                    let codes: Vec<Value> =
                        items.iter().map(|a| a["error"]["code"].clone()).collect();
                    let ok = items[0]["id"].is_null()
                        && codes[0] == -32600
                        && items[1]["id"] == id
                        && items[1].get("result").is_some()
                        && items[2]["id"] == id + 1
                        && codes[2] == -32602;
                    if ok {
                        tally.expect(Expect::InvalidRequest);
                        tally.expect(Expect::InvalidParams);
                    } else {
                        tally.unexpected(format!(
                            "garbage client {idx}: a mixed batch answered {}",
                            clip(&Value::Array(items).to_string())
                        ));
                    }
                }
                Ok(v) => tally.unexpected(format!(
                    "garbage client {idx}: a mixed batch answered {}",
                    clip(&v.to_string())
                )),
                Err(f) => {
                    tally.unexpected(format!(
                        "garbage client {idx}: a connection that got garbage died: {f}"
                    ));
                    return;
                }
            }
            continue;
        }
        let g = garbage(&mut rng, conn.next_id + 1);
        conn.next_id += 1;
        tally.op(g.op);
        if let Err(f) = conn.send(g.msg).await {
            tally.unexpected(format!("garbage client {idx}: {f}"));
            return;
        }
        match conn
            .reply(RESPONSE_TIMEOUT, &mut |ev| tally.event(&ev))
            .await
        {
            Ok(v)
                if v["error"]["code"] == g.code && v["id"] == g.id && v.get("result").is_none() =>
            {
                if let Some(e) = Expect::of_code(g.code) {
                    tally.expect(e);
                }
            }
            Ok(v) => tally.unexpected(format!(
                "garbage client {idx}: {} should get error {} with id {}, got {}",
                g.op.name(),
                g.code,
                g.id,
                clip(&v.to_string())
            )),
            Err(f) => {
                tally.unexpected(format!(
                    "garbage client {idx}: the connection died after {}: {f}",
                    g.op.name()
                ));
                return;
            }
        }
    }
    conn.close().await;
}

// ---------------------------------------------------------------------------
// Locks
// ---------------------------------------------------------------------------

/// How a lock holder lets go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LetGo {
    Unlock,
    Reset,
    Drop,
}

/// Lock holders and waiters that vanish; on a lock of its own, so that
/// every hand-over is certain: the waiter must get the lock within
/// `LOCK_WAIT_MS` whatever the holder did. Every fifth round contends for a
/// shared lock with a short lease instead.
async fn locker(ctx: Arc<Ctx>, idx: u64) {
    let tally = &ctx.tally;
    let name = format!("chaos:lock:{idx}");
    let mut rng = Rng::new(0x10C4_0000 + idx);
    let mut round = 0u64;
    while ctx.running() {
        round += 1;
        let result = if round % 5 == 0 {
            shared_lock(&ctx, &mut rng).await
        } else {
            hand_over(&ctx, &name, &mut rng, round).await
        };
        if let Err(why) = result {
            tally.unexpected(format!("locker {idx}: {why}"));
            sleep_ms(100).await;
        }
        sleep_ms(1 + rng.below(5)).await;
    }
}

/// Takes `name` waiting up to `LOCK_WAIT_MS` (the previous holder may be
/// vanishing); returns the token.
async fn take_lock(
    conn: &mut Conn,
    name: &str,
    tally: &Tally,
    why: &str,
) -> Result<String, String> {
    let wait = Duration::from_millis(LOCK_WAIT_MS) + RESPONSE_TIMEOUT;
    match conn
        .call(
            "lock",
            json!({"name": name, "wait_ms": LOCK_WAIT_MS}),
            tally,
            wait,
        )
        .await
    {
        Ok(Ok(r)) => {
            tally.op(Op::Lock);
            match r["token"].as_str() {
                Some(t) => Ok(t.to_string()),
                None => Err(format!("lock {name} answered without a token: {r}")),
            }
        }
        Ok(Err(e)) => Err(format!("lock {name} {why}: {e}")),
        Err(f) => Err(format!("lock {name} {why}: {f}")),
    }
}

async fn unlock(conn: &mut Conn, name: &str, token: &str, tally: &Tally) -> Result<(), String> {
    match conn
        .call(
            "unlock",
            json!({"name": name, "token": token}),
            tally,
            RESPONSE_TIMEOUT,
        )
        .await
    {
        Ok(Ok(r)) if r == true => {
            tally.op(Op::Unlock);
            Ok(())
        }
        Ok(Ok(r)) => Err(format!("unlock {name} answered {r}")),
        Ok(Err(e)) => Err(format!("unlock {name} by its holder answered {e}")),
        Err(f) => Err(format!("unlock {name}: {f}")),
    }
}

async fn open_or(ctx: &Ctx, who: &str) -> Result<Conn, String> {
    Conn::open(&ctx.url)
        .await
        .map_err(|e| format!("{who}: {e:#}"))
}

/// A holds the lock, B waits for it; then A unlocks, is reset or dropped
/// (B must get the lock), or B is reset while waiting (after A unlocks, C
/// must get it).
async fn hand_over(ctx: &Ctx, name: &str, rng: &mut Rng, round: u64) -> Result<(), String> {
    let tally = &ctx.tally;
    let mut a = open_or(ctx, "holder").await?;
    let token_a = take_lock(&mut a, name, tally, "(after the previous holder let go)").await?;
    let mut b = open_or(ctx, "waiter").await?;
    let (b_id, text) = b.request("lock", json!({"name": name, "wait_ms": LOCK_WAIT_MS}));
    b.send(Message::text(text))
        .await
        .map_err(|f| format!("waiter: {f}"))?;
    sleep_ms(rng.below(4)).await;
    let how = match rng.below(4) {
        0 => LetGo::Unlock,
        1 => LetGo::Reset,
        2 => LetGo::Drop,
        _ => {
            // The waiter vanishes; the holder unlocks; a third party must
            // get the lock (at once, or once the hub has noticed B is gone).
            b.reset();
            tally.op(Op::WaiterVanished);
            unlock(&mut a, name, &token_a, tally).await?;
            a.close().await;
            let mut c = open_or(ctx, "third party").await?;
            take_lock(&mut c, name, tally, "after its waiter vanished").await?;
            c.reset();
            tally.op(Op::HolderVanished);
            return Ok(());
        }
    };
    match how {
        LetGo::Unlock => {
            unlock(&mut a, name, &token_a, tally).await?;
            a.close().await;
        }
        LetGo::Reset => {
            a.reset();
            tally.op(Op::HolderVanished);
        }
        LetGo::Drop => {
            drop(a);
            tally.op(Op::HolderVanished);
        }
    }
    let wait = Duration::from_millis(LOCK_WAIT_MS) + RESPONSE_TIMEOUT;
    let v = b
        .reply(wait, &mut |ev| tally.event(&ev))
        .await
        .map_err(|f| format!("waiter for {name}: {f}"))?;
    let token_b = match answer_of(v, b_id).map_err(|f| format!("waiter for {name}: {f}"))? {
        Ok(r) => {
            tally.op(Op::Lock);
            r["token"].as_str().unwrap_or_default().to_string()
        }
        Err(e) => {
            let what = match how {
                LetGo::Unlock => "unlocked",
                LetGo::Reset => "was reset",
                LetGo::Drop => "dropped its connection",
            };
            return Err(format!(
                "lock {name} did not pass to its waiter within {LOCK_WAIT_MS} ms after the holder {what}: {e}"
            ));
        }
    };
    if round % 2 == 0 {
        unlock(&mut b, name, &token_b, tally).await?;
        b.close().await;
    } else {
        b.reset();
        tally.op(Op::HolderVanished);
    }
    Ok(())
}

/// Contends for a shared lock with a short lease: busy is a fine answer;
/// once held, `unlock` after the lease ran out must answer -32004.
async fn shared_lock(ctx: &Ctx, rng: &mut Rng) -> Result<(), String> {
    let tally = &ctx.tally;
    let name = "chaos:lock:shared";
    let mut a = open_or(ctx, "shared lock").await?;
    let r = a
        .call(
            "lock",
            json!({"name": name, "ttl_ms": LEASE_MS}),
            tally,
            RESPONSE_TIMEOUT,
        )
        .await
        .map_err(|f| format!("lock {name}: {f}"))?;
    match r {
        Ok(r) => {
            tally.op(Op::Lock);
            let token = r["token"].as_str().unwrap_or_default().to_string();
            sleep_ms(UNLOCK_AFTER_MS).await;
            match a
                .call(
                    "unlock",
                    json!({"name": name, "token": token}),
                    tally,
                    RESPONSE_TIMEOUT,
                )
                .await
            {
                Ok(Err(e)) if e.code == -32004 => {
                    tally.op(Op::LeaseRanOut);
                    tally.expect(Expect::LockNotHeld);
                }
                Ok(other) => {
                    return Err(format!(
                    "unlock {name} {UNLOCK_AFTER_MS} ms after a {LEASE_MS} ms lease answered {:?}",
                    other.map_err(|e| e.to_string())
                ))
                }
                Err(f) => return Err(format!("unlock {name}: {f}")),
            }
        }
        Err(e) if e.code == -32003 => {
            tally.op(Op::Lock);
            tally.expect(Expect::LockBusy);
        }
        Err(e) => return Err(format!("lock {name} answered {e}")),
    }
    if rng.below(2) == 0 {
        a.reset();
    } else {
        a.close().await;
    }
    Ok(())
}
