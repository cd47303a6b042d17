//! The bounded queue of what a connection's task writes to its socket: its
//! own responses, and the events every writer in the hub publishes to it.
//!
//! Two kinds of traffic share it, in the order they were queued:
//! - **responses** are never dropped; when the queue holds more than its byte
//!   budget, the connection writes before it queues another (and reads
//!   nothing meanwhile), so a client that does not read its responses stops
//!   being read (TCP backpressure);
//! - **events** never wait: when the queue is full (events or bytes), the
//!   subscription is marked lagged and the event dropped; the writer later
//!   sends `lagged` and, for a key subscription, the key's current state.
//!
//! A new subscription is *pending* until the response announcing it is
//! queued; events for it meanwhile are held back, so no event overtakes the
//! response that tells the client its subscription id.
//!
//! This module never touches the socket or the keyspace.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum_tws::CloseCode;
use bytes::Bytes;
use std::task::Waker;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

use crate::pubsub::{Event, EventSink, Subscription};

/// One item for the socket writer.
#[derive(Debug)]
pub enum Outgoing {
    /// A response (or error) text frame.
    Frame(Bytes),
    /// An event for one subscription, encoded by the writer.
    Event(Arc<Subscription>, Arc<Event>),
    /// A keepalive ping.
    Ping,
    /// A close frame; nothing is written after it.
    Close(CloseCode, Cow<'static, str>),
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

/// A connection's outbound queue. See the module docs for its guarantees.
pub struct Outbox {
    state: Mutex<State>,
    /// The connection task, when it found the queue empty.
    writer: AtomicWaker,
    max_events: usize,
    max_bytes: usize,
}

impl Outbox {
    /// An empty queue admitting at most `max_events` events or `max_bytes` bytes.
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            writer: AtomicWaker::new(),
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Queues a response if the queue is within its byte budget: `Ok(true)`
    /// when queued, `Ok(false)` when the outbox is closed, and the frame
    /// back when the connection has to write (take a batch) first. Announces
    /// every pending subscription right after the response. Wakes nobody:
    /// only the connection's own task queues responses, and it writes what
    /// is queued before it waits.
    pub fn try_push_response(&self, frame: Bytes) -> Result<bool, Bytes> {
        let mut st = self.state.lock();
        if st.closed {
            return Ok(false);
        }
        if st.bytes >= self.max_bytes && !st.queue.is_empty() {
            return Err(frame);
        }
        st.bytes += frame.len();
        st.queue.push_back(Outgoing::Frame(frame));
        self.announce_locked(&mut st);
        Ok(true)
    }

    /// Announces pending subscriptions when a frame produced no response.
    pub fn announce(&self) {
        self.announce_locked(&mut self.state.lock());
    }

    /// Marks `sub` pending until the next response is queued (or `announce`).
    pub fn add_pending(&self, sub: &Arc<Subscription>) {
        self.state.lock().pending.push(sub.clone());
    }

    fn announce_locked(&self, st: &mut State) {
        // The common case, a response with no subscription waiting on it.
        if st.pending.is_empty() && st.held.is_empty() && st.held_lagged.is_empty() {
            return;
        }
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

    /// Queues a keepalive ping (never waits; the connection's task queues
    /// it and writes it before it waits again).
    pub fn push_ping(&self) {
        let mut st = self.state.lock();
        if !st.closed {
            st.queue.push_back(Outgoing::Ping);
        }
    }

    /// Queues a close frame and closes the queue: the connection sends what
    /// is queued, then the close frame, then nothing more.
    pub fn close_with(&self, code: CloseCode, reason: impl Into<Cow<'static, str>>) {
        let mut st = self.state.lock();
        if !st.closed {
            st.queue.push_back(Outgoing::Close(code, reason.into()));
            st.closed = true;
        }
    }

    /// Closes the queue without a close frame: what is queued can still be
    /// taken; later pushes are ignored.
    pub fn close(&self) {
        self.state.lock().closed = true;
    }

    /// Moves everything queued into `items` and `lagged` (the subscriptions
    /// that dropped events since the last take; both must be empty) and
    /// resets the byte and event budget: true if there was anything. When
    /// there is nothing, `waker` is woken by the next event published to the
    /// queue. The two buffers are swapped with the queue's, so a connection
    /// that keeps reusing them allocates nothing per batch.
    pub fn take(
        &self,
        items: &mut VecDeque<Outgoing>,
        lagged: &mut Vec<Arc<Subscription>>,
        waker: &Waker,
    ) -> bool {
        debug_assert!(items.is_empty() && lagged.is_empty());
        let mut st = self.state.lock();
        if st.queue.is_empty() && st.lagged.is_empty() {
            // Registered under the lock: a publisher that queues after this
            // check finds the queue empty and wakes this waker.
            self.writer.register(waker);
            return false;
        }
        std::mem::swap(&mut st.queue, items);
        std::mem::swap(&mut st.lagged, lagged);
        for sub in lagged.iter() {
            sub.lagged.store(false, Ordering::SeqCst);
        }
        st.events = 0;
        st.bytes = 0;
        true
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
        // Whoever made the queue non-empty already woke the connection,
        // which takes everything queued when it looks: one wake-up per batch.
        let was_idle = st.queue.is_empty() && st.lagged.is_empty();
        self.push_event_locked(&mut st, sub, event.clone());
        drop(st);
        if was_idle {
            self.writer.wake();
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

    /// What the connection would take now: items and lagged subscriptions.
    fn take(outbox: &Outbox) -> Option<(VecDeque<Outgoing>, Vec<Arc<Subscription>>)> {
        let (mut items, mut lagged) = (VecDeque::new(), Vec::new());
        let waker = futures_util::task::noop_waker_ref();
        outbox
            .take(&mut items, &mut lagged, waker)
            .then_some((items, lagged))
    }

    fn respond(outbox: &Outbox) {
        assert!(matches!(
            outbox.try_push_response(Bytes::from_static(b"{}")),
            Ok(true)
        ));
    }

    #[test]
    fn pending_events_follow_the_response_and_overflow_lags() {
        let outbox = Arc::new(Outbox::new(2, 1 << 20));
        let sub = Subscription::new(1, Target::Key("k".into()), outbox.clone());
        outbox.add_pending(&sub);
        outbox.deliver(&sub, &ev(1));
        assert!(outbox.state.lock().queue.is_empty());
        respond(&outbox);
        for rev in 2..=5 {
            outbox.deliver(&sub, &ev(rev));
        }
        let (items, lagged) = take(&outbox).expect("a batch");
        assert!(matches!(items[0], Outgoing::Frame(_)));
        let revs: Vec<u64> = items
            .iter()
            .skip(1)
            .map(|i| match i {
                Outgoing::Event(_, e) => e.rev,
                _ => 0,
            })
            .collect();
        assert_eq!(revs, vec![1, 2]);
        assert_eq!(lagged.len(), 1);
        assert!(!sub.lagged.load(Ordering::SeqCst));
        outbox.close();
        assert!(take(&outbox).is_none());
    }

    #[test]
    fn held_events_are_bounded_and_lag_after_the_response() {
        let outbox = Arc::new(Outbox::new(2, 1 << 20));
        let sub = Subscription::new(1, Target::Key("k".into()), outbox.clone());
        outbox.add_pending(&sub);
        for rev in 1..=1000 {
            outbox.deliver(&sub, &ev(rev));
        }
        assert!(outbox.state.lock().held.len() <= 2);
        // Nothing, not even the lag, may precede the subscribe response.
        assert!(outbox.state.lock().lagged.is_empty());
        respond(&outbox);
        let (items, lagged) = take(&outbox).expect("a batch");
        assert_eq!(items.len(), 1, "only the response is queued");
        assert!(matches!(items[0], Outgoing::Frame(_)));
        assert_eq!(lagged.len(), 1);
    }

    #[test]
    fn a_response_over_the_byte_budget_waits_for_a_take() {
        let outbox = Outbox::new(8, 4);
        respond(&outbox);
        let again = outbox.try_push_response(Bytes::from_static(b"{}"));
        assert!(again.is_ok(), "under the budget (2 of 4 bytes)");
        let over = outbox.try_push_response(Bytes::from_static(b"{}"));
        assert!(over.is_err(), "the budget is used up until the next take");
        assert!(take(&outbox).is_some());
        respond(&outbox);
    }

    #[test]
    fn an_event_into_an_empty_queue_wakes_the_connection() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let outbox = Arc::new(Outbox::new(8, 1 << 20));
        let sub = Subscription::new(1, Target::Key("k".into()), outbox.clone());
        outbox.add_pending(&sub);
        outbox.announce();
        let (mut items, mut lagged) = (VecDeque::new(), Vec::new());
        assert!(!outbox.take(&mut items, &mut lagged, &waker));
        outbox.deliver(&sub, &ev(1));
        outbox.deliver(&sub, &ev(2));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake-up per batch");
        assert!(outbox.take(&mut items, &mut lagged, &waker));
        assert_eq!(items.len(), 2);
    }
}
