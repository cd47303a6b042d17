//! Lazy memoization: many clients race for a value that is expensive to
//! compute; it is computed exactly once and everyone gets that one result.
//!
//! Run a hub in one terminal and the example in another:
//!
//! ```text
//! cargo run --release -- serve
//! cargo run --example memoize_with
//! ```
//!
//! 5 tasks, each with its own `Client` (its own connection, as if they were
//! separate programs), call `memoize_with(key, generator)` at the same moment
//! on a fresh key. `memoize_with` runs the generator only while the key is
//! absent, and the racers queue on a hub lock (`memoize_with:KEY`), so one
//! task computes while the other four wait and then read its result. The
//! example checks that the generator ran exactly once and that all 5 tasks
//! got the same value (exit status 0), or says what went wrong (1).
//!
//! The hub is `MEMHUB_URL` (default `ws://127.0.0.1:18813/ws`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use memhub::{Client, ClientOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

/// Racing tasks.
const TASKS: usize = 5;
/// The hub `memhub serve` listens on by default.
const DEFAULT_URL: &str = "ws://127.0.0.1:18813/ws";

/// What the generator computes (and the hub stores under the key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    /// Which task's generator ran: the others got this value from the hub.
    computed_by: usize,
    /// The "expensive" result: the sum of the squares of 1..=1000.
    sum_of_squares: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::var("MEMHUB_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    // A fresh key per run (the time in ms), so the value is never there yet.
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_millis();
    let key = format!("memoize_with/{run_id}");

    // One client per task, all connected before the race starts. (Racers
    // should not share a client: the hub answers each connection's requests
    // in order, so a `lock` waiting there holds up the holder's own calls.)
    let mut clients = Vec::new();
    for _ in 0..TASKS {
        clients.push(connect(&url).await?);
    }
    println!("{TASKS} tasks memoize {key:?} on {url}");

    // Counts generator runs across all tasks (they share this process).
    let runs = Arc::new(AtomicUsize::new(0));
    // Lines the tasks up so they all call memoize_with at the same moment.
    let start = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for (id, client) in (1..).zip(clients) {
        let (key, runs, start) = (key.clone(), runs.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let value: Report = client
                .memoize_with(&key, || async move {
                    // Runs only in the task that got the key's lock first
                    // while the key was still absent.
                    println!("task {id}: generator ran");
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await; // "expensive"
                    Report {
                        computed_by: id,
                        sum_of_squares: (1..=1000u64).map(|i| i * i).sum(),
                    }
                })
                .await
                .with_context(|| format!("task {id}: memoize_with {key:?}"))?;
            println!("task {id}: got {value:?}");
            anyhow::Ok(value)
        }));
    }

    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.context("a task panicked")??);
    }

    let runs = runs.load(Ordering::SeqCst);
    ensure!(runs == 1, "the generator ran {runs} times, not once");
    ensure!(
        values.iter().all(|v| *v == values[0]),
        "the tasks got different values: {values:?}"
    );
    println!("ok: the generator ran once and all {TASKS} tasks got its value");
    Ok(())
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
