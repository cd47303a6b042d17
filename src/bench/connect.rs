//! `connect`: connection setup rate. Each client, in a loop: open a
//! WebSocket, send `version`, read the answer, close (waiting for the hub's
//! close frame). Latency is open → answer; the rate counts whole cycles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use super::progress::{rate_line, Progress};
use super::report::{rate, Latency, Report};
use super::{
    classify, join_clients, measured_seconds, open, BenchConfig, ClientOutcome, Counter, Plan,
    Reply, RESPONSE_TIMEOUT,
};

const VERSION: &str = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"version\"}";

pub(crate) async fn run(cfg: &BenchConfig, url: &str) -> anyhow::Result<Report> {
    // One cycle first, so that an unreachable hub is an error, not a report
    // full of errors.
    cycle(url).await.context("the first connection failed")?;
    let plan = Arc::new(Plan::new(cfg));
    let counters: Vec<Arc<Counter>> = (0..cfg.clients).map(|_| Arc::default()).collect();
    let progress = Progress::start(
        cfg.progress,
        rate_line(cfg.mode.to_string(), plan.clone(), counters.clone(), None),
    );
    let tasks: Vec<_> = counters
        .iter()
        .cloned()
        .map(|live| {
            let plan = plan.clone();
            let url = url.to_string();
            tokio::spawn(async move {
                let mut out = ClientOutcome::new();
                loop {
                    let start = Instant::now();
                    if !plan.may_send(start) {
                        return out;
                    }
                    let measured = start >= plan.warm_end;
                    match cycle(&url).await {
                        Ok(answered) if measured => out.record(start, answered, true, &live),
                        Ok(_) => {
                            live.ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(_) => {
                            if measured {
                                out.record(start, Instant::now(), false, &live);
                            }
                            // Do not spin on a hub that refuses.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            })
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
        pipeline: 1,
        value_size: 0,
        keyspace: 0,
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

/// One connection cycle; returns when the `version` answer arrived.
async fn cycle(url: &str) -> anyhow::Result<Instant> {
    let mut ws = open(url).await?;
    ws.send(Message::text(VERSION)).await?;
    let answered = loop {
        match tokio::time::timeout(RESPONSE_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => match classify(t.as_str()) {
                Reply::Ok => break Instant::now(),
                Reply::Notification => continue,
                Reply::Err => bail!("version answered with an error: {}", t.as_str()),
            },
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                bail!("the hub closed the connection before answering")
            }
            Ok(Some(Ok(_))) => continue,
            Err(_) => bail!("no answer to version within {RESPONSE_TIMEOUT:?}"),
        }
    };
    // Close politely and wait for the hub's close frame, so that the hub
    // closes the TCP connection first (its side keeps the TIME_WAIT).
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    Ok(answered)
}
