//! `fanout` and `prefix-fanout`: one publisher, many subscribers.
//!
//! `--subscribers M` connections subscribe to the key `bench:fanout` (or, in
//! `prefix-fanout`, to the prefix `bench:prefix:`), then one publisher
//! connection updates that key (or cycles over the keys `bench:prefix:0` ..
//! `bench:prefix:15`) in a closed loop on its own responses, `--pipeline`
//! updates in flight. Each value is an object
//! `{"bench_t":T,"bench_seq":S,"pad":"xx…"}`: `T` is the send time in
//! nanoseconds since the start of the run (one clock, one process), `S` counts
//! the updates of this run from 0, and the pad has `--value-size` characters.
//!
//! Each subscriber checks that the sequence numbers arrive consecutively; a
//! gap or a `lagged` event is a missed event. The publisher never runs more
//! than [`WINDOW`] updates ahead of the slowest subscriber, so the hub's
//! outbound queues stay below their limit while the hub keeps up: the
//! delivery rate measured is what the hub sustains without dropping anything.
//! Subscribers record publish → delivery latency for updates sent after the
//! warmup; deliveries per second are over the publisher's measured period.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use memchr::memmem::Finder;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::Message;

use super::progress::{rate_line, Progress};
use super::report::{rate, FanoutReport, Latency, Report};
use super::{
    ask_all, classify, measured_seconds, new_histogram, open, open_many, record_ns, BenchConfig,
    ClientOutcome, Counter, Mode, Plan, Reply, Ws, RESPONSE_TIMEOUT,
};

/// The key of `fanout`.
pub const KEY: &str = "bench:fanout";
/// The prefix of `prefix-fanout`.
pub const PREFIX: &str = "bench:prefix:";
/// How many keys under [`PREFIX`] the publisher cycles over.
pub const PREFIX_KEYS: u64 = 16;
/// Most updates the publisher may be ahead of the slowest subscriber (well
/// below the hub's default outbound queue of 1024 events).
pub const WINDOW: u64 = 256;
/// How long subscribers may take, after the publisher stopped, to receive
/// the last update before the missing ones count as missed.
pub(super) const DRAIN: Duration = Duration::from_secs(5);
pub(super) const HIST_SHARDS: usize = 16;

/// A subscriber's progress: the next sequence number it expects
/// (`u64::MAX` once it is gone). Padded against false sharing.
#[derive(Default)]
#[repr(align(64))]
struct Slot(AtomicU64);

/// What the publisher and the subscribers share.
pub(super) struct Shared {
    pub(super) plan: Arc<Plan>,
    slots: Vec<Slot>,
    /// The publisher waits until every subscriber expects at least this
    /// (`u64::MAX` while it is not waiting).
    pub(super) wake_at: AtomicU64,
    pub(super) notify: Notify,
    pub(super) hists: Vec<Mutex<Histogram<u64>>>,
}

impl Shared {
    fn min_progress(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.0.load(Ordering::SeqCst))
            .min()
            .unwrap_or(u64::MAX)
    }

    pub(super) fn advance(&self, idx: usize, expected: u64) {
        self.slots[idx].0.store(expected, Ordering::SeqCst);
        if expected >= self.wake_at.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }
}

pub(crate) async fn run(cfg: &BenchConfig, url: &str) -> anyhow::Result<Report> {
    let prefix = cfg.mode == Mode::PrefixFanout;
    let subs = open_many(url, cfg.subscribers).await?;
    let subs = subscribe_all(subs, prefix).await?;
    let publisher_ws = open(url).await?;

    let run = Harness::start(cfg);
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .zip(run.sub_live.iter().cloned())
        .enumerate()
        .map(|(i, (ws, live))| {
            tokio::spawn(subscriber(
                ws,
                i,
                run.shared.clone(),
                run.fin_rx.clone(),
                live,
            ))
        })
        .collect();
    let publisher_task = tokio::spawn(publisher(
        publisher_ws,
        run.shared.clone(),
        prefix,
        cfg.value_size,
        cfg.pipeline,
        run.pub_live.clone(),
    ));
    let keyspace = if prefix { PREFIX_KEYS } else { 1 };
    run.finish(cfg, url, cfg.spawn, keyspace, publisher_task, sub_tasks)
        .await
}

/// What a fan-out run keeps around its connections, for memhub (`fanout`,
/// `prefix-fanout`) and for Redis (`redis-fanout`) alike: the plan, what
/// the publisher and the subscribers share, how the subscribers learn the
/// run is over, the live counters and the progress line.
pub(super) struct Harness {
    plan: Arc<Plan>,
    pub(super) shared: Arc<Shared>,
    fin_tx: watch::Sender<Option<u64>>,
    /// Tells each subscriber how many updates went out, once the publisher
    /// is done.
    pub(super) fin_rx: watch::Receiver<Option<u64>>,
    pub(super) pub_live: Arc<Counter>,
    pub(super) sub_live: Vec<Arc<Counter>>,
    progress: Option<Progress>,
}

impl Harness {
    /// The plan and shared state of a run with `cfg.subscribers`
    /// subscribers, and its progress line started.
    pub(super) fn start(cfg: &BenchConfig) -> Self {
        let plan = Arc::new(Plan::new(cfg));
        let shared = Arc::new(Shared {
            plan: plan.clone(),
            slots: (0..cfg.subscribers).map(|_| Slot::default()).collect(),
            wake_at: AtomicU64::new(u64::MAX),
            notify: Notify::new(),
            hists: (0..HIST_SHARDS)
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        });
        let (fin_tx, fin_rx) = watch::channel(None::<u64>);
        let pub_live = Arc::new(Counter::default());
        let sub_live: Vec<Arc<Counter>> = (0..cfg.subscribers).map(|_| Arc::default()).collect();
        let progress = Progress::start(
            cfg.progress,
            rate_line(
                cfg.mode.to_string(),
                plan.clone(),
                vec![pub_live.clone()],
                Some(("deliveries".into(), sub_live.clone())),
            ),
        );
        Self {
            plan,
            shared,
            fin_tx,
            fin_rx,
            pub_live,
            sub_live,
            progress,
        }
    }

    /// Waits for the publisher, tells the subscribers how many updates it
    /// sent, waits for them and reports: what a subscriber did not reach
    /// counts as missed.
    pub(super) async fn finish(
        self,
        cfg: &BenchConfig,
        url: &str,
        spawned: bool,
        keyspace: u64,
        publisher: tokio::task::JoinHandle<(u64, ClientOutcome)>,
        subscribers: Vec<tokio::task::JoinHandle<SubOutcome>>,
    ) -> anyhow::Result<Report> {
        drop(self.fin_rx);
        let (published, publisher_out) = match publisher.await {
            Ok(r) => r,
            Err(e) => {
                let _ = self.fin_tx.send(Some(0));
                bail!("the publisher failed: {e}");
            }
        };
        let _ = self.fin_tx.send(Some(published));

        let subs = sum_subscribers(subscribers, published).await;
        if let Some(p) = self.progress {
            p.finish();
        }
        let delivery_hist = self.shared.delivery_histogram();
        let seconds = measured_seconds(&self.plan, publisher_out.last);
        Ok(Report {
            mode: cfg.mode,
            url: url.to_string(),
            spawned,
            clients: 1,
            pipeline: cfg.pipeline,
            value_size: cfg.value_size,
            keyspace,
            ops: publisher_out.ops,
            seconds,
            ops_per_sec: rate(publisher_out.ops, seconds),
            errors: publisher_out.errors + subs.errors,
            latency_us: Latency::from_nanos(&publisher_out.hist),
            fanout: Some(FanoutReport {
                subscribers: cfg.subscribers,
                deliveries: subs.deliveries,
                deliveries_per_sec: rate(subs.deliveries, seconds),
                latency_us: Latency::from_nanos(&delivery_hist),
                missed: subs.missed > 0 || subs.lagged > 0,
                missed_events: subs.missed,
                lagged: subs.lagged,
            }),
            chaos: None,
            idle: None,
        })
    }
}

/// Subscribes every connection (64 at a time) and waits for the answers, so
/// that no update of the run can be published before a subscription exists.
async fn subscribe_all(conns: Vec<Ws>, prefix: bool) -> anyhow::Result<Vec<Ws>> {
    let request = if prefix {
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"subscribe\",\"params\":{{\"prefix\":\"{PREFIX}\"}}}}"
        )
    } else {
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"subscribe\",\"params\":{{\"key\":\"{KEY}\"}}}}"
        )
    };
    ask_all(conns, "subscribe", request).await
}

/// The publisher: closed loop on its own responses, `pipeline` in flight,
/// never more than [`WINDOW`] ahead of the slowest subscriber. Returns how
/// many updates it sent and what it measured.
async fn publisher(
    mut ws: Ws,
    sh: Arc<Shared>,
    prefix: bool,
    pad: usize,
    pipeline: usize,
    live: Arc<Counter>,
) -> (u64, ClientOutcome) {
    let plan = sh.plan.clone();
    let mut out = ClientOutcome::new();
    let head = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"key\":\"";
    let tail = format!("\"pad\":{}}}}}}}", super::workload::value_json(pad));
    let mut inflight: VecDeque<Instant> = VecDeque::with_capacity(pipeline);
    let mut seq = 0u64;
    let mut min_seen = 0u64;
    let mut blocked = false;
    let mut sending = true;
    let far = Instant::now() + Duration::from_secs(10 * 365 * 86_400);
    let mut deadline = pin!(tokio::time::sleep_until(plan.end.unwrap_or(far).into()));
    'run: loop {
        let mut fed = false;
        while sending && !blocked && inflight.len() < pipeline {
            if sh.must_wait(seq, &mut min_seen) {
                blocked = true;
                break;
            }
            let now = Instant::now();
            if !plan.may_send(now) {
                sending = false;
                break;
            }
            let mut text = String::with_capacity(head.len() + tail.len() + 80);
            text.push_str(head);
            if prefix {
                let _ = write!(text, "{PREFIX}{}", seq % PREFIX_KEYS);
            } else {
                text.push_str(KEY);
            }
            let _ = write!(
                text,
                "\",\"value\":{{\"bench_t\":{},\"bench_seq\":{seq},",
                plan.ns_since_start(now)
            );
            text.push_str(&tail);
            if ws.feed(Message::text(text)).await.is_err() {
                break 'run;
            }
            inflight.push_back(now);
            seq += 1;
            fed = true;
        }
        if fed && ws.flush().await.is_err() {
            break 'run;
        }
        if !sending && inflight.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
            return (seq, out);
        }
        tokio::select! {
            biased;
            m = tokio::time::timeout(RESPONSE_TIMEOUT, ws.next()), if !inflight.is_empty() => {
                match m {
                    Ok(Some(Ok(m))) => {
                        if !on_reply(m, &mut inflight, &plan, &mut out, &live) {
                            break 'run;
                        }
                    }
                    _ => break 'run,
                }
            }
            _ = sh.notify.notified(), if blocked => {
                blocked = false;
                sh.wake_at.store(u64::MAX, Ordering::SeqCst);
            }
            _ = &mut deadline, if sending => {
                sending = false;
            }
            else => break 'run,
        }
        while !inflight.is_empty() {
            match ws.next().now_or_never() {
                None => break,
                Some(Some(Ok(m))) => {
                    if !on_reply(m, &mut inflight, &plan, &mut out, &live) {
                        break 'run;
                    }
                }
                Some(_) => break 'run,
            }
        }
    }
    sh.wake_at.store(u64::MAX, Ordering::SeqCst);
    let lost = inflight.iter().filter(|s| **s >= plan.warm_end).count() as u64;
    out.errors += lost.max(1);
    live.errors.fetch_add(lost.max(1), Ordering::Relaxed);
    (seq, out)
}

fn on_reply(
    msg: Message,
    inflight: &mut VecDeque<Instant>,
    plan: &Plan,
    out: &mut ClientOutcome,
    live: &Counter,
) -> bool {
    let ok = match &msg {
        Message::Text(t) => match classify(t.as_str()) {
            Reply::Ok => true,
            Reply::Err => false,
            Reply::Notification => return true,
        },
        Message::Binary(_) => false,
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return true,
        Message::Close(_) => return false,
    };
    let Some(sent) = inflight.pop_front() else {
        out.errors += 1;
        return true;
    };
    if sent >= plan.warm_end {
        out.record(sent, Instant::now(), ok, live);
    } else if ok {
        live.ops.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// What one subscriber saw (of a memhub or, with `lagged` 0, a Redis run).
#[derive(Debug, Default)]
pub(super) struct SubOutcome {
    /// The next sequence number it expected when it stopped.
    pub(super) expected: u64,
    pub(super) deliveries: u64,
    pub(super) missed: u64,
    pub(super) lagged: u64,
    pub(super) errors: u64,
}

/// All subscribers' outcomes summed, once `published` updates went out:
/// what a subscriber did not reach counts as missed, a subscriber task that
/// died as one error and one miss.
async fn sum_subscribers(
    tasks: Vec<tokio::task::JoinHandle<SubOutcome>>,
    published: u64,
) -> SubOutcome {
    let mut total = SubOutcome::default();
    for t in tasks {
        match t.await {
            Ok(s) => {
                total.deliveries += s.deliveries;
                total.missed += s.missed + published.saturating_sub(s.expected);
                total.lagged += s.lagged;
                total.errors += s.errors;
            }
            Err(_) => {
                total.errors += 1;
                total.missed += 1;
            }
        }
    }
    total
}

impl Shared {
    /// Whether a publisher about to send `seq` must wait for the slowest
    /// subscriber: true once `seq` is a whole [`WINDOW`] ahead of it, with
    /// `wake_at` armed for when it is half a window behind. `min_seen`
    /// caches the slowest progress last read.
    pub(super) fn must_wait(&self, seq: u64, min_seen: &mut u64) -> bool {
        if seq < min_seen.saturating_add(WINDOW) {
            return false;
        }
        *min_seen = self.min_progress();
        if seq < min_seen.saturating_add(WINDOW) {
            return false;
        }
        // Wait until the slowest is half a window behind; then look again
        // (it may have moved before wake_at was set).
        self.wake_at.store(seq - WINDOW / 2, Ordering::SeqCst);
        *min_seen = self.min_progress();
        if seq >= min_seen.saturating_add(WINDOW) {
            return true;
        }
        self.wake_at.store(u64::MAX, Ordering::SeqCst);
        false
    }

    /// The delivery latencies of every histogram shard, merged.
    fn delivery_histogram(&self) -> Histogram<u64> {
        let mut merged = new_histogram();
        for h in &self.hists {
            let _ = merged.add(&*h.lock());
        }
        merged
    }
}

/// Reads events until it has the last update of the run (or the drain time
/// ran out, or the connection failed).
async fn subscriber(
    mut ws: Ws,
    idx: usize,
    sh: Arc<Shared>,
    mut fin: watch::Receiver<Option<u64>>,
    live: Arc<Counter>,
) -> SubOutcome {
    let mut st = SubOutcome::default();
    let mut resync = false;
    let warm_end_ns = sh.plan.ns_since_start(sh.plan.warm_end);
    let hist = &sh.hists[idx % HIST_SHARDS];
    let mut last: Option<u64> = None;
    let far = Instant::now() + Duration::from_secs(10 * 365 * 86_400);
    let mut drain = pin!(tokio::time::sleep_until(far.into()));
    loop {
        if last.is_some_and(|n| st.expected >= n) {
            break;
        }
        tokio::select! {
            biased;
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let text = t.as_str();
                    if let Some(seq) = number_after(text, &SEQ) {
                        if resync {
                            st.missed += seq.saturating_sub(st.expected).max(1);
                            st.expected = st.expected.max(seq + 1);
                            resync = false;
                        } else if seq == st.expected {
                            st.expected += 1;
                        } else if seq > st.expected {
                            st.missed += seq - st.expected;
                            st.expected = seq + 1;
                        } else {
                            // Out of order or repeated: the hub broke its promise.
                            st.errors += 1;
                            live.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        let sent = number_after(text, &SENT).unwrap_or(0);
                        if sent >= warm_end_ns {
                            let now = sh.plan.ns_since_start(Instant::now());
                            st.deliveries += 1;
                            live.ops.fetch_add(1, Ordering::Relaxed);
                            record_ns(&mut hist.lock(), now.saturating_sub(sent).max(1));
                        }
                        sh.advance(idx, st.expected);
                    } else if text.contains("\"event\":\"lagged\"") {
                        st.lagged += 1;
                        resync = true;
                        // Until the next update shows where it stands, it
                        // must not hold the publisher back.
                        sh.advance(idx, u64::MAX);
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    st.errors += 1;
                    live.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(Ok(_)) => {}
            },
            r = fin.changed(), if last.is_none() => {
                last = match r {
                    Ok(()) => *fin.borrow(),
                    Err(_) => Some(0),
                };
                drain.as_mut().reset((Instant::now() + DRAIN).into());
            }
            _ = &mut drain => break,
        }
    }
    if resync {
        // Lagged at the very end, with no later update to measure the gap.
        st.missed += 1;
    }
    sh.advance(idx, u64::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    st
}

/// Finds `"bench_seq":` in an event (built once: setting up a substring
/// search per event was 5 % of the bench's CPU with 1,000 subscribers).
static SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"bench_seq\":"));
/// Finds `"bench_t":` in an event.
static SENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"bench_t\":"));

/// The unsigned integer right after the first `pat` in `text`.
fn number_after(text: &str, pat: &Finder<'_>) -> Option<u64> {
    let at = pat.find(text.as_bytes())? + pat.needle().len();
    let digits = text[at..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_found() {
        let ev = r#"{"jsonrpc":"2.0","method":"event","params":{"sub":3,"key":"bench:fanout","event":"update","value":{"bench_t":123456,"bench_seq":42,"pad":"xx"},"rev":99}}"#;
        assert_eq!(number_after(ev, &SEQ), Some(42));
        assert_eq!(number_after(ev, &SENT), Some(123456));
        assert_eq!(number_after(ev, &Finder::new("\"nope\":")), None);
        assert_eq!(number_after("\"bench_seq\":x", &SEQ), None);
    }
}
