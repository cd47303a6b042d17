//! One WebSocket connection, served by one task.
//!
//! The task owns the [`Session`] and the socket. It reads frames, runs them
//! through dispatch and queues the responses in order in the connection's
//! [`Outbox`], where publishers queue events too. Once it has read what the
//! socket had (or a burst of [`BURST`] frames), it writes everything queued
//! and flushes once, so a pipelined burst costs one read and one write
//! syscall and no hand-off to another task. It also sends keepalive pings,
//! notices shutdown, turns lagged subscriptions into a `lagged` event plus
//! the key's current state, and gives up on a peer that takes no bytes for
//! `slow_client_timeout`.
//!
//! Whatever ends the connection, the session's subscriptions are removed and
//! the connection slot is released.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum_tws::{CloseCode, Error as WsError, Message, WebSocket, WebSocketError};
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Interval, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::{debug, warn};

use super::auth::Role;
use super::dispatch::{binary_frame_error, handle_frame};
use super::outbox::{Outbox, Outgoing};
use super::session::Session;
use super::Hub;
use crate::protocol::EventKind;
use crate::pubsub::{Event, Subscription};

/// Why a connection ends when its peer stops reading.
const SLOW_CLIENT: &str = "the client stopped reading its responses";
/// Why a connection ends when its socket fails.
const WRITE_FAILED: &str = "socket write failed";

/// Most frames read before what is queued is written: a client that keeps
/// sending still gets its answers at least this often.
const BURST: u8 = 32;

/// Most queue slots a connection keeps between batches (see `poll_write`).
const KEEP_ITEMS: usize = 64;

/// Most frames buffered while one request waits; past it (or past the
/// message size limit in bytes) the hub stops reading until the wait ends.
const BACKLOG_MAX: usize = 1024;

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
    let mut session = Session::new(hub.clone(), outbox.clone(), role);
    let mut conn = Conn::new(socket, &hub, outbox.clone());
    let reason = conn.serve(&mut session).await;

    // Unsubscribe before the socket is gone, so no publisher works for us.
    drop(session);
    outbox.close();
    if reason != WRITE_FAILED {
        // Send what is queued (a close frame among it), within a grace
        // period: a stuck peer that reads again in time still gets its 1008.
        let grace = hub
            .config
            .shutdown_grace
            .min(std::time::Duration::from_secs(2));
        let _ = tokio::time::timeout(grace, conn.finish()).await;
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

/// The socket and everything the connection's task juggles around it.
struct Conn {
    ws: WebSocket,
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    /// Registered once, so that a shutdown wakes a waiting connection; the
    /// check itself is [`Hub::is_stopping`].
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    shutdown_watched: bool,
    ping: Interval,
    /// Ping ticks since the peer last sent anything (the connection's
    /// opening counts as one tick): a counter instead of a clock read per
    /// message.
    quiet_ticks: u8,
    /// Frames read since the last write.
    burst: u8,
    /// Frames read while a request waits, to run in order afterwards.
    backlog: VecDeque<(Message, usize)>,
    backlog_bytes: usize,
    /// The batch being written, taken from the outbox, in queue order.
    writing: VecDeque<Outgoing>,
    /// Subscriptions that dropped events: caught up after `writing`.
    lagged: Vec<Arc<Subscription>>,
    /// Frames were written since the last flush.
    unflushed: bool,
    /// A close frame was written: nothing follows it.
    closing: bool,
    /// Armed while a write waits for the peer to take bytes.
    stall: Option<Pin<Box<Sleep>>>,
    stall_armed: bool,
}

impl Conn {
    fn new(ws: WebSocket, hub: &Arc<Hub>, outbox: Arc<Outbox>) -> Self {
        let interval = hub.config.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            ws,
            hub: hub.clone(),
            outbox,
            shutdown: Box::pin(hub.shutdown.clone().cancelled_owned()),
            shutdown_watched: false,
            ping,
            quiet_ticks: 1,
            burst: 0,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            writing: VecDeque::new(),
            lagged: Vec::new(),
            unflushed: false,
            closing: false,
            stall: None,
            stall_armed: false,
        }
    }

    /// Reads and answers frames until the connection ends; returns why.
    async fn serve(&mut self, session: &mut Session) -> &'static str {
        loop {
            let msg = match self.backlog.pop_front() {
                Some((m, len)) => {
                    self.backlog_bytes -= len;
                    m
                }
                None => match poll_fn(|cx| self.poll_io(cx, true)).await {
                    Ok(m) => m,
                    Err(why) => return why,
                },
            };
            let reply = if let Some(text) = msg.as_text() {
                self.hub.metrics.bytes_in.inc_by(text.len() as u64);
                // Built in place and lent pinned: moved into `run_frame`
                // by value, the frame's future (large: it can hold a
                // lock wait) was copied on every request.
                let frame = pin!(handle_frame(session, text));
                match self.run_frame(frame).await {
                    Ok(reply) => reply,
                    Err(why) => return why,
                }
            } else if msg.is_binary() {
                let len = msg.as_payload().len();
                self.hub.metrics.bytes_in.inc_by(len as u64);
                self.hub
                    .metrics
                    .request(super::methods::Method::Other, false);
                Some(binary_frame_error())
            } else if msg.is_close() {
                return "closed by peer";
            } else {
                continue;
            };
            match reply {
                Some(resp) => {
                    if let Err(why) = self.respond(resp).await {
                        return why;
                    }
                }
                None => self.outbox.announce(),
            }
        }
    }

    /// The connection's one wait. Returns the next frame when `read` (a
    /// frame the socket already has comes back at once, up to [`BURST`]
    /// in a row); otherwise, or when there is none, writes what is queued,
    /// keeps the connection alive and watches for shutdown and a stuck
    /// peer. With `read` false it only ever ends with an error.
    fn poll_io(&mut self, cx: &mut Context<'_>, read: bool) -> Poll<Result<Message, &'static str>> {
        if self.hub.is_stopping() {
            return Poll::Ready(Err(self.shut_down()));
        }
        let mut polled = false;
        if read && self.burst < BURST {
            polled = true;
            if let Poll::Ready(msg) = self.ws.poll_next_unpin(cx) {
                self.burst += 1;
                return Poll::Ready(self.heard(msg));
            }
        }
        self.burst = 0;
        match self.poll_write(cx) {
            Poll::Ready(Err(why)) => return Poll::Ready(Err(why)),
            Poll::Ready(Ok(())) => self.stall_armed = false,
            Poll::Pending => {
                if self.stalled(cx) {
                    self.hub.metrics.slow_clients.inc();
                    self.outbox
                        .close_with(CloseCode::POLICY_VIOLATION, "not reading responses");
                    return Poll::Ready(Err(SLOW_CLIENT));
                }
            }
        }
        if !self.shutdown_watched {
            self.shutdown_watched = true;
            if self.shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(self.shut_down()));
            }
        }
        if read {
            if !polled {
                if let Poll::Ready(msg) = self.ws.poll_next_unpin(cx) {
                    self.burst = 1;
                    return Poll::Ready(self.heard(msg));
                }
            }
            // The peer is heard only while it is read: ticks count then.
            if self.ping.poll_tick(cx).is_ready() {
                if let Err(why) = self.keepalive() {
                    return Poll::Ready(Err(why));
                }
                // Come back to write the ping (and to register the next tick).
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }

    /// True once the write that is waiting has waited `slow_client_timeout`
    /// (the timer starts with the first wait, and stops with a flush).
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.hub.config.slow_client_timeout;
        let timer = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.stall_armed {
            self.stall_armed = true;
            timer.as_mut().reset(Instant::now() + limit);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// Writes until the outbox is empty and everything is flushed (then
    /// `Ready(Ok)`, with this task registered for the next event), or until
    /// the socket takes no more (`Pending`).
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
        loop {
            while !self.closing && (!self.writing.is_empty() || !self.lagged.is_empty()) {
                ready!(self.ws.poll_ready_unpin(cx)).map_err(|_| WRITE_FAILED)?;
                let msg = match self.writing.pop_front() {
                    Some(item) => match self.encode(item) {
                        Some(msg) => msg,
                        None => continue,
                    },
                    None => {
                        // The batch is written: catch up its lagged
                        // subscriptions, in order, with frames of their own.
                        let subs = std::mem::take(&mut self.lagged);
                        for sub in &subs {
                            self.catch_up(sub);
                        }
                        continue;
                    }
                };
                match self.ws.start_send_unpin(msg) {
                    Ok(()) => {}
                    // The socket answered a protocol violation or an
                    // oversized frame with a close frame of its own: nothing
                    // may follow it, and `finish` flushes it.
                    Err(WebSocketError::Internal(WsError::AlreadyClosed)) => self.closing = true,
                    Err(_) => return Poll::Ready(Err(WRITE_FAILED)),
                }
                self.unflushed = true;
            }
            if self.unflushed {
                ready!(self.ws.poll_flush_unpin(cx)).map_err(|_| WRITE_FAILED)?;
                self.unflushed = false;
                self.stall_armed = false;
            }
            if self.closing {
                self.writing.clear();
                self.lagged.clear();
                return Poll::Ready(Ok(()));
            }
            // The emptied buffer goes to the outbox in exchange for the
            // queue: a burst's worth of room is kept, a rare huge batch's
            // is not (it would stay with the connection for good). The
            // lagged list needs no such care: it is taken whole, and left
            // empty without capacity, whenever it holds anything.
            if self.writing.capacity() > KEEP_ITEMS {
                self.writing = VecDeque::new();
            }
            if !self
                .outbox
                .take(&mut self.writing, &mut self.lagged, cx.waker())
            {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// The message for one queued item; `None` for an event that must not
    /// be sent (its subscription ended, or a catch-up already covered it).
    fn encode(&mut self, item: Outgoing) -> Option<Message> {
        let m = &self.hub.metrics;
        match item {
            Outgoing::Frame(text) => {
                m.bytes_out.inc_by(text.len() as u64);
                Some(Message::text(text))
            }
            Outgoing::Event(sub, ev) => {
                if !sub.live.load(Ordering::Relaxed) {
                    return None;
                }
                // A key's events arrive in rev order; skip what a catch-up
                // snapshot already covered. (A prefix spans keys whose events
                // interleave across shards, so revs there are not monotonic.)
                if sub.key().is_some() {
                    if ev.rev <= sub.last_rev.load(Ordering::SeqCst) {
                        return None;
                    }
                    sub.last_rev.store(ev.rev, Ordering::SeqCst);
                }
                let frame = self.event_frame(&sub, &ev);
                m.bytes_out.inc_by(frame.len() as u64);
                Some(Message::text(frame))
            }
            Outgoing::Ping => Some(Message::ping(Bytes::new())),
            Outgoing::Close(code, reason) => {
                self.closing = true;
                Some(Message::close(Some(code), &reason))
            }
        }
    }

    /// One event's frame for `sub`, counted as an event sent (its bytes
    /// are counted where it is written).
    fn event_frame(&self, sub: &Subscription, ev: &Event) -> Bytes {
        let frame = ev.frame(sub.id);
        self.hub.metrics.events_sent.inc();
        Bytes::from(frame)
    }

    /// Queues, for writing next, the news that `sub` fell behind and, for
    /// a key, the key's current state. A key subscriber whose last
    /// delivered rev already covers the current state lost nothing (an
    /// earlier catch-up covered the dropped events) and hears nothing, so
    /// it never sees the same state twice.
    fn catch_up(&mut self, sub: &Arc<Subscription>) {
        if !sub.live.load(Ordering::Relaxed) {
            return;
        }
        let hub = self.hub.clone();
        let Some(key) = sub.key() else {
            hub.metrics.lagged.inc();
            let frame = self.event_frame(sub, &Event::lagged(None));
            self.writing.push_back(Outgoing::Frame(frame));
            return;
        };
        let snap = hub.store.snapshot(key);
        if snap.rev <= sub.last_rev.load(Ordering::SeqCst) {
            return;
        }
        hub.metrics.lagged.inc();
        let lagged = self.event_frame(sub, &Event::lagged(Some(key)));
        self.writing.push_back(Outgoing::Frame(lagged));
        let state = match &snap.entry {
            Some(e) => Event::change(key, EventKind::Update, Some(&e.value), e.rev),
            None => Event::change(key, EventKind::Delete, None, snap.rev),
        };
        sub.last_rev.fetch_max(snap.rev, Ordering::SeqCst);
        let state = self.event_frame(sub, &state);
        self.writing.push_back(Outgoing::Frame(state));
    }

    /// Runs one frame's handling to completion. Almost every frame completes
    /// at once; one that waits (a `lock` with `wait_ms`) keeps the socket
    /// read, events written and the keepalive running meanwhile, so a peer
    /// that goes away or falls silent abandons the wait (leaving the lock
    /// queue), and later frames are buffered to run in order afterwards.
    async fn run_frame<F: Future<Output = Option<String>>>(
        &mut self,
        mut frame: Pin<&mut F>,
    ) -> Result<Option<String>, &'static str> {
        if let Some(reply) = frame.as_mut().now_or_never() {
            return Ok(reply);
        }
        poll_fn(|cx| {
            if let Poll::Ready(reply) = frame.as_mut().poll(cx) {
                return Poll::Ready(Ok(reply));
            }
            loop {
                let room = self.backlog.len() < BACKLOG_MAX
                    && self.backlog_bytes < self.hub.config.max_message_bytes;
                match ready!(self.poll_io(cx, room)) {
                    Err(why) => return Poll::Ready(Err(why)),
                    Ok(m) if m.is_close() => return Poll::Ready(Err("closed by peer")),
                    Ok(m) if m.is_ping() || m.is_pong() => {}
                    Ok(m) => {
                        let len = m.as_payload().len();
                        self.backlog_bytes += len;
                        self.backlog.push_back((m, len));
                    }
                }
            }
        })
        .await
    }

    /// Queues a response. When the outbox is over its byte budget, writes
    /// (reading nothing) until it has room: a client that does not take
    /// its responses is not read either, and is dropped once it took no
    /// bytes for `slow_client_timeout`.
    async fn respond(&mut self, resp: String) -> Result<(), &'static str> {
        let mut resp = Some(Bytes::from(resp));
        poll_fn(|cx| {
            let mut wrote = false;
            loop {
                let Some(frame) = resp.take() else {
                    return Poll::Ready(Ok(()));
                };
                match self.outbox.try_push_response(frame) {
                    Ok(true) => return Poll::Ready(Ok(())),
                    Ok(false) => return Poll::Ready(Err(WRITE_FAILED)),
                    Err(frame) => resp = Some(frame),
                }
                if wrote {
                    return Poll::Pending;
                }
                wrote = true;
                if let Poll::Ready(Err(why)) = self.poll_io(cx, false) {
                    return Poll::Ready(Err(why));
                }
            }
        })
        .await
    }

    /// Writes what is still queued (the outbox is closed), then closes the
    /// socket.
    async fn finish(&mut self) {
        if poll_fn(|cx| self.poll_write(cx)).await.is_ok() {
            let _ = self.ws.close().await;
        }
    }

    /// Pings on schedule; fails once the peer was silent for two whole
    /// intervals (noticed at the tick that ends them: three ticks after its
    /// last message).
    fn keepalive(&mut self) -> Result<(), &'static str> {
        self.quiet_ticks = self.quiet_ticks.saturating_add(1);
        if self.quiet_ticks >= 3 {
            self.outbox
                .close_with(CloseCode::GOING_AWAY, "keepalive timeout");
            return Err("keepalive timeout");
        }
        self.outbox.push_ping();
        Ok(())
    }

    fn shut_down(&self) -> &'static str {
        self.outbox
            .close_with(CloseCode::GOING_AWAY, "hub shutting down");
        "hub shutting down"
    }

    /// Unwraps what the socket yielded. A message over the size limit ends
    /// the connection with close code 1009, a WebSocket protocol violation
    /// with the code the socket chose (1002 or 1007).
    fn heard(
        &mut self,
        msg: Option<Result<Message, WebSocketError>>,
    ) -> Result<Message, &'static str> {
        match msg {
            None => Err("closed by peer"),
            Some(Ok(m)) => {
                self.quiet_ticks = 0;
                Ok(m)
            }
            // A frame over the limit has the socket queue a 1009 close
            // itself; a message over it (frames each within) does not, and
            // gets ours, worded the same. The first one queued is sent.
            Some(Err(WebSocketError::Internal(WsError::PayloadTooLong { max_len, .. }))) => {
                self.outbox
                    .close_with(CloseCode::MESSAGE_TOO_BIG, format!("max length: {max_len}"));
                Err("message over the size limit")
            }
            // The socket queued a close frame (1002, or 1007 for text that
            // is not UTF-8); `finish` flushes it.
            Some(Err(WebSocketError::Internal(WsError::Protocol(_)))) => Err("protocol violation"),
            Some(Err(_)) => Err("transport error"),
        }
    }
}
