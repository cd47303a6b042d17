//! One WebSocket connection: a reader loop and a writer task.
//!
//! The reader owns the [`Session`], reads frames, runs them through dispatch
//! and queues the responses in order, sends keepalive pings and notices
//! shutdown. The writer drains the [`Outbox`]: it `feed`s every queued frame
//! and `flush`es once per batch, so a burst costs one syscall; it also turns
//! lagged subscriptions into a `lagged` event plus the key's current state.
//!
//! Whatever ends the connection, the session's subscriptions are removed and
//! the connection slot is released.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};

use super::auth::Role;
use super::dispatch::{binary_frame_error, handle_frame};
use super::outbox::{Batch, Outbox, Outgoing};
use super::session::Session;
use super::Hub;
use crate::protocol::EventKind;
use crate::pubsub::{Event, Subscription};

/// WebSocket close code for "going away" (shutdown, keepalive timeout).
const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code for "policy violation" (a client not reading).
const CLOSE_POLICY: u16 = 1008;
/// Why a connection ends when its peer stops reading.
const SLOW_CLIENT: &str = "the client stopped reading its responses";
/// WebSocket close code for "message too big".
const CLOSE_TOO_BIG: u16 = 1009;

/// Serves one upgraded connection until it closes. `permit` is the
/// connection's slot under the connection cap, held until the end.
pub async fn run(
    socket: WebSocket,
    hub: Arc<Hub>,
    peer: SocketAddr,
    role: Role,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    hub.metrics.connections.inc();
    hub.metrics.connections_total.inc();
    debug!(%peer, "connection opened");

    let outbox = Arc::new(Outbox::new(
        hub.config.outbound_max_events,
        hub.config.outbound_max_bytes,
    ));
    let (sink, stream) = socket.split();
    let mut writer = tokio::spawn(write_loop(sink, outbox.clone(), hub.clone()));
    let mut session = Session::new(hub.clone(), outbox.clone(), role);
    let mut input = Input::new(stream, &hub, outbox.clone());

    // Whether the writer's end was already taken by the loop below.
    let mut writer_awaited = false;
    let mut reason: &str = loop {
        let msg = match input.backlog.pop_front() {
            Some((m, len)) => {
                input.backlog_bytes -= len;
                m
            }
            // A message already buffered (the rest of a pipelined burst) is
            // taken without setting up the wait on the writer: if the writer
            // has failed meanwhile, it closed the outbox, and queuing the
            // response fails instead.
            None => match input.ready() {
                Some(Ok(m)) => m,
                Some(Err(why)) => break why,
                None => tokio::select! {
                    biased;
                    ended = &mut writer => {
                        writer_awaited = true;
                        break match ended {
                            Ok(WriterEnd::Stuck) => SLOW_CLIENT,
                            _ => "socket write failed",
                        };
                    }
                    next = input.next() => match next {
                        Ok(m) => m,
                        Err(why) => break why,
                    },
                },
            },
        };
        match msg {
            Message::Text(text) => {
                hub.metrics.bytes_in.inc_by(text.len() as u64);
                let frame = handle_frame(&mut session, text.as_str());
                let reply = match input.run_frame(frame).await {
                    Ok(reply) => reply,
                    Err(why) => break why,
                };
                match reply {
                    Some(resp) => {
                        if let Err(why) = respond(&outbox, &hub, resp).await {
                            break why;
                        }
                    }
                    None => outbox.announce(),
                }
            }
            Message::Binary(bin) => {
                hub.metrics.bytes_in.inc_by(bin.len() as u64);
                hub.metrics.request(super::methods::Method::Other, false);
                if let Err(why) = respond(&outbox, &hub, binary_frame_error()).await {
                    break why;
                }
            }
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => break "closed by peer",
        }
    };

    // Unsubscribe before the socket is gone, so no publisher works for us.
    drop(session);
    outbox.close();
    if writer.is_finished() {
        // The writer ended while the reader was busy (queuing a response
        // then failed): its end names the cause.
        if !writer_awaited && matches!((&mut writer).await, Ok(WriterEnd::Stuck)) {
            reason = SLOW_CLIENT;
        }
    } else {
        let grace = hub
            .config
            .shutdown_grace
            .min(std::time::Duration::from_secs(2));
        if tokio::time::timeout(grace, &mut writer).await.is_err() {
            writer.abort();
        }
    }
    hub.metrics.connections.dec();
    if reason == SLOW_CLIENT {
        warn!(
            %peer,
            "disconnected a client that read nothing for {:?} (close code 1008)",
            hub.config.slow_client_timeout
        );
    }
    debug!(%peer, reason, "connection closed");
}

/// Most frames buffered while one request waits; past it (or past the
/// message size limit in bytes) the hub stops reading until the wait ends.
const BACKLOG_MAX: usize = 1024;

/// The read side of a connection: the socket, keepalive, shutdown, and the
/// frames buffered while a request waits.
struct Input {
    stream: SplitStream<WebSocket>,
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    ping: tokio::time::Interval,
    /// Ping ticks since the peer last sent anything (the connection's
    /// opening counts as one tick): a counter instead of a clock read per
    /// message.
    quiet_ticks: u8,
    backlog: VecDeque<(Message, usize)>,
    backlog_bytes: usize,
}

impl Input {
    fn new(stream: SplitStream<WebSocket>, hub: &Arc<Hub>, outbox: Arc<Outbox>) -> Self {
        let interval = hub.config.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            stream,
            hub: hub.clone(),
            outbox,
            ping,
            quiet_ticks: 1,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
        }
    }

    /// Pings on schedule; fails once the peer was silent for two whole
    /// intervals (noticed at the tick that ends them: three ticks after its
    /// last message).
    fn keepalive(&mut self) -> Result<(), &'static str> {
        self.quiet_ticks = self.quiet_ticks.saturating_add(1);
        if self.quiet_ticks >= 3 {
            self.outbox
                .close_with(CLOSE_GOING_AWAY, "keepalive timeout");
            return Err("keepalive timeout");
        }
        self.outbox.push_ping();
        Ok(())
    }

    fn shut_down(&self) -> &'static str {
        self.outbox
            .close_with(CLOSE_GOING_AWAY, "hub shutting down");
        "hub shutting down"
    }

    fn heard(
        &mut self,
        msg: Option<Result<Message, axum::Error>>,
    ) -> Result<Message, &'static str> {
        let m = read_result(msg, &self.outbox)?;
        self.quiet_ticks = 0;
        Ok(m)
    }

    /// A message the socket already has, without waiting: `None` when there
    /// is none yet (then wait with [`Input::next`]). Most calls after the
    /// first of a burst find one, and skip registering with the shutdown
    /// token and the ping timer (a peer that keeps sending is alive; the
    /// ticks it skips are made up once it pauses).
    fn ready(&mut self) -> Option<Result<Message, &'static str>> {
        if self.hub.shutdown.is_cancelled() {
            return Some(Err(self.shut_down()));
        }
        let msg = self.stream.next().now_or_never()?;
        Some(self.heard(msg))
    }

    /// The next message from the socket, keeping the connection alive meanwhile.
    async fn next(&mut self) -> Result<Message, &'static str> {
        loop {
            tokio::select! {
                biased;
                _ = self.hub.shutdown.cancelled() => return Err(self.shut_down()),
                msg = self.stream.next() => return self.heard(msg),
                _ = self.ping.tick() => self.keepalive()?,
            }
        }
    }

    /// Runs one frame's handling to completion. Almost every frame completes
    /// at once; one that waits (a `lock` with `wait_ms`) keeps the socket
    /// read and the keepalive running meanwhile, so a peer that goes away or
    /// falls silent abandons the wait (leaving the lock queue), and later
    /// frames are buffered to run in order afterwards.
    async fn run_frame(
        &mut self,
        frame: impl Future<Output = Option<String>>,
    ) -> Result<Option<String>, &'static str> {
        let mut frame = std::pin::pin!(frame);
        // Almost every frame is answered on its first poll: no select! then.
        if let Some(reply) = frame.as_mut().now_or_never() {
            return Ok(reply);
        }
        loop {
            let room = self.backlog.len() < BACKLOG_MAX
                && self.backlog_bytes < self.hub.config.max_message_bytes;
            tokio::select! {
                biased;
                reply = &mut frame => return Ok(reply),
                _ = self.hub.shutdown.cancelled() => return Err(self.shut_down()),
                msg = self.stream.next(), if room => match self.heard(msg)? {
                    Message::Close(_) => return Err("closed by peer"),
                    Message::Ping(_) | Message::Pong(_) => {}
                    m => {
                        let len = match &m {
                            Message::Text(t) => t.len(),
                            Message::Binary(b) => b.len(),
                            _ => 0,
                        };
                        self.backlog_bytes += len;
                        self.backlog.push_back((m, len));
                    }
                },
                _ = self.ping.tick() => self.keepalive()?,
            }
        }
    }
}

/// Unwraps what the socket yielded; a message over the size limit closes
/// the connection with 1009.
fn read_result(
    msg: Option<Result<Message, axum::Error>>,
    outbox: &Outbox,
) -> Result<Message, &'static str> {
    match msg {
        None => Err("closed by peer"),
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) if is_too_big(&e) => {
            outbox.close_with(CLOSE_TOO_BIG, "message too big");
            Err("message over the size limit")
        }
        Some(Err(_)) => Err("protocol or transport error"),
    }
}

/// Queues a response, waiting for room; gives up on shutdown (closing with
/// 1001) or when the writer is gone.
async fn respond(outbox: &Outbox, hub: &Hub, resp: String) -> Result<(), &'static str> {
    // Almost always there is room: queue without arming a timer.
    let resp = match outbox.try_push_response(Utf8Bytes::from(resp)) {
        Ok(true) => return Ok(()),
        Ok(false) => return Err("socket write failed"),
        Err(resp) => resp,
    };
    tokio::select! {
        queued = outbox.push_response(resp) => {
            if queued { Ok(()) } else { Err("socket write failed") }
        }
        _ = hub.shutdown.cancelled() => {
            outbox.close_with(CLOSE_GOING_AWAY, "hub shutting down");
            Err("hub shutting down")
        }
        _ = tokio::time::sleep(hub.config.slow_client_timeout) => {
            outbox.close_with(CLOSE_POLICY, "not reading responses");
            Err(SLOW_CLIENT)
        }
    }
}

fn is_too_big(err: &axum::Error) -> bool {
    let inner = std::error::Error::source(err);
    matches!(
        inner.and_then(|e| e.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// How the writer task ended.
enum WriterEnd {
    /// The queue closed and everything was written.
    Done,
    /// The socket failed.
    Failed,
    /// The peer took no bytes for `slow_client_timeout`.
    Stuck,
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    outbox: Arc<Outbox>,
    hub: Arc<Hub>,
) -> WriterEnd {
    let limit = hub.config.slow_client_timeout;
    while let Some(batch) = outbox.next_batch().await {
        // A peer that takes no bytes for this long is stuck; give up on it
        // (no close frame can get through a full socket).
        let write = std::pin::pin!(write_batch(&mut sink, batch, &hub));
        match within(limit, write).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => break,
            Ok(Err(_)) => {
                outbox.close();
                return WriterEnd::Failed;
            }
            Err(_) => {
                outbox.close();
                return WriterEnd::Stuck;
            }
        }
    }
    let _ = sink.close().await;
    WriterEnd::Done
}

/// Runs `fut` to completion, failing if it waits longer than `limit`. The
/// timer is armed only if the first poll leaves it waiting: almost every
/// batch fits the socket at once, and a timer per batch was 5 % of the hub's
/// CPU when it fans events out to 1,000 subscribers. Takes the future
/// pinned by the caller: moved in by value, it would be stored twice in this
/// function's state (the argument and the pinned copy), which cost every
/// connection's writer task 0.8 KiB.
async fn within<F: Future>(
    limit: std::time::Duration,
    mut fut: std::pin::Pin<&mut F>,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(out) => Ok(out),
        Poll::Pending => tokio::time::timeout(limit, fut).await,
    }
}

/// Writes one batch and flushes; `Ok(false)` after a close frame.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: Batch,
    hub: &Hub,
) -> Result<bool, axum::Error> {
    let m = &hub.metrics;
    let mut keep_going = true;
    for item in batch.items {
        match item {
            Outgoing::Frame(text) => {
                m.bytes_out.inc_by(text.len() as u64);
                sink.feed(Message::Text(text)).await?;
            }
            Outgoing::Event(sub, ev) => {
                if !sub.live.load(Ordering::Relaxed) {
                    continue;
                }
                // A key's events arrive in rev order; skip what a catch-up
                // snapshot already covered. (A prefix spans keys whose events
                // interleave across shards, so revs there are not monotonic.)
                if sub.key().is_some() {
                    if ev.rev <= sub.last_rev.load(Ordering::SeqCst) {
                        continue;
                    }
                    sub.last_rev.store(ev.rev, Ordering::SeqCst);
                }
                send_event(sink, &sub, &ev, hub).await?;
            }
            Outgoing::Ping => sink.feed(Message::Ping(Default::default())).await?,
            Outgoing::Close(code, reason) => {
                sink.feed(Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                })))
                .await?;
                keep_going = false;
                break;
            }
        }
    }
    if keep_going {
        for sub in batch.lagged {
            catch_up(sink, &sub, hub).await?;
        }
    }
    sink.flush().await?;
    Ok(keep_going)
}

async fn send_event(
    sink: &mut SplitSink<WebSocket, Message>,
    sub: &Subscription,
    ev: &Event,
    hub: &Hub,
) -> Result<(), axum::Error> {
    let frame = ev.frame(sub.id);
    hub.metrics.bytes_out.inc_by(frame.len() as u64);
    hub.metrics.events_sent.inc();
    sink.feed(Message::Text(Utf8Bytes::from(frame))).await
}

/// Tells a subscriber it fell behind and, for a key, sends the current state.
/// A key subscriber whose last delivered rev already covers the current state
/// lost nothing (an earlier catch-up covered the dropped events) and hears
/// nothing, so it never sees the same state twice.
async fn catch_up(
    sink: &mut SplitSink<WebSocket, Message>,
    sub: &Arc<Subscription>,
    hub: &Hub,
) -> Result<(), axum::Error> {
    if !sub.live.load(Ordering::Relaxed) {
        return Ok(());
    }
    let Some(key) = sub.key() else {
        hub.metrics.lagged.inc();
        return send_event(sink, sub, &Event::lagged(None), hub).await;
    };
    let snap = hub.store.snapshot(key);
    if snap.rev <= sub.last_rev.load(Ordering::SeqCst) {
        return Ok(());
    }
    hub.metrics.lagged.inc();
    send_event(sink, sub, &Event::lagged(Some(key)), hub).await?;
    let state = match &snap.entry {
        Some(e) => Event::change(key, EventKind::Update, Some(&e.value), e.rev),
        None => Event::change(key, EventKind::Delete, None, snap.rev),
    };
    sub.last_rev.fetch_max(snap.rev, Ordering::SeqCst);
    send_event(sink, sub, &state, hub).await
}
