//! The keyspace: every stored value, its rev and expiry, and the hub-wide
//! rev counter.
//!
//! Keys live in 64 shards, each a `BTreeMap` behind its own `RwLock`, so
//! operations on different keys rarely contend and `keys` can list in key
//! order by merging the shards' sorted ranges (a page costs a few hundred
//! comparisons, not a scan of the keyspace). Values are compact JSON text
//! shared by `Arc`; nothing here parses them (`modify` hands the text to the
//! caller's function).
//!
//! Every mutation bumps the rev and publishes its event while holding the
//! key's shard lock: a key's events are therefore produced in rev order, and
//! a key subscription registered under the same lock sees exactly the changes
//! after its snapshot. Expiry is exact to the millisecond for readers (an
//! expired entry is invisible even before it is swept) and cheap for the
//! sweeper: each shard keeps its deadlines sorted, so a sweep looks only at
//! what is due. This module never awaits and never holds two shard locks at
//! once.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use compact_str::CompactString;
use parking_lot::RwLock;

use crate::protocol::EventKind;
use crate::pubsub::{PubSub, Subscription};

const SHARDS: usize = 64;

/// Milliseconds since the Unix epoch, the clock expiry deadlines use.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A stored value: compact JSON text, the rev of its last mutation, and
/// when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value as compact JSON text.
    pub value: Arc<str>,
    /// The rev of the write that produced it.
    pub rev: u64,
    /// Unix milliseconds at which the key expires, if it does.
    pub expires_at_ms: Option<u64>,
}

impl Entry {
    fn is_expired(&self, now: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| now >= t)
    }
}

/// Why a conditional or targeted mutation did not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The key does not exist.
    NotFound,
    /// `if_rev` did not match; `current` is the key's rev (0 when absent).
    RevMismatch {
        /// The key's current rev, 0 when absent.
        current: u64,
    },
}

/// Why a `modify` did not apply: the store's reason or the operation's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModifyError<E> {
    /// `if_rev` mismatch.
    Store(StoreError),
    /// The caller's function refused (bad patch, not a number, …).
    Op(E),
}

/// The outcome of `memoize`: the value now held and whether this call stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memoized {
    /// The value held under the key after the call.
    pub value: Arc<str>,
    /// Its rev.
    pub rev: u64,
    /// True if this call created the key.
    pub created: bool,
}

/// The outcome of `update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The rev of this write.
    pub rev: u64,
    /// True if the key did not exist before.
    pub created: bool,
}

/// One row of a `keys` page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key.
    pub key: Box<str>,
    /// The rev of its last mutation.
    pub rev: u64,
    /// Size of its value's compact JSON in bytes.
    pub bytes: usize,
    /// Unix milliseconds at which it expires, if it does.
    pub expires_at_ms: Option<u64>,
}

/// A page of `keys`, sorted by key bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// At most `limit` keys.
    pub keys: Vec<KeyInfo>,
    /// The last key returned when more remain, else `None`.
    pub next: Option<Box<str>>,
}

/// A key's state at one instant, consistent with the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The entry, if the key exists.
    pub entry: Option<Entry>,
    /// The entry's rev if present; else the hub rev at that instant, which
    /// covers every change of the key made so far.
    pub rev: u64,
}

/// A key as the shards hold it: up to 24 bytes inline, so a lookup compares
/// keys that sit in the tree node itself instead of chasing a pointer per
/// comparison (the lookup was a sixth of the hub's CPU under `get` load),
/// and a short key needs no allocation of its own.
type Key = CompactString;

#[derive(Default)]
struct Shard {
    entries: BTreeMap<Key, Entry>,
    /// `(expires_at_ms, key)` for every entry with an expiry, and only those.
    deadlines: BTreeSet<(u64, Key)>,
}

impl Shard {
    /// The live entry of `key`, hiding one whose expiry has passed.
    fn live(&self, key: &str, now: impl FnOnce() -> u64) -> Option<&Entry> {
        let e = self.entries.get(key)?;
        match e.expires_at_ms {
            Some(t) if now() >= t => None,
            _ => Some(e),
        }
    }

    fn set_deadline(&mut self, key: &str, old: Option<u64>, new: Option<u64>) {
        set_deadline(&mut self.deadlines, key, old, new);
    }
}

/// Moves `key`'s entry in a shard's deadline set from `old` to `new`. A free
/// function so that it can run while an entry of the same shard is borrowed.
fn set_deadline(
    deadlines: &mut BTreeSet<(u64, Key)>,
    key: &str,
    old: Option<u64>,
    new: Option<u64>,
) {
    if old == new {
        return;
    }
    if let Some(t) = old {
        deadlines.remove(&(t, Key::from(key)));
    }
    if let Some(t) = new {
        deadlines.insert((t, Key::from(key)));
    }
}

/// Fails with the current rev (0 when absent) unless it is the expected one.
fn check_rev(expected: Option<u64>, have: u64) -> Result<(), StoreError> {
    match expected {
        Some(e) if e != have => Err(StoreError::RevMismatch { current: have }),
        _ => Ok(()),
    }
}

/// What a locked shard holds under a key, found with one tree descent.
enum Slot<'a> {
    /// A live entry, lent with its shard's deadline set.
    Live(&'a mut Entry, &'a mut BTreeSet<(u64, Key)>),
    /// An entry whose expiry (this deadline) has passed: sweep it first.
    Expired(u64),
    /// No entry.
    Absent,
}

impl Shard {
    fn slot(&mut self, key: &str) -> Slot<'_> {
        let Shard { entries, deadlines } = self;
        match entries.get_mut(key) {
            None => Slot::Absent,
            Some(e) => match e.expires_at_ms {
                Some(t) if now_ms() >= t => Slot::Expired(t),
                _ => Slot::Live(e, deadlines),
            },
        }
    }
}

/// Turns a `ttl_ms` into an absolute deadline.
fn deadline(ttl_ms: Option<u64>) -> Option<u64> {
    ttl_ms.map(|ttl| now_ms().saturating_add(ttl))
}

/// The in-memory keyspace and its subscriptions.
pub struct Store {
    shards: Box<[RwLock<Shard>]>,
    /// Picks a key's shard. It only spreads keys over the shards (a B-tree
    /// does not degrade when one shard gets more of them), so a fast,
    /// per-process seeded hash will do where SipHash cost ~190 instructions
    /// per request.
    shard_hasher: foldhash::fast::RandomState,
    rev: AtomicU64,
    len: AtomicUsize,
    epoch: String,
    pubsub: PubSub,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty keyspace with rev 0 and a fresh epoch id.
    pub fn new() -> Self {
        let hasher = std::collections::hash_map::RandomState::new();
        let mut h = hasher.build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            shard_hasher: foldhash::fast::RandomState::default(),
            rev: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            epoch: format!("{:016x}", h.finish()),
            pubsub: PubSub::new(),
        }
    }

    fn shard(&self, key: &str) -> &RwLock<Shard> {
        let h = self.shard_hasher.hash_one(key) as usize;
        &self.shards[h % SHARDS]
    }

    /// Allocates the next rev. Callers hold the key's shard write lock.
    fn next_rev(&self) -> u64 {
        self.rev.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The highest rev handed out so far (0 for a fresh hub).
    pub fn rev(&self) -> u64 {
        self.rev.load(Ordering::SeqCst)
    }

    /// Number of keys (expired keys count until they are swept).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when no key exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An id that changes whenever revs restart (every new in-memory store).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The subscription registry fed by this store's mutations.
    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
    }

    /// Removes `key` if its expiry has passed, emitting its `expire` event,
    /// so that a write sees the key as absent. Caller holds the write lock.
    fn expire_if_due(&self, shard: &mut Shard, key: &str) {
        if let Slot::Expired(t) = shard.slot(key) {
            self.remove_expired(shard, key, t);
        }
    }

    fn remove_expired(&self, shard: &mut Shard, key: &str, deadline: u64) {
        shard.entries.remove(key);
        shard.deadlines.remove(&(deadline, Key::from(key)));
        self.len.fetch_sub(1, Ordering::Relaxed);
        let rev = self.next_rev();
        self.pubsub.publish(key, EventKind::Expire, None, rev);
    }

    /// The entry a write of `key` stores: it takes the next rev and
    /// publishes the update (the caller holds the key's shard write lock).
    fn stamp(&self, key: &str, value: Arc<str>, expires_at_ms: Option<u64>) -> Entry {
        let rev = self.next_rev();
        self.pubsub
            .publish(key, EventKind::Update, Some(&value), rev);
        Entry {
            value,
            rev,
            expires_at_ms,
        }
    }

    /// Replaces the live entry `e` of `key` and publishes the update; the
    /// caller holds the shard's write lock and passes its deadline set.
    fn overwrite(
        &self,
        deadlines: &mut BTreeSet<(u64, Key)>,
        e: &mut Entry,
        key: &str,
        value: Arc<str>,
        expires_at_ms: Option<u64>,
    ) -> Written {
        let new = self.stamp(key, value, expires_at_ms);
        let rev = new.rev;
        let old = std::mem::replace(e, new);
        set_deadline(deadlines, key, old.expires_at_ms, expires_at_ms);
        Written {
            rev,
            created: false,
        }
    }

    /// Inserts `key`, absent from the locked shard, and publishes the update.
    fn insert_new(
        &self,
        shard: &mut Shard,
        key: &str,
        value: Arc<str>,
        expires_at_ms: Option<u64>,
    ) -> Written {
        let new = self.stamp(key, value, expires_at_ms);
        let rev = new.rev;
        shard.entries.insert(key.into(), new);
        shard.set_deadline(key, None, expires_at_ms);
        self.len.fetch_add(1, Ordering::Relaxed);
        Written { rev, created: true }
    }

    /// Stores `value` under `key` only if the key is absent (then with
    /// `ttl_ms`, if given); returns the value held afterwards either way.
    pub fn memoize(&self, key: &str, value: Arc<str>, ttl_ms: Option<u64>) -> Memoized {
        let lock = self.shard(key);
        let existing = |e: &Entry| Memoized {
            value: e.value.clone(),
            rev: e.rev,
            created: false,
        };
        if let Some(e) = lock.read().live(key, now_ms) {
            return existing(e);
        }
        let mut guard = lock.write();
        let shard = &mut *guard;
        match shard.slot(key) {
            Slot::Live(e, _) => return existing(e),
            Slot::Expired(t) => self.remove_expired(shard, key, t),
            Slot::Absent => {}
        }
        let w = self.insert_new(shard, key, value.clone(), deadline(ttl_ms));
        Memoized {
            value,
            rev: w.rev,
            created: true,
        }
    }

    /// The key's value, rev and expiry, if it exists and has not expired.
    pub fn get(&self, key: &str) -> Option<Entry> {
        self.shard(key).read().live(key, now_ms).cloned()
    }

    /// True if the key exists and has not expired.
    pub fn contains(&self, key: &str) -> bool {
        self.shard(key).read().live(key, now_ms).is_some()
    }

    /// Inserts or replaces the key's value and expiry (none without
    /// `ttl_ms`); with `if_rev`, only if the key's rev equals it (0: only if
    /// absent).
    pub fn update(
        &self,
        key: &str,
        value: Arc<str>,
        if_rev: Option<u64>,
        ttl_ms: Option<u64>,
    ) -> Result<Written, StoreError> {
        let mut guard = self.shard(key).write();
        let shard = &mut *guard;
        match shard.slot(key) {
            Slot::Live(e, deadlines) => {
                check_rev(if_rev, e.rev)?;
                return Ok(self.overwrite(deadlines, e, key, value, deadline(ttl_ms)));
            }
            Slot::Expired(t) => self.remove_expired(shard, key, t),
            Slot::Absent => {}
        }
        check_rev(if_rev, 0)?;
        Ok(self.insert_new(shard, key, value, deadline(ttl_ms)))
    }

    /// Computes a key's new value from its current one (`None` when absent)
    /// with `op`, atomically: nothing else changes the key in between. With
    /// `if_rev`, only if the key's rev equals it. The expiry is kept unless
    /// `ttl_ms` is given. Returns the new value and the write's outcome.
    pub fn modify<E>(
        &self,
        key: &str,
        if_rev: Option<u64>,
        ttl_ms: Option<u64>,
        op: impl FnOnce(Option<&str>) -> Result<Arc<str>, E>,
    ) -> Result<(Arc<str>, Written), ModifyError<E>> {
        let mut guard = self.shard(key).write();
        let shard = &mut *guard;
        match shard.slot(key) {
            Slot::Live(e, deadlines) => {
                check_rev(if_rev, e.rev).map_err(ModifyError::Store)?;
                let expires = match ttl_ms {
                    Some(_) => deadline(ttl_ms),
                    None => e.expires_at_ms,
                };
                let value = op(Some(&e.value)).map_err(ModifyError::Op)?;
                let w = self.overwrite(deadlines, e, key, value.clone(), expires);
                return Ok((value, w));
            }
            Slot::Expired(t) => self.remove_expired(shard, key, t),
            Slot::Absent => {}
        }
        check_rev(if_rev, 0).map_err(ModifyError::Store)?;
        let value = op(None).map_err(ModifyError::Op)?;
        let w = self.insert_new(shard, key, value.clone(), deadline(ttl_ms));
        Ok((value, w))
    }

    /// Deletes the key; with `if_rev`, only if its rev equals it. Returns the
    /// deletion's rev.
    pub fn delete(&self, key: &str, if_rev: Option<u64>) -> Result<u64, StoreError> {
        let mut guard = self.shard(key).write();
        let shard = &mut *guard;
        let have = match shard.slot(key) {
            Slot::Live(e, _) => e.rev,
            Slot::Expired(t) => {
                self.remove_expired(shard, key, t);
                0
            }
            Slot::Absent => 0,
        };
        check_rev(if_rev, have)?;
        let Some(old) = shard.entries.remove(key) else {
            return Err(StoreError::NotFound);
        };
        shard.set_deadline(key, old.expires_at_ms, None);
        self.len.fetch_sub(1, Ordering::Relaxed);
        let rev = self.next_rev();
        self.pubsub.publish(key, EventKind::Delete, None, rev);
        Ok(rev)
    }

    /// Removes every key whose expiry is at or before `now` (Unix ms),
    /// emitting one `expire` event each; returns how many. Looks only at
    /// due deadlines, never scans the keyspace.
    pub fn expire_due(&self, now: u64) -> usize {
        let mut expired = 0;
        for lock in self.shards.iter() {
            let due = |s: &Shard| s.deadlines.first().is_some_and(|(t, _)| *t <= now);
            if !due(&lock.read()) {
                continue;
            }
            let mut shard = lock.write();
            while let Some((t, key)) = shard.deadlines.first().cloned() {
                if t > now {
                    break;
                }
                if shard.entries.get(&*key).and_then(|e| e.expires_at_ms) == Some(t) {
                    self.remove_expired(&mut shard, &key, t);
                    expired += 1;
                } else {
                    shard.deadlines.remove(&(t, key));
                }
            }
        }
        expired
    }

    /// The key's current state, consistent with its event stream: every
    /// change with a rev at or below `Snapshot::rev` is reflected in it.
    pub fn snapshot(&self, key: &str) -> Snapshot {
        let shard = self.shard(key).read();
        self.snapshot_locked(&shard, key)
    }

    fn snapshot_locked(&self, shard: &Shard, key: &str) -> Snapshot {
        match shard.live(key, now_ms) {
            Some(e) => Snapshot {
                rev: e.rev,
                entry: Some(e.clone()),
            },
            None => Snapshot {
                entry: None,
                rev: self.rev(),
            },
        }
    }

    /// Registers a subscription. For a key subscription, returns the key's
    /// snapshot taken atomically with the registration: the subscription
    /// receives every change with a rev above the snapshot's and none at or
    /// below it.
    pub fn subscribe(&self, sub: Arc<Subscription>) -> Option<Snapshot> {
        match sub.key() {
            Some(key) => {
                let mut shard = self.shard(key).write();
                // Expire first, so the snapshot and the event stream agree.
                self.expire_if_due(&mut shard, key);
                let snap = self.snapshot_locked(&shard, key);
                sub.last_rev.store(snap.rev, Ordering::SeqCst);
                self.pubsub.watch(sub.clone());
                Some(snap)
            }
            None => {
                sub.last_rev.store(self.rev(), Ordering::SeqCst);
                self.pubsub.watch(sub);
                None
            }
        }
    }

    /// Removes a subscription; false if it was not registered.
    pub fn unsubscribe(&self, sub: &Arc<Subscription>) -> bool {
        self.pubsub.unwatch(sub)
    }

    /// Up to `limit` live keys starting with `prefix`, sorted by key bytes,
    /// strictly after `after`.
    pub fn keys(&self, prefix: &str, after: Option<&str>, limit: usize) -> KeyPage {
        let limit = limit.max(1);
        let want = limit + 1; // one extra tells whether more remain
        let now = now_ms();
        let start: Bound<&str> = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        // `best` holds the smallest keys seen so far, sorted; a shard's scan
        // stops early once its keys can no longer make the page.
        let mut best: Vec<KeyInfo> = Vec::with_capacity(want * 2);
        let mut found: Vec<KeyInfo> = Vec::with_capacity(want);
        for lock in self.shards.iter() {
            let cutoff = if best.len() >= want {
                best.last()
            } else {
                None
            };
            let shard = lock.read();
            let range = shard
                .entries
                .range::<str, _>((start, Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .take_while(|(k, _)| cutoff.is_none_or(|c| k[..] < c.key[..]))
                .filter(|(_, e)| !e.is_expired(now))
                .take(want);
            found.extend(range.map(|(k, e)| KeyInfo {
                key: k.as_str().into(),
                rev: e.rev,
                bytes: e.value.len(),
                expires_at_ms: e.expires_at_ms,
            }));
            drop(shard);
            if !found.is_empty() {
                best = merge_sorted(best, &mut found, want);
            }
        }
        let next = if best.len() > limit {
            best.truncate(limit);
            best.last().map(|k| k.key.clone())
        } else {
            None
        };
        KeyPage { keys: best, next }
    }
}

/// Merges two runs sorted by key into one, keeping the first `want`.
fn merge_sorted(a: Vec<KeyInfo>, b: &mut Vec<KeyInfo>, want: usize) -> Vec<KeyInfo> {
    let mut out = Vec::with_capacity(want.min(a.len() + b.len()));
    let mut a = a.into_iter().peekable();
    let mut b = b.drain(..).peekable();
    while out.len() < want {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.key <= y.key,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { a.next() } else { b.next() };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn revs_strictly_increase_and_cas_works() {
        let s = Store::new();
        let m = s.memoize("a", v("1"), None);
        assert!(m.created && m.rev == 1);
        let m2 = s.memoize("a", v("2"), None);
        assert!(!m2.created && &*m2.value == "1" && m2.rev == 1);
        assert_eq!(
            s.update("a", v("3"), Some(7), None),
            Err(StoreError::RevMismatch { current: 1 })
        );
        assert_eq!(s.update("a", v("3"), Some(1), None).unwrap().rev, 2);
        assert_eq!(
            s.update("b", v("1"), Some(0), None),
            Ok(Written {
                rev: 3,
                created: true
            })
        );
        assert_eq!(
            s.delete("b", Some(2)),
            Err(StoreError::RevMismatch { current: 3 })
        );
        assert_eq!(s.delete("b", None), Ok(4));
        assert_eq!(s.delete("b", None), Err(StoreError::NotFound));
        assert_eq!(s.delete("b", Some(0)), Err(StoreError::NotFound));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn keys_pages_in_order_across_shards() {
        let s = Store::new();
        for i in 0..1000 {
            s.update(&format!("k{i:04}"), v("0"), None, None).unwrap();
        }
        s.update("other", v("[1,2]"), None, None).unwrap();
        let mut seen = Vec::new();
        let mut after: Option<Box<str>> = None;
        loop {
            let page = s.keys("k", after.as_deref(), 33);
            seen.extend(page.keys.iter().map(|k| k.key.clone()));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let expected: Vec<Box<str>> = (0..1000).map(|i| format!("k{i:04}").into()).collect();
        assert_eq!(seen, expected);
        let all = s.keys("", Some("k0999"), 10);
        assert_eq!(all.keys.len(), 1);
        assert_eq!(&*all.keys[0].key, "other");
        assert_eq!(all.keys[0].bytes, 5);
        assert_eq!(all.next, None);
    }
}
