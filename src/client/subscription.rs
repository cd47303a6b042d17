//! Subscriptions as streams: the initial snapshot, then every change.
//!
//! A [`Subscription`] survives reconnects: the client re-subscribes it on the
//! new socket and yields one synthesized event for whatever changed while it
//! was away, so the stream never silently stops or skips a state. Dropping
//! it unsubscribes in the background.

use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures_core::Stream;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::error::{Error, Result};
use super::Inner;
pub use crate::protocol::EventKind;

/// What a subscription watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// One key.
    Key(String),
    /// Every key starting with the prefix.
    Prefix(String),
}

/// One change notification.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    /// The key that changed (absent on a prefix subscription's `lagged`).
    #[serde(default)]
    pub key: Option<String>,
    /// What happened.
    #[serde(rename = "event")]
    pub kind: EventKind,
    /// The new value, for `update` events (`Some(Value::Null)` for a JSON `null`).
    #[serde(default, deserialize_with = "present")]
    pub value: Option<Value>,
    /// The rev of the change (absent on `lagged`, and on a synthesized
    /// `delete` after a reconnect).
    #[serde(default)]
    pub rev: Option<u64>,
}

impl Event {
    /// The new value decoded as `T`; `None` for events without a value.
    pub fn value_as<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.value
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(Error::from)
    }
}

/// A member that is present is `Some`, even when it is JSON `null` (a
/// stored `null` is a value; only an absent member means "no value").
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A key's state when the subscription started (or was last resumed).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Snapshot {
    /// Whether the key existed.
    #[serde(default)]
    pub exists: bool,
    /// Its value, if it existed (`Some(Value::Null)` for a JSON `null`).
    #[serde(default, deserialize_with = "present")]
    pub value: Option<Value>,
    /// Its rev, if it existed.
    #[serde(default)]
    pub rev: Option<u64>,
}

/// Shared state of one subscription: where its events go and what its
/// consumer last heard, so a reconnect can tell what it missed.
pub(crate) struct SubState {
    pub(crate) id: u64,
    pub(crate) watch: Watch,
    tx: Mutex<Option<mpsc::UnboundedSender<Event>>>,
    /// The hub-side subscription id on the current socket (0: none).
    pub(crate) server_sub: AtomicU64,
    /// For key subscriptions: the last state handed to the consumer.
    last: Mutex<Snapshot>,
}

impl SubState {
    pub(crate) fn new(id: u64, watch: Watch) -> (Arc<Self>, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let st = Arc::new(Self {
            id,
            watch,
            tx: Mutex::new(Some(tx)),
            server_sub: AtomicU64::new(0),
            last: Mutex::new(Snapshot {
                exists: false,
                value: None,
                rev: None,
            }),
        });
        (st, rx)
    }

    /// Hands an event to the consumer and remembers the state it implies.
    pub(crate) fn deliver(&self, ev: Event) {
        if matches!(self.watch, Watch::Key(_)) {
            let mut last = self.last.lock();
            match ev.kind {
                EventKind::Update => {
                    *last = Snapshot {
                        exists: true,
                        value: ev.value.clone(),
                        rev: ev.rev,
                    }
                }
                EventKind::Delete | EventKind::Expire => {
                    *last = Snapshot {
                        exists: false,
                        value: None,
                        rev: ev.rev,
                    }
                }
                EventKind::Lagged => {}
            }
        }
        if let Some(tx) = &*self.tx.lock() {
            let _ = tx.send(ev);
        }
    }

    /// Ends the consumer's stream (client closed, or reconnecting gave up).
    pub(crate) fn end(&self) {
        self.tx.lock().take();
    }

    /// Records the snapshot a (re)subscription returned as the known state.
    pub(crate) fn set_known(&self, snap: &Snapshot) {
        *self.last.lock() = snap.clone();
    }

    /// After a reconnect: the event that brings the consumer from what it
    /// last heard to `fresh`, if anything changed. `same_epoch` says whether
    /// revs are comparable (the hub did not restart).
    pub(crate) fn resume(&self, fresh: Option<&Snapshot>, same_epoch: bool) {
        let Watch::Key(key) = &self.watch else {
            // A prefix cannot tell what it missed: tell the consumer to re-list.
            self.deliver(Event {
                key: None,
                kind: EventKind::Lagged,
                value: None,
                rev: None,
            });
            return;
        };
        let Some(fresh) = fresh else { return };
        let last = self.last.lock().clone();
        let changed = last.exists != fresh.exists
            || last.value != fresh.value
            || (same_epoch && fresh.exists && last.rev != fresh.rev);
        if !changed {
            *self.last.lock() = fresh.clone();
            return;
        }
        let ev = if fresh.exists {
            Event {
                key: Some(key.clone()),
                kind: EventKind::Update,
                value: fresh.value.clone(),
                rev: fresh.rev,
            }
        } else {
            Event {
                key: Some(key.clone()),
                kind: EventKind::Delete,
                value: None,
                rev: None,
            }
        };
        self.deliver(ev);
    }
}

/// A live subscription: a `Stream` of [`Event`]s. Dropping it unsubscribes.
pub struct Subscription {
    pub(crate) state: Arc<SubState>,
    pub(crate) rx: mpsc::UnboundedReceiver<Event>,
    pub(crate) initial: Option<Snapshot>,
    pub(crate) client: Weak<Inner>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("watch", &self.state.watch)
            .field("initial", &self.initial)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The key's state when the subscription started (key subscriptions
    /// only); events follow from there.
    pub fn initial(&self) -> Option<&Snapshot> {
        self.initial.as_ref()
    }

    /// What this subscription watches.
    pub fn watch(&self) -> &Watch {
        &self.state.watch
    }

    /// The next event; `None` once the client was closed or gave up
    /// reconnecting (after `max_retry` failed attempts).
    pub async fn next_event(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for Subscription {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(inner) = self.client.upgrade() {
            inner.forget_subscription(&self.state);
        }
    }
}
