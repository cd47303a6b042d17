//! Watch a key live: its current state, then every change as it happens.
//!
//! Run a hub in one terminal and the watcher in another:
//!
//! ```text
//! cargo run --release -- serve
//! cargo run --example watch              # watches the key `counter`
//! cargo run --example watch -- greeting  # or any other key
//! ```
//!
//! It prints the key's snapshot, then one line per change (`update`,
//! `delete`, `expire`) until Ctrl-C. If the hub restarts, the client
//! reconnects and reports whatever changed while it was away.
//!
//! To see changes, write the key from anywhere, e.g. a second terminal:
//! `cargo run --example watch -- --demo` subscribes too, then makes 3 updates
//! itself from a second client, prints the 3 events and exits (this is also
//! how `just test` runs it, unattended).
//!
//! The hub is `MEMHUB_URL` (default `ws://127.0.0.1:18813/ws`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use memhub::client::{Event, EventKind, Snapshot};
use memhub::{Client, ClientOptions};
use serde_json::Value;

/// The hub `memhub serve` listens on by default.
const DEFAULT_URL: &str = "ws://127.0.0.1:18813/ws";
/// In `--demo` mode, give up on the events after this long.
const DEMO_WAIT: Duration = Duration::from_secs(10);
const USAGE: &str = "usage: watch [KEY] [--demo]   (KEY defaults to `counter`)";

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::var("MEMHUB_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let mut key = None;
    let mut demo = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--demo" => demo = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            flag if flag.starts_with('-') => bail!("unknown flag {flag:?}; {USAGE}"),
            _ if key.is_some() => bail!("one key only; {USAGE}"),
            _ => key = Some(arg),
        }
    }
    let key = key.unwrap_or_else(|| "counter".to_string());

    // A watcher should outlive hub restarts: retry forever, once a second,
    // and say so each time it is back.
    let opts = ClientOptions {
        max_retry: u32::MAX,
        retry_delay: Duration::from_secs(1),
        on_reconnect: Some(Arc::new(|| println!("(reconnected to the hub)"))),
        ..ClientOptions::default()
    };
    // One quick attempt first: if no hub is running, `connect` says so at
    // once, where this watcher's client would keep retrying in silence.
    drop(connect(&url).await?);
    let client = Client::connect_with(&url, opts)
        .await
        .with_context(|| format!("connecting to {url}"))?;

    // The subscription's initial snapshot is the key's state at this moment;
    // every later change arrives as an event, in rev order, none skipped.
    let mut sub = client
        .subscribe(&key)
        .await
        .with_context(|| format!("subscribing to {key:?}"))?;
    let initial = sub
        .initial()
        .cloned()
        .context("a key subscription has a snapshot")?;
    println!("watching {key:?} on {url}");
    print_snapshot(&initial);

    if demo {
        return run_demo(&url, &key, &initial, &mut sub).await;
    }

    println!("(Ctrl-C to stop)");
    loop {
        tokio::select! {
            signal = tokio::signal::ctrl_c() => {
                signal.context("listening for Ctrl-C")?;
                println!("bye");
                return Ok(());
            }
            event = sub.next_event() => match event {
                Some(event) => print_event(&event),
                None => bail!("the subscription ended"),
            },
        }
    }
}

/// `--demo`: a second client makes 3 updates; print the 3 events they cause.
async fn run_demo(
    url: &str,
    key: &str,
    initial: &Snapshot,
    sub: &mut memhub::Subscription,
) -> Result<()> {
    // Count on from the current value if it is a number (`counter` usually is).
    let start = initial.value.as_ref().and_then(Value::as_i64).unwrap_or(0);
    let writer = connect(url).await?;
    let mut revs = Vec::new();
    for n in start + 1..=start + 3 {
        let rev = writer
            .update(key, &n)
            .await
            .with_context(|| format!("updating {key:?}"))?;
        println!("demo: set {key} = {n} (rev {rev})");
        revs.push(rev);
    }

    // Wait for the events of our 3 writes (each event carries its write's
    // rev). Others may write the key too: print whatever arrives meanwhile.
    let mut seen = 0;
    let wait_for_ours = async {
        while seen < revs.len() {
            let event = sub.next_event().await.context("the subscription ended")?;
            print_event(&event);
            if event.rev.is_some_and(|rev| revs.contains(&rev)) {
                seen += 1;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(DEMO_WAIT, wait_for_ours)
        .await
        .with_context(|| format!("the demo's events did not all arrive within {DEMO_WAIT:?}"))??;
    println!("demo: got all 3 events");
    Ok(())
}

fn print_snapshot(snap: &Snapshot) {
    if snap.exists {
        // A stored JSON `null` arrives as `value: None`.
        let value = snap.value.clone().unwrap_or(Value::Null);
        let rev = snap.rev.unwrap_or_default();
        println!("now:    {value} (rev {rev})");
    } else {
        println!("now:    (no value yet)");
    }
}

fn print_event(event: &Event) {
    let value = match event.kind {
        // An `update` always carries a value (`None` here means JSON `null`).
        EventKind::Update => format!("{} ", event.value.clone().unwrap_or(Value::Null)),
        // `delete` and `expire` have none; `lagged` is followed by the state.
        _ => String::new(),
    };
    // A `delete` synthesized after a reconnect has no rev.
    let rev = event.rev.map(|r| format!("(rev {r})")).unwrap_or_default();
    let line = format!("{:<7} {value}{rev}", event.kind.as_str());
    println!("{}", line.trim_end());
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
