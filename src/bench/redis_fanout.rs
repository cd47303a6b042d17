//! `redis-fanout`: the [`fanout`](super::fanout) workload against Redis
//! pub/sub, so that both are measured by the same kind of client (tokio, one
//! task per connection) on the same machine.
//!
//! `--subscribers M` connections `SUBSCRIBE` to the channel `bench:fanout`;
//! one publisher `PUBLISH`es to it in a closed loop on its own replies,
//! `--pipeline` in flight, never more than [`WINDOW`] ahead of the slowest
//! subscriber: exactly the rules of `fanout`. Each payload is
//! `{20-digit seq}{20-digit send time in ns}{pad of --value-size}`, so every
//! delivered message has the same length and subscribers read the sequence
//! number and timestamp at fixed offsets. A gap in the sequence is a missed
//! event. Only a minimal subset of RESP is spoken (no new dependency).

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::fanout::{Harness, Shared, SubOutcome, DRAIN, HIST_SHARDS, KEY};
use super::report::Report;
use super::{record_ns, BenchConfig, ClientOutcome, Counter, RESPONSE_TIMEOUT};

/// Digits of the sequence number and of the timestamp in a payload.
const DIGITS: usize = 20;

/// `redis://HOST:PORT` (or `HOST:PORT`) → `HOST:PORT`.
fn address(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("redis://").unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        bail!("--mode redis-fanout needs --url redis://HOST:PORT, not `{url}`");
    }
    Ok(rest.to_string())
}

/// The RESP text of a command.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What a subscriber receives for a payload of `payload_len` bytes:
/// `*3 $7 message $len(KEY) KEY $payload_len payload`, as RESP.
fn message_head(payload_len: usize) -> Vec<u8> {
    let mut m = command(&[b"message", KEY.as_bytes()]);
    m[1] = b'3';
    m.extend_from_slice(format!("${payload_len}\r\n").as_bytes());
    m
}

pub(crate) async fn run(cfg: &BenchConfig, url: &str) -> anyhow::Result<Report> {
    let addr = address(url)?;
    let payload_len = 2 * DIGITS + cfg.value_size;
    let head = message_head(payload_len);
    let msg_len = head.len() + payload_len + 2;

    let mut subs = Vec::with_capacity(cfg.subscribers);
    for _ in 0..cfg.subscribers {
        subs.push(subscribe(&addr).await?);
    }
    let publisher_conn = connect(&addr).await?;

    let run = Harness::start(cfg);
    let head = Arc::new(head);
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .zip(run.sub_live.iter().cloned())
        .enumerate()
        .map(|(i, (conn, live))| {
            tokio::spawn(subscriber(
                conn,
                i,
                run.shared.clone(),
                head.clone(),
                msg_len,
                run.fin_rx.clone(),
                live,
            ))
        })
        .collect();
    let publisher_task = tokio::spawn(publisher(
        publisher_conn,
        run.shared.clone(),
        cfg.value_size,
        cfg.pipeline,
        run.pub_live.clone(),
    ));
    // Redis has no lag: a subscriber that falls behind is cut off, which
    // shows as missed events.
    run.finish(cfg, url, false, 1, publisher_task, sub_tasks)
        .await
}

async fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    let conn = tokio::time::timeout(RESPONSE_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("no answer from Redis at {addr}"))?
        .with_context(|| format!("cannot connect to Redis at {addr}"))?;
    conn.set_nodelay(true)?;
    Ok(conn)
}

/// Opens a connection and subscribes it to [`KEY`], waiting for the
/// confirmation so that no publish of the run can precede it.
async fn subscribe(addr: &str) -> anyhow::Result<TcpStream> {
    let mut conn = connect(addr).await?;
    conn.write_all(&command(&[b"SUBSCRIBE", KEY.as_bytes()]))
        .await?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    // `*3 $9 subscribe $N KEY :1`: six lines.
    while reply.iter().filter(|&&b| b == b'\n').count() < 6 {
        let n = tokio::time::timeout(RESPONSE_TIMEOUT, conn.read(&mut buf))
            .await
            .context("no answer to SUBSCRIBE")??;
        if n == 0 {
            bail!("Redis closed the connection during SUBSCRIBE");
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.first() == Some(&b'-') {
            bail!("SUBSCRIBE failed: {}", String::from_utf8_lossy(&reply));
        }
    }
    Ok(conn)
}

/// The publisher: the same closed loop and window as `fanout`'s.
async fn publisher(
    conn: TcpStream,
    sh: Arc<Shared>,
    pad: usize,
    pipeline: usize,
    live: Arc<Counter>,
) -> (u64, ClientOutcome) {
    let plan = sh.plan.clone();
    let mut out = ClientOutcome::new();
    let (mut rd, mut wr) = conn.into_split();
    let pad = "x".repeat(pad);
    let mut inflight: VecDeque<Instant> = VecDeque::with_capacity(pipeline);
    let mut seq = 0u64;
    let mut min_seen = 0u64;
    let mut blocked = false;
    let mut sending = true;
    let mut buf = vec![0u8; 64 * 1024];
    let far = Instant::now() + Duration::from_secs(10 * 365 * 86_400);
    let mut deadline = pin!(tokio::time::sleep_until(plan.end.unwrap_or(far).into()));
    let mut batch = Vec::new();
    'run: loop {
        batch.clear();
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
            let payload = format!("{seq:0w$}{:0w$}{pad}", plan.ns_since_start(now), w = DIGITS);
            batch.extend_from_slice(&command(&[b"PUBLISH", KEY.as_bytes(), payload.as_bytes()]));
            inflight.push_back(now);
            seq += 1;
        }
        if !batch.is_empty() && wr.write_all(&batch).await.is_err() {
            break 'run;
        }
        if !sending && inflight.is_empty() {
            let _ = wr.shutdown().await;
            return (seq, out);
        }
        tokio::select! {
            biased;
            r = tokio::time::timeout(RESPONSE_TIMEOUT, rd.read(&mut buf)), if !inflight.is_empty() => {
                let n = match r {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break 'run,
                };
                // Every reply (`:N` or `-ERR …`) is one line.
                let done = Instant::now();
                for line in buf[..n].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    let Some(sent) = inflight.pop_front() else {
                        out.errors += 1;
                        continue;
                    };
                    let ok = line.first() == Some(&b':');
                    if sent >= plan.warm_end {
                        out.record(sent, done, ok, &live);
                    } else if ok {
                        live.ops.fetch_add(1, Ordering::Relaxed);
                    }
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
    }
    sh.wake_at.store(u64::MAX, Ordering::SeqCst);
    let lost = inflight.iter().filter(|s| **s >= plan.warm_end).count() as u64;
    out.errors += lost.max(1);
    live.errors.fetch_add(lost.max(1), Ordering::Relaxed);
    (seq, out)
}

/// Parses `DIGITS` ASCII digits.
fn digits(b: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for &c in b.get(..DIGITS)? {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

async fn subscriber(
    mut conn: TcpStream,
    idx: usize,
    sh: Arc<Shared>,
    head: Arc<Vec<u8>>,
    msg_len: usize,
    mut fin: watch::Receiver<Option<u64>>,
    live: Arc<Counter>,
) -> SubOutcome {
    let mut st = SubOutcome::default();
    let warm_end_ns = sh.plan.ns_since_start(sh.plan.warm_end);
    let hist = &sh.hists[idx % HIST_SHARDS];
    let mut last: Option<u64> = None;
    let far = Instant::now() + Duration::from_secs(10 * 365 * 86_400);
    let mut drain = pin!(tokio::time::sleep_until(far.into()));
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    'run: loop {
        if last.is_some_and(|n| st.expected >= n) {
            break;
        }
        tokio::select! {
            biased;
            r = conn.read(&mut chunk) => {
                let n = match r {
                    Ok(n) if n > 0 => n,
                    _ => {
                        st.errors += 1;
                        break 'run;
                    }
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut at = 0;
                while buf.len() - at >= msg_len {
                    let msg = &buf[at..at + msg_len];
                    at += msg_len;
                    let fields = msg.strip_prefix(head.as_slice()).and_then(|p| {
                        Some((digits(p)?, digits(p.get(DIGITS..)?)?))
                    });
                    let Some((seq, sent)) = fields else {
                        // Not the message this run publishes: give up.
                        st.errors += 1;
                        live.errors.fetch_add(1, Ordering::Relaxed);
                        break 'run;
                    };
                    if seq >= st.expected {
                        st.missed += seq - st.expected;
                        st.expected = seq + 1;
                    } else {
                        st.errors += 1;
                        live.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if sent >= warm_end_ns {
                        let now = sh.plan.ns_since_start(Instant::now());
                        st.deliveries += 1;
                        live.ops.fetch_add(1, Ordering::Relaxed);
                        record_ns(&mut hist.lock(), now.saturating_sub(sent).max(1));
                    }
                }
                buf.drain(..at);
                sh.advance(idx, st.expected);
            }
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
    sh.advance(idx, u64::MAX);
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_pieces() {
        assert_eq!(
            command(&[b"PUBLISH", b"k", b"v"]),
            b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nk\r\n$1\r\nv\r\n".to_vec()
        );
        assert_eq!(
            message_head(5),
            b"*3\r\n$7\r\nmessage\r\n$12\r\nbench:fanout\r\n$5\r\n".to_vec()
        );
        assert_eq!(digits(b"00000000000000000042xx"), Some(42));
        assert_eq!(digits(b"0000000000000000004x"), None);
        assert_eq!(
            address("redis://127.0.0.1:6379").ok().as_deref(),
            Some("127.0.0.1:6379")
        );
        assert!(address("ws://127.0.0.1:1/ws").is_err());
    }
}
