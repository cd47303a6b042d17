//! The bounded queue between a connection's reader (and every writer in the
//! hub that publishes to it) and the task that writes its socket.
//!
//! Two kinds of traffic share it, in the order they were queued:
//! - **responses** are never dropped; when the queue holds more than its byte
//!   budget, the reader waits before queuing another, so a client that does
//!   not read its responses stops being read (TCP backpressure);
//! - **events** never wait: when the queue is full (events or bytes), the
//!   subscription is marked lagged and the event dropped; the writer later
//!   sends `lagged` and, for a key subscription, the key's current state.
//!
//! A new subscription is *pending* until the response announcing it is
//! queued; events for it meanwhile are held back, so no event overtakes the
//! response that tells the client its subscription id.
//!
//! This module never touches the socket or the keyspace.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::pubsub::{Event, EventSink, Subscription};

/// One item for the socket writer.
#[derive(Debug)]
pub enum Outgoing {
    /// A response (or error) text frame.
    Frame(Utf8Bytes),
    /// An event for one subscription, encoded by the writer.
    Event(Arc<Subscription>, Arc<Event>),
    /// A keepalive ping.
    Ping,
    /// A close frame; nothing is written after it.
    Close(u16, &'static str),
}

#[derive(Default)]
struct State {
    queue: VecDeque<Outgoing>,
    events: usize,
    bytes: usize,
    lagged: Vec<Arc<Subscription>>,
    pending: Vec<Arc<Subscription>>,
    held: Vec<(Arc<Subscription>, Arc<Event>)>,
    held_bytes: usize,
    /// Pending subscriptions whose held events overflowed; lagged once announced.
    held_lagged: Vec<Arc<Subscription>>,
    closed: bool,
}

/// What the writer takes in one go.
#[derive(Default)]
pub struct Batch {
    /// Items in queue order.
    pub items: Vec<Outgoing>,
    /// Subscriptions that dropped events since the last batch.
    pub lagged: Vec<Arc<Subscription>>,
}

/// A connection's outbound queue. See the module docs for its guarantees.
pub struct Outbox {
    state: Mutex<State>,
    writer_wake: Notify,
    space: Notify,
    max_events: usize,
    max_bytes: usize,
}

impl Outbox {
    /// An empty queue admitting at most `max_events` events or `max_bytes` bytes.
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            writer_wake: Notify::new(),
            space: Notify::new(),
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Queues a response, waiting while the queue is over its byte budget.
    /// Announces every pending subscription right after it. Returns false
    /// if the outbox is closed.
    pub async fn push_response(&self, frame: Utf8Bytes) -> bool {
        let mut frame = frame;
        loop {
            let space = self.space.notified();
            match self.try_push_response(frame) {
                Ok(queued) => return queued,
                Err(f) => frame = f,
            }
            space.await;
        }
    }

    /// Queues a response if the queue is within its byte budget, without
    /// waiting: `Ok(true)` when queued, `Ok(false)` when the outbox is
    /// closed, and the frame back when the caller has to wait for room
    /// (see [`Outbox::push_response`]). Like `push_response`, it announces
    /// every pending subscription right after the response.
    pub fn try_push_response(&self, frame: Utf8Bytes) -> Result<bool, Utf8Bytes> {
        let mut st = self.state.lock();
        if st.closed {
            return Ok(false);
        }
        if st.bytes >= self.max_bytes && !st.queue.is_empty() {
            return Err(frame);
        }
        // Whoever made the queue non-empty already woke the writer, which
        // takes everything queued until it looks: one wake-up per batch.
        let was_idle = st.queue.is_empty() && st.lagged.is_empty();
        st.bytes += frame.len();
        st.queue.push_back(Outgoing::Frame(frame));
        self.announce_locked(&mut st);
        drop(st);
        if was_idle {
            self.writer_wake.notify_one();
        }
        Ok(true)
    }

    /// Announces pending subscriptions when a frame produced no response.
    pub fn announce(&self) {
        let mut st = self.state.lock();
        if !st.pending.is_empty() {
            self.announce_locked(&mut st);
            drop(st);
            self.writer_wake.notify_one();
        }
    }

    /// Marks `sub` pending until the next response is queued (or `announce`).
    pub fn add_pending(&self, sub: &Arc<Subscription>) {
        self.state.lock().pending.push(sub.clone());
    }

    fn announce_locked(&self, st: &mut State) {
        for sub in std::mem::take(&mut st.pending) {
            sub.pending.store(false, Ordering::SeqCst);
        }
        st.held_bytes = 0;
        for (sub, ev) in std::mem::take(&mut st.held) {
            self.push_event_locked(st, &sub, ev);
        }
        let overflowed = std::mem::take(&mut st.held_lagged);
        st.lagged.extend(overflowed);
    }

    fn push_event_locked(&self, st: &mut State, sub: &Arc<Subscription>, ev: Arc<Event>) {
        if sub.lagged.load(Ordering::SeqCst) {
            return;
        }
        let len = ev.wire_len();
        if st.events >= self.max_events || st.bytes + len > self.max_bytes {
            sub.lagged.store(true, Ordering::SeqCst);
            st.lagged.push(sub.clone());
            return;
        }
        st.events += 1;
        st.bytes += len;
        st.queue.push_back(Outgoing::Event(sub.clone(), ev));
    }

    /// Queues a keepalive ping (never waits).
    pub fn push_ping(&self) {
        let mut st = self.state.lock();
        if !st.closed {
            st.queue.push_back(Outgoing::Ping);
            drop(st);
            self.writer_wake.notify_one();
        }
    }

    /// Queues a close frame and closes the queue: the writer sends what is
    /// queued, then the close frame, then stops.
    pub fn close_with(&self, code: u16, reason: &'static str) {
        let mut st = self.state.lock();
        if !st.closed {
            st.queue.push_back(Outgoing::Close(code, reason));
            st.closed = true;
        }
        drop(st);
        self.writer_wake.notify_one();
        self.space.notify_waiters();
    }

    /// Closes the queue without a close frame: the writer sends what is
    /// queued and stops; later pushes are ignored.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.writer_wake.notify_one();
        self.space.notify_waiters();
    }

    /// Waits for the next batch; `None` once the queue is closed and drained.
    pub async fn next_batch(&self) -> Option<Batch> {
        loop {
            let wake = self.writer_wake.notified();
            {
                let mut st = self.state.lock();
                if !st.queue.is_empty() || !st.lagged.is_empty() {
                    let items = Vec::from(std::mem::take(&mut st.queue));
                    let lagged = std::mem::take(&mut st.lagged);
                    for sub in &lagged {
                        sub.lagged.store(false, Ordering::SeqCst);
                    }
                    st.events = 0;
                    st.bytes = 0;
                    drop(st);
                    self.space.notify_waiters();
                    return Some(Batch { items, lagged });
                }
                if st.closed {
                    return None;
                }
            }
            wake.await;
        }
    }
}

impl EventSink for Outbox {
    fn deliver(&self, sub: &Arc<Subscription>, event: &Arc<Event>) {
        let mut st = self.state.lock();
        if st.closed {
            return;
        }
        if sub.pending.load(Ordering::SeqCst) {
            // Held events obey the same bounds as queued ones: overflow marks
            // the subscription lagged, reported once it is announced.
            if sub.lagged.load(Ordering::SeqCst) {
                return;
            }
            let len = event.wire_len();
            if st.held.len() >= self.max_events || st.held_bytes + len > self.max_bytes {
                sub.lagged.store(true, Ordering::SeqCst);
                st.held_lagged.push(sub.clone());
            } else {
                st.held_bytes += len;
                st.held.push((sub.clone(), event.clone()));
            }
            return;
        }
        let was_idle = st.queue.is_empty() && st.lagged.is_empty();
        self.push_event_locked(&mut st, sub, event.clone());
        drop(st);
        if was_idle {
            self.writer_wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EventKind;
    use crate::pubsub::Target;

    fn ev(rev: u64) -> Arc<Event> {
        Arc::new(Event::change("k", EventKind::Update, Some("1"), rev))
    }

    #[tokio::test]
    async fn pending_events_follow_the_response_and_overflow_lags() {
        let outbox = Arc::new(Outbox::new(2, 1 << 20));
        let sub = Subscription::new(1, Target::Key("k".into()), outbox.clone());
        outbox.add_pending(&sub);
        outbox.deliver(&sub, &ev(1));
        assert!(outbox.state.lock().queue.is_empty());
        assert!(outbox.push_response(Utf8Bytes::from_static("{}")).await);
        for rev in 2..=5 {
            outbox.deliver(&sub, &ev(rev));
        }
        let batch = outbox.next_batch().await.unwrap();
        assert!(matches!(batch.items[0], Outgoing::Frame(_)));
        let revs: Vec<u64> = batch.items[1..]
            .iter()
            .map(|i| match i {
                Outgoing::Event(_, e) => e.rev,
                _ => 0,
            })
            .collect();
        assert_eq!(revs, vec![1, 2]);
        assert_eq!(batch.lagged.len(), 1);
        assert!(!sub.lagged.load(Ordering::SeqCst));
        outbox.close();
        assert!(outbox.next_batch().await.is_none());
    }

    #[tokio::test]
    async fn held_events_are_bounded_and_lag_after_the_response() {
        let outbox = Arc::new(Outbox::new(2, 1 << 20));
        let sub = Subscription::new(1, Target::Key("k".into()), outbox.clone());
        outbox.add_pending(&sub);
        for rev in 1..=1000 {
            outbox.deliver(&sub, &ev(rev));
        }
        assert!(outbox.state.lock().held.len() <= 2);
        // Nothing, not even the lag, may precede the subscribe response.
        assert!(outbox.state.lock().lagged.is_empty());
        assert!(outbox.push_response(Utf8Bytes::from_static("{}")).await);
        let batch = outbox.next_batch().await.unwrap();
        assert_eq!(batch.items.len(), 1, "only the response is queued");
        assert!(matches!(batch.items[0], Outgoing::Frame(_)));
        assert_eq!(batch.lagged.len(), 1);
    }
}
