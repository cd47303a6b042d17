//! Request/response modes: `get`, `update`, `mixed`, `memoize`, `incr`,
//! `keys`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use super::frames::{Incoming, LoadSocket};
use super::progress::{rate_line, Progress};
use super::report::{rate, Latency, Report};
use super::{
    classify_bytes, join_clients, measured_seconds, open_many, BenchConfig, ClientOutcome, Counter,
    Mode, Plan, Reply, Rng, Ws, RESPONSE_TIMEOUT,
};

const HEAD: &str = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"";

/// Pre-serialized pieces of the requests of one mode: a request is
/// `head + key number + tail`.
pub(crate) struct Templates {
    mode: Mode,
    keyspace: u64,
    get_ratio: f64,
    get: (String, String),
    write: (String, String),
}

impl Templates {
    pub fn new(cfg: &BenchConfig) -> Self {
        let value = value_json(cfg.value_size);
        let piece = |method: &str, prefix: &str, tail: &str| {
            (
                format!("{HEAD}{method}\",\"params\":{{\"key\":\"{prefix}"),
                tail.to_string(),
            )
        };
        let with_value = format!("\",\"value\":{value}}}}}");
        let get = piece("get", "bench:", "\"}}");
        let write = match cfg.mode {
            Mode::Memoize => piece("memoize", "bench:", &with_value),
            Mode::Incr => piece("incr", "bench:incr:", "\"}}"),
            // A page of 100 starting after a random key of the keyspace.
            Mode::Keys => (
                format!("{HEAD}keys\",\"params\":{{\"prefix\":\"bench:\",\"limit\":100,\"after\":\"bench:"),
                "\"}}".to_string(),
            ),
            _ => piece("update", "bench:", &with_value),
        };
        Self {
            mode: cfg.mode,
            keyspace: cfg.keyspace,
            get_ratio: cfg.mixed_get_ratio,
            get,
            write,
        }
    }

    /// Replaces `out` with the text of the next request.
    pub fn next_into(&self, rng: &mut Rng, out: &mut String) {
        let (head, tail) = match self.mode {
            Mode::Get => &self.get,
            Mode::Mixed if rng.unit() < self.get_ratio => &self.get,
            _ => &self.write,
        };
        let n = rng.below(self.keyspace);
        out.clear();
        out.push_str(head);
        out.push_str(itoa::Buffer::new().format(n));
        out.push_str(tail);
    }

    /// An `update` of key `n` (for filling the keyspace).
    fn update_of(&self, n: u64, out: &mut String) {
        let (head, tail) = &self.write;
        out.push_str(head);
        out.push_str(itoa::Buffer::new().format(n));
        out.push_str(tail);
    }
}

/// A JSON string of `len` characters.
pub(crate) fn value_json(len: usize) -> String {
    let mut s = String::with_capacity(len + 2);
    s.push('"');
    s.extend(std::iter::repeat_n('x', len));
    s.push('"');
    s
}

pub(crate) async fn run(cfg: &BenchConfig, url: &str) -> anyhow::Result<Report> {
    let templates = Arc::new(Templates::new(cfg));
    if matches!(cfg.mode, Mode::Get | Mode::Mixed | Mode::Keys) {
        populate(cfg, url).await?;
    }
    let conns = open_many(url, cfg.clients).await?;
    let plan = Arc::new(Plan::new(cfg));
    let counters: Vec<Arc<Counter>> = (0..cfg.clients).map(|_| Arc::default()).collect();
    let progress = Progress::start(
        cfg.progress,
        rate_line(cfg.mode.to_string(), plan.clone(), counters.clone(), None),
    );
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(counters.iter().cloned())
        .enumerate()
        .map(|(i, (ws, live))| {
            tokio::spawn(client(
                ws,
                i as u64 + 1,
                plan.clone(),
                templates.clone(),
                live,
                cfg.pipeline,
            ))
        })
        .collect();
    let total = join_clients(tasks).await;
    if let Some(p) = progress {
        p.finish();
    }
    let seconds = measured_seconds(&plan, total.last);
    Ok(Report {
        mode: cfg.mode,
        url: url.to_string(),
        spawned: cfg.spawn,
        clients: cfg.clients,
        pipeline: cfg.pipeline,
        value_size: cfg.value_size,
        keyspace: cfg.keyspace,
        ops: total.ops,
        seconds,
        ops_per_sec: rate(total.ops, seconds),
        errors: total.errors,
        latency_us: Latency::from_nanos(&total.hist),
        fanout: None,
        chaos: None,
        idle: None,
    })
}

/// One closed-loop client: keeps `pipeline` requests in flight until the plan
/// says stop, then collects the outstanding answers.
async fn client(
    ws: Ws,
    seed: u64,
    plan: Arc<Plan>,
    templates: Arc<Templates>,
    live: Arc<Counter>,
    pipeline: usize,
) -> ClientOutcome {
    let mut sock = LoadSocket::new(ws);
    let mut out = ClientOutcome::new();
    let mut rng = Rng::new(seed);
    let mut inflight: VecDeque<Instant> = VecDeque::with_capacity(pipeline);
    let mut text = String::new();
    let mut sending = true;
    'run: loop {
        // One clock read per burst: the burst leaves in one write.
        let now = Instant::now();
        while sending && inflight.len() < pipeline {
            if !plan.may_send(now) {
                sending = false;
                break;
            }
            templates.next_into(&mut rng, &mut text);
            sock.queue_text(text.as_bytes(), &mut rng);
            inflight.push_back(now);
        }
        if sock.flush().await.is_err() {
            break 'run;
        }
        if inflight.is_empty() {
            sock.close().await;
            return out;
        }
        match tokio::time::timeout(RESPONSE_TIMEOUT, sock.read_more()).await {
            Ok(Ok(())) => {}
            _ => break 'run,
        }
        // Everything this read completed arrived at the same instant.
        let now = Instant::now();
        let drained =
            sock.drain(|frame| on_frame(frame, now, &mut inflight, &plan, &mut out, &live));
        if drained.is_err() {
            break 'run;
        }
    }
    // The connection failed: what was outstanding is lost (at least one error).
    let lost = inflight.iter().filter(|s| **s >= plan.warm_end).count() as u64;
    let lost = lost.max(1);
    out.errors += lost;
    live.errors.fetch_add(lost, Ordering::Relaxed);
    out
}

/// Accounts for one frame that arrived at `now`.
fn on_frame(
    frame: Incoming<'_>,
    now: Instant,
    inflight: &mut VecDeque<Instant>,
    plan: &Plan,
    out: &mut ClientOutcome,
    live: &Counter,
) {
    let ok = match frame {
        Incoming::Text(t) => match classify_bytes(t) {
            Reply::Ok => true,
            Reply::Err => false,
            Reply::Notification => return,
        },
        Incoming::Unexpected => false,
    };
    let Some(sent) = inflight.pop_front() else {
        // An answer nobody asked for.
        out.errors += 1;
        live.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if sent >= plan.warm_end {
        out.record(sent, now, ok, live);
    } else if ok {
        live.ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes every key of the keyspace once (batches of 200 over 4 connections),
/// so that `get` finds them all.
async fn populate(cfg: &BenchConfig, url: &str) -> anyhow::Result<()> {
    const BATCH: u64 = 200;
    const WORKERS: usize = 4;
    let fill_cfg = BenchConfig {
        mode: Mode::Update,
        ..cfg.clone()
    };
    let templates = Arc::new(Templates::new(&fill_cfg));
    let bar = Progress::bar(cfg.progress, cfg.keyspace, "filling the keyspace");
    let workers = WORKERS.min(cfg.keyspace.div_ceil(BATCH) as usize).max(1);
    let conns = open_many(url, workers).await?;
    let next = Arc::new(AtomicU64::new(0));
    let keyspace = cfg.keyspace;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            let next = next.clone();
            let templates = templates.clone();
            let bar = bar.clone();
            tokio::spawn(async move {
                loop {
                    let from = next.fetch_add(BATCH, Ordering::Relaxed);
                    if from >= keyspace {
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                        return Ok(());
                    }
                    let to = (from + BATCH).min(keyspace);
                    let mut frame = String::with_capacity((to - from) as usize * 160);
                    frame.push('[');
                    for n in from..to {
                        if n > from {
                            frame.push(',');
                        }
                        templates.update_of(n, &mut frame);
                    }
                    frame.push(']');
                    if ws.send(Message::text(frame)).await.is_err() {
                        bail!("the hub closed the connection while the keyspace was filled");
                    }
                    let answer = loop {
                        match tokio::time::timeout(RESPONSE_TIMEOUT, ws.next()).await {
                            Ok(Some(Ok(Message::Text(t)))) => break t,
                            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                                bail!("the hub closed the connection while the keyspace was filled")
                            }
                            Ok(Some(Ok(_))) => continue,
                            Err(_) => bail!("no answer while the keyspace was filled"),
                        }
                    };
                    if let Some(at) = answer.as_str().find("\"error\":") {
                        let snippet: String = answer.as_str()[at..].chars().take(200).collect();
                        bail!("filling the keyspace failed: {snippet}");
                    }
                    if let Some(b) = &bar {
                        b.inc(to - from);
                    }
                }
            })
        })
        .collect();
    let mut result = Ok(());
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(anyhow::anyhow!("a filling task failed: {e}")),
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_valid_json() {
        for mode in [
            Mode::Get,
            Mode::Update,
            Mode::Mixed,
            Mode::Memoize,
            Mode::Incr,
            Mode::Keys,
        ] {
            let cfg = BenchConfig {
                mode,
                value_size: 5,
                keyspace: 3,
                ..BenchConfig::default()
            };
            let t = Templates::new(&cfg);
            let mut rng = Rng::new(1);
            let mut text = String::new();
            for _ in 0..20 {
                t.next_into(&mut rng, &mut text);
                let v: serde_json::Value = match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(e) => panic!("{text}: {e}"),
                };
                let key = match v["method"].as_str() {
                    Some("keys") => &v["params"]["after"],
                    _ => &v["params"]["key"],
                };
                let key = key.as_str().unwrap_or_default().to_string();
                assert!(key.starts_with("bench:"), "{text}");
                match v["method"].as_str() {
                    Some("get") | Some("incr") | Some("keys") => {}
                    Some("update") | Some("memoize") => {
                        assert_eq!(v["params"]["value"], "xxxxx")
                    }
                    other => panic!("unexpected method {other:?}"),
                }
            }
        }
    }
}
