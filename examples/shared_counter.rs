//! One counter shared by several OS processes, incremented with the hub's
//! atomic `incr` (rpyc-mem's session-guide scenario, without a lock).
//!
//! Run a hub in one terminal and the example in another:
//!
//! ```text
//! cargo run --release -- serve
//! cargo run --example shared_counter
//! ```
//!
//! The parent picks a fresh key `shared_counter/<run id>` (the run id is the
//! current time in ms, so reruns never collide) and starts 4 copies of this
//! program as `shared_counter worker N <run id>`. Each worker calls
//! `incr(key, 1)` 250 times. `incr` is a single atomic step on the hub, so
//! no increment can be lost the way a get-then-update could lose one. The
//! parent waits for the workers, reads the counter and checks that it is
//! exactly 4 × 250 = 1000 (exit status 0), or says what went wrong (1).
//!
//! The hub is `MEMHUB_URL` (default `ws://127.0.0.1:18813/ws`).

use std::process::{Command, ExitStatus};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use memhub::{Client, ClientOptions};

/// Worker processes to start.
const WORKERS: u32 = 4;
/// Increments per worker.
const ROUNDS: i64 = 250;
/// The hub `memhub serve` listens on by default.
const DEFAULT_URL: &str = "ws://127.0.0.1:18813/ws";

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::var("MEMHUB_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => parent(&url).await,
        [cmd, n, run] if cmd == "worker" => worker(&url, n, run).await,
        _ => bail!(
            "usage: shared_counter (the workers are started as `shared_counter worker N RUN_ID`)"
        ),
    }
}

/// Starts the workers, waits for them and checks the total.
async fn parent(url: &str) -> Result<()> {
    // Connect first, so a missing hub is reported before any worker starts.
    let client = connect(url).await?;
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_millis();
    let key = counter_key(&run_id.to_string());
    println!("{WORKERS} workers × {ROUNDS} increments of {key:?} on {url}");

    // The workers are this very program, started again with other arguments
    // (they inherit MEMHUB_URL from our environment).
    let started = Instant::now();
    let exe = std::env::current_exe().context("locating this program")?;
    let mut children = Vec::new();
    for n in 1..=WORKERS {
        let child = Command::new(&exe)
            .args(["worker", &n.to_string(), &run_id.to_string()])
            .spawn()
            .with_context(|| format!("starting worker {n} ({})", exe.display()))?;
        children.push((n, child));
    }

    // `Child::wait` blocks, so wait on a blocking thread, not on the runtime.
    let statuses: Vec<(u32, std::io::Result<ExitStatus>)> =
        tokio::task::spawn_blocking(move || {
            children
                .into_iter()
                .map(|(n, mut child)| (n, child.wait()))
                .collect()
        })
        .await
        .context("waiting for the workers")?;
    for (n, status) in statuses {
        let status = status.with_context(|| format!("waiting for worker {n}"))?;
        ensure!(status.success(), "worker {n} failed ({status})");
    }

    let total: i64 = client
        .get(&key)
        .await
        .with_context(|| format!("reading {key:?}"))?;
    let expected = i64::from(WORKERS) * ROUNDS;
    println!(
        "{key} = {total} (expected {expected}) after {:.2?}",
        started.elapsed()
    );
    ensure!(
        total == expected,
        "the counter is {total}, not {WORKERS} × {ROUNDS} = {expected}"
    );
    println!("ok: every increment counted");
    Ok(())
}

/// One worker process: `ROUNDS` atomic increments of the run's counter.
async fn worker(url: &str, n: &str, run_id: &str) -> Result<()> {
    let client = connect(url).await?;
    let key = counter_key(run_id);
    let mut last = 0;
    for _ in 0..ROUNDS {
        // Read-add-write in one step on the hub: safe with any number of writers.
        last = client
            .incr(&key, 1)
            .await
            .with_context(|| format!("worker {n}: incr {key:?}"))?;
    }
    println!("worker {n}: {ROUNDS} increments done (the counter read {last} after my last one)");
    Ok(())
}

/// The counter's key for one run.
fn counter_key(run_id: &str) -> String {
    format!("shared_counter/{run_id}")
}

/// Connects to the hub, or exits 1 with a hint when none is running.
async fn connect(url: &str) -> Result<Client> {
    // No retries: without a hub, say so at once instead of retrying for 12 s.
    let opts = ClientOptions {
        max_retry: 0,
        ..ClientOptions::default()
    };
    match Client::connect_with(url, opts).await {
        Ok(client) => Ok(client),
        Err(memhub::Error::Connection(why)) => {
            eprintln!("{why}; is a hub running? Start one with `cargo run --release -- serve`");
            std::process::exit(1);
        }
        Err(e) => Err(e).with_context(|| format!("connecting to {url}")),
    }
}
