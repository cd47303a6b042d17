//! Counters and gauges the hub exposes at `/metrics` in Prometheus text format.
//!
//! Every counter a request touches is created at start-up and kept in a flat
//! table, so counting a request is one atomic add: no label lookup, no lock,
//! and no label value ever comes from a client (unknown methods count as
//! `other`). This module only counts; it never decides anything.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::methods::Method;
use crate::locks::Locks;
use crate::store::Store;

type Labels = [(&'static str, &'static str); 2];

/// The hub's metrics registry and direct handles to its hot counters.
pub struct Metrics {
    registry: Registry,
    requests: Vec<[Counter; 2]>,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Connections accepted since start.
    pub connections_total: Counter,
    /// Upgrades refused (token, origin, protected mode, cap).
    pub connections_rejected: Counter,
    /// Connections dropped because they took no bytes for `slow_client_timeout`.
    pub slow_clients: Counter,
    keys: Gauge,
    subscriptions: Gauge,
    rev: Gauge,
    locks_held: Gauge,
    lock_waiters: Gauge,
    /// Event notifications written to sockets.
    pub events_sent: Counter,
    /// Times a subscription fell behind and was marked lagged.
    pub lagged: Counter,
    /// Bytes of WebSocket payload received.
    pub bytes_in: Counter,
    /// Bytes of WebSocket payload sent.
    pub bytes_out: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("memhub");
        let family = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "JSON-RPC requests handled, by method and outcome",
            family.clone(),
        );
        let counter = |method: Method, outcome: &'static str| -> Counter {
            // Bind the guard in its own statement: holding two at once deadlocks.
            let c = family.get_or_create(&[("method", method.as_str()), ("outcome", outcome)]);
            c.clone()
        };
        let requests = Method::ALL
            .iter()
            .map(|&m| [counter(m, "ok"), counter(m, "error")])
            .collect();
        let m = Self {
            registry,
            requests,
            connections: Gauge::default(),
            connections_total: Counter::default(),
            connections_rejected: Counter::default(),
            slow_clients: Counter::default(),
            keys: Gauge::default(),
            subscriptions: Gauge::default(),
            rev: Gauge::default(),
            locks_held: Gauge::default(),
            lock_waiters: Gauge::default(),
            events_sent: Counter::default(),
            lagged: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
        };
        let mut m = m;
        let r = &mut m.registry;
        r.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        r.register(
            "connections_accepted",
            "WebSocket connections accepted since start",
            m.connections_total.clone(),
        );
        r.register(
            "connections_rejected",
            "WebSocket upgrades refused (token, browser origin, protected mode or connection cap)",
            m.connections_rejected.clone(),
        );
        r.register(
            "slow_clients_disconnected",
            "Connections dropped for taking none of their responses for slow_client_timeout (close code 1008)",
            m.slow_clients.clone(),
        );
        r.register("keys", "Keys stored", m.keys.clone());
        r.register(
            "subscriptions",
            "Live subscriptions",
            m.subscriptions.clone(),
        );
        r.register("rev", "Highest rev handed out", m.rev.clone());
        r.register("locks_held", "Locks currently held", m.locks_held.clone());
        r.register(
            "lock_waiters",
            "Lock requests waiting in a queue",
            m.lock_waiters.clone(),
        );
        r.register(
            "events_sent",
            "Event notifications sent",
            m.events_sent.clone(),
        );
        r.register(
            "lagged_events",
            "Lagged events sent to subscribers that fell behind",
            m.lagged.clone(),
        );
        r.register(
            "received_bytes",
            "WebSocket payload bytes received",
            m.bytes_in.clone(),
        );
        r.register(
            "sent_bytes",
            "WebSocket payload bytes sent",
            m.bytes_out.clone(),
        );
        m
    }

    /// Counts one handled request.
    pub fn request(&self, method: Method, ok: bool) {
        self.requests[method as usize][usize::from(!ok)].inc();
    }

    /// The text exposition, with gauges read from `store` and `locks` at this instant.
    pub fn render(&self, store: &Store, locks: &Locks) -> String {
        let counts = locks.counts();
        self.locks_held
            .set(i64::try_from(counts.held).unwrap_or(i64::MAX));
        self.lock_waiters
            .set(i64::try_from(counts.waiting).unwrap_or(i64::MAX));
        self.keys
            .set(i64::try_from(store.len()).unwrap_or(i64::MAX));
        self.subscriptions
            .set(i64::try_from(store.pubsub().len()).unwrap_or(i64::MAX));
        self.rev.set(i64::try_from(store.rev()).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
