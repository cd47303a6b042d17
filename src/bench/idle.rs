//! `idle`: what open, quiet connections cost the hub. Reads the hub's RSS,
//! opens `--clients` WebSockets, has each answer one `version` (so the hub's
//! side of every connection is fully set up), waits a moment, reads the RSS
//! again and reports the growth per connection.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::chaos::RssSource;
use super::report::{rate, IdleReport, Latency, Report};
use super::{ask_all, nanos, new_histogram, open_many, record_ns, BenchConfig};

const VERSION: &str = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"version\"}";

/// How long the connections sit idle before the second RSS reading.
const SETTLE: Duration = Duration::from_secs(1);

pub(crate) async fn run(cfg: &BenchConfig, url: &str) -> anyhow::Result<Report> {
    let rss = match (cfg.spawn, cfg.pid) {
        (true, _) => RssSource::InProcess,
        (false, Some(pid)) => RssSource::Pid(pid),
        (false, None) => bail!("--mode idle reads the hub's RSS: give --pid (or use --spawn)"),
    };
    let read = || {
        rss.read()
            .with_context(|| format!("cannot read the RSS of {}", rss.describe()))
    };
    let before = read()?;
    let start = Instant::now();
    let conns = open_many(url, cfg.clients).await?;
    let conns = ask_all(conns, "version", VERSION.to_string()).await?;
    let seconds = start.elapsed().as_secs_f64().max(1e-6);
    tokio::time::sleep(SETTLE).await;
    let after = read()?;
    let n = conns.len();
    // Closing 10,000 sockets one by one is slow and measures nothing.
    drop(conns);
    let mut hist = new_histogram();
    record_ns(&mut hist, nanos(Duration::from_secs_f64(seconds)));
    Ok(Report {
        mode: cfg.mode,
        url: url.to_string(),
        spawned: cfg.spawn,
        clients: n,
        pipeline: 1,
        value_size: 0,
        keyspace: 0,
        ops: n as u64,
        seconds,
        ops_per_sec: rate(n as u64, seconds),
        errors: 0,
        latency_us: Latency::from_nanos(&hist),
        fanout: None,
        chaos: None,
        idle: Some(IdleReport {
            connections: n,
            rss_before_bytes: before,
            rss_after_bytes: after,
            bytes_per_connection: (after as f64 - before as f64) / n.max(1) as f64,
        }),
    })
}
