//! Who watches what, and handing each change to its watchers.
//!
//! The pub/sub registry owns the subscriptions of every connection: key
//! subscriptions (sharded by key hash) and prefix subscriptions (indexed by
//! prefix length so that a write checks only the prefixes that could match).
//! [`PubSub::publish`] encodes an event **once**, shares it by `Arc` among all
//! recipients, and hands it to each subscription's [`EventSink`] without ever
//! blocking: a sink that is full marks the subscription lagged instead.
//!
//! It never reads or changes stored values, and never awaits.

use std::collections::hash_map::{Entry as MapEntry, HashMap};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::jsontext::push_str_literal;
use crate::protocol::EventKind;

const SHARDS: usize = 64;

/// One change of one key, encoded once and shared by every recipient.
#[derive(Debug)]
pub struct Event {
    /// The rev of the change (0 for a `lagged` marker).
    pub rev: u64,
    /// What happened.
    pub kind: EventKind,
    /// Everything of the notification after `"sub":N`, ready to copy.
    body: String,
}

const FRAME_HEAD: &str = r#"{"jsonrpc":"2.0","method":"event","params":{"sub":"#;

impl Event {
    /// A change event; `value` (compact JSON) is present for `update` only.
    pub fn change(key: &str, kind: EventKind, value: Option<&str>, rev: u64) -> Self {
        let mut body = String::with_capacity(key.len() + value.map_or(0, str::len) + 48);
        body.push_str(",\"key\":");
        push_str_literal(&mut body, key);
        body.push_str(",\"event\":\"");
        body.push_str(kind.as_str());
        body.push('"');
        if let Some(v) = value {
            body.push_str(",\"value\":");
            body.push_str(v);
        }
        let _ = write!(body, ",\"rev\":{rev}}}}}");
        Self { rev, kind, body }
    }

    /// The `lagged` marker; key subscriptions name their key.
    pub fn lagged(key: Option<&str>) -> Self {
        let mut body = String::new();
        if let Some(k) = key {
            body.push_str(",\"key\":");
            push_str_literal(&mut body, k);
        }
        body.push_str(",\"event\":\"lagged\"}}");
        Self {
            rev: 0,
            kind: EventKind::Lagged,
            body,
        }
    }

    /// The complete JSON-RPC notification text for subscription `sub`.
    pub fn frame(&self, sub: u64) -> String {
        let mut out = String::with_capacity(FRAME_HEAD.len() + 20 + self.body.len());
        out.push_str(FRAME_HEAD);
        let _ = write!(out, "{sub}");
        out.push_str(&self.body);
        out
    }

    /// Approximate bytes this event occupies on the wire (for queue limits).
    pub fn wire_len(&self) -> usize {
        FRAME_HEAD.len() + 20 + self.body.len()
    }
}

/// What a subscription watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Exactly one key.
    Key(Box<str>),
    /// Every key starting with the prefix.
    Prefix(Box<str>),
}

/// Receives events for the subscriptions of one connection. Implementations
/// must not block: when they cannot take an event they mark the subscription
/// lagged and catch up later.
pub trait EventSink: Send + Sync {
    /// Takes one event for `sub`; called with the key's store shard locked.
    fn deliver(&self, sub: &Arc<Subscription>, event: &Arc<Event>);
}

/// One live subscription of one connection.
pub struct Subscription {
    /// The id the connection's client knows it by.
    pub id: u64,
    /// What it watches.
    pub target: Target,
    sink: Arc<dyn EventSink>,
    /// The highest rev delivered (or covered by a snapshot); owned by the sink.
    pub last_rev: AtomicU64,
    /// Set by the sink when it dropped an event; cleared when it caught up.
    pub lagged: AtomicBool,
    /// Set while the subscribe response is not yet queued; owned by the sink.
    pub pending: AtomicBool,
    /// True until the subscription is removed from the registry.
    pub live: AtomicBool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A new subscription delivering into `sink`, pending until the sink
    /// announces it (so no event overtakes the subscribe response).
    pub fn new(id: u64, target: Target, sink: Arc<dyn EventSink>) -> Arc<Self> {
        Arc::new(Self {
            id,
            target,
            sink,
            last_rev: AtomicU64::new(0),
            lagged: AtomicBool::new(false),
            pending: AtomicBool::new(true),
            live: AtomicBool::new(true),
        })
    }

    /// The watched key, for a key subscription.
    pub fn key(&self) -> Option<&str> {
        match &self.target {
            Target::Key(k) => Some(k),
            Target::Prefix(_) => None,
        }
    }
}

#[derive(Default)]
struct PrefixIndex {
    by_prefix: HashMap<Box<str>, Vec<Arc<Subscription>>>,
    /// Distinct prefix lengths in use, with how many prefixes have each.
    lengths: BTreeMap<usize, usize>,
}

type KeyShard = Mutex<HashMap<Box<str>, Vec<Arc<Subscription>>>>;

/// The registry of all subscriptions in the hub.
pub struct PubSub {
    key_shards: Box<[KeyShard]>,
    hasher: std::collections::hash_map::RandomState,
    prefixes: RwLock<PrefixIndex>,
    key_subs: AtomicUsize,
    prefix_subs: AtomicUsize,
}

impl Default for PubSub {
    fn default() -> Self {
        Self::new()
    }
}

impl PubSub {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            key_shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            prefixes: RwLock::new(PrefixIndex::default()),
            key_subs: AtomicUsize::new(0),
            prefix_subs: AtomicUsize::new(0),
        }
    }

    fn key_shard(&self, key: &str) -> &KeyShard {
        let h = self.hasher.hash_one(key) as usize;
        &self.key_shards[h % SHARDS]
    }

    /// Number of live subscriptions (key and prefix).
    pub fn len(&self) -> usize {
        self.key_subs.load(Ordering::Relaxed) + self.prefix_subs.load(Ordering::Relaxed)
    }

    /// True when nobody watches anything.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers `sub` (a key or prefix subscription). For a key subscription
    /// the caller must hold the key's store shard lock, so that registration
    /// is atomic with the snapshot it reports.
    pub fn watch(&self, sub: Arc<Subscription>) {
        match &sub.target {
            Target::Key(key) => {
                let mut shard = self.key_shard(key).lock();
                shard.entry(key.clone()).or_default().push(sub);
                self.key_subs.fetch_add(1, Ordering::Relaxed);
            }
            Target::Prefix(prefix) => {
                let mut idx = self.prefixes.write();
                let len = prefix.len();
                match idx.by_prefix.entry(prefix.clone()) {
                    MapEntry::Occupied(mut e) => e.get_mut().push(sub),
                    MapEntry::Vacant(e) => {
                        e.insert(vec![sub]);
                        *idx.lengths.entry(len).or_default() += 1;
                    }
                }
                self.prefix_subs.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes `sub`; returns false if it was not registered. Events already
    /// handed to its sink stay there.
    pub fn unwatch(&self, sub: &Arc<Subscription>) -> bool {
        sub.live.store(false, Ordering::SeqCst);
        match &sub.target {
            Target::Key(key) => {
                let mut shard = self.key_shard(key).lock();
                let removed = remove_from(&mut shard, key, sub);
                if removed {
                    self.key_subs.fetch_sub(1, Ordering::Relaxed);
                }
                removed
            }
            Target::Prefix(prefix) => {
                let mut idx = self.prefixes.write();
                let removed = remove_from(&mut idx.by_prefix, prefix, sub);
                if removed {
                    if !idx.by_prefix.contains_key(prefix) {
                        if let std::collections::btree_map::Entry::Occupied(mut e) =
                            idx.lengths.entry(prefix.len())
                        {
                            *e.get_mut() -= 1;
                            if *e.get() == 0 {
                                e.remove();
                            }
                        }
                    }
                    self.prefix_subs.fetch_sub(1, Ordering::Relaxed);
                }
                removed
            }
        }
    }

    /// Hands one change of `key` to every subscription watching it. Must be
    /// called with the key's store shard write-locked, which orders a key's
    /// events by rev and makes key snapshots atomic. Encodes the event only
    /// if somebody watches.
    pub fn publish(&self, key: &str, kind: EventKind, value: Option<&str>, rev: u64) {
        let mut event: Option<Arc<Event>> = None;
        let mut send = |subs: &[Arc<Subscription>]| {
            let ev = event.get_or_insert_with(|| Arc::new(Event::change(key, kind, value, rev)));
            for sub in subs {
                sub.sink.deliver(sub, ev);
            }
        };
        if self.key_subs.load(Ordering::Relaxed) > 0 {
            let shard = self.key_shard(key).lock();
            if let Some(subs) = shard.get(key) {
                send(subs);
            }
        }
        if self.prefix_subs.load(Ordering::Relaxed) > 0 {
            let idx = self.prefixes.read();
            for &len in idx.lengths.range(..=key.len()).map(|(len, _)| len) {
                if !key.is_char_boundary(len) {
                    continue;
                }
                if let Some(subs) = idx.by_prefix.get(&key[..len]) {
                    send(subs);
                }
            }
        }
    }
}

fn remove_from(
    map: &mut HashMap<Box<str>, Vec<Arc<Subscription>>>,
    name: &str,
    sub: &Arc<Subscription>,
) -> bool {
    let Some(list) = map.get_mut(name) else {
        return false;
    };
    let Some(pos) = list.iter().position(|s| Arc::ptr_eq(s, sub)) else {
        return false;
    };
    list.swap_remove(pos);
    if list.is_empty() {
        // Drop the key's entry once nobody watches it, so watch churn never leaks.
        map.remove(name);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<(u64, String)>>);
    impl EventSink for Collect {
        fn deliver(&self, sub: &Arc<Subscription>, event: &Arc<Event>) {
            self.0.lock().push((sub.id, event.frame(sub.id)));
        }
    }

    #[test]
    fn event_frames_are_valid_json() {
        let ev = Event::change("a\"b", EventKind::Update, Some("[1,2]"), 42);
        let v: serde_json::Value = serde_json::from_str(&ev.frame(3)).unwrap();
        assert_eq!(v["params"]["sub"], 3);
        assert_eq!(v["params"]["key"], "a\"b");
        assert_eq!(v["params"]["value"], serde_json::json!([1, 2]));
        assert_eq!(v["params"]["rev"], 42);
        let lag: serde_json::Value = serde_json::from_str(&Event::lagged(None).frame(9)).unwrap();
        assert_eq!(
            lag["params"],
            serde_json::json!({"sub": 9, "event": "lagged"})
        );
    }

    #[test]
    fn prefixes_match_only_at_char_boundaries_and_unwatch_cleans_up() {
        let ps = PubSub::new();
        let sink = Arc::new(Collect::default());
        let a = Subscription::new(1, Target::Prefix("ro".into()), sink.clone());
        let all = Subscription::new(2, Target::Prefix("".into()), sink.clone());
        let key = Subscription::new(3, Target::Key("room".into()), sink.clone());
        ps.watch(a.clone());
        ps.watch(all.clone());
        ps.watch(key.clone());
        assert_eq!(ps.len(), 3);
        ps.publish("room", EventKind::Update, Some("1"), 1);
        ps.publish("other", EventKind::Delete, None, 2);
        let got: Vec<u64> = sink.0.lock().iter().map(|(id, _)| *id).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got.iter().filter(|&&i| i == 2).count(), 2);
        assert!(ps.unwatch(&a) && ps.unwatch(&all) && ps.unwatch(&key));
        assert!(!ps.unwatch(&key));
        assert!(ps.is_empty());
        assert!(ps.prefixes.read().lengths.is_empty());
        assert!(ps.key_shards.iter().all(|s| s.lock().is_empty()));
    }
}
