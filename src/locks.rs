//! Named distributed locks: FIFO waiters, leases, fencing tokens.
//!
//! A lock is held by one owner (a connection) under a random token. Waiters
//! queue in arrival order and are granted the lock one at a time as it is
//! released — by `unlock` with the right token, by its lease running out, or
//! by the holder's connection closing. Every acquisition of any lock gets a
//! `fence` strictly greater than all before it, so a resource can reject
//! writes from a holder whose lease silently ran out.
//!
//! Locks live in their own namespace, separate from keys. All state sits
//! behind one mutex that is never held across an `.await`; lock traffic is
//! coordination, not the data path.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

/// Longest wait or lease honoured; longer ones are clamped (a year).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A successful acquisition: the token that releases it and its fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Secret that `unlock` must present.
    pub token: Arc<str>,
    /// Strictly increasing across all acquisitions of all locks.
    pub fence: u64,
}

struct Holder {
    token: Arc<str>,
    owner: u64,
    lease: Option<AbortHandle>,
}

struct Waiter {
    id: u64,
    owner: u64,
    ttl: Option<Duration>,
    tx: oneshot::Sender<Grant>,
}

#[derive(Default)]
struct LockState {
    holder: Option<Holder>,
    waiters: VecDeque<Waiter>,
}

/// Counts for `stats` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockCounts {
    /// Locks currently held.
    pub held: usize,
    /// Requests waiting for a lock.
    pub waiting: usize,
}

/// The hub's lock table.
pub struct Locks {
    me: Weak<Locks>,
    table: Mutex<HashMap<Box<str>, LockState>>,
    fence: AtomicU64,
    next_id: AtomicU64,
    seed: RandomState,
}

impl Locks {
    /// An empty lock table.
    pub fn new() -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            table: Mutex::new(HashMap::new()),
            fence: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            seed: RandomState::new(),
        })
    }

    fn token(&self) -> Arc<str> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let a = self.seed.hash_one((n, 0x9e37_79b9_u32));
        let b = self.seed.hash_one((a, n, 0x7f4a_7c15_u32));
        Arc::from(format!("{a:016x}{b:016x}"))
    }

    /// Makes `owner` the holder of `name` (whose state is `st`), starting its lease.
    fn grant(&self, name: &str, st: &mut LockState, owner: u64, ttl: Option<Duration>) -> Grant {
        let grant = Grant {
            token: self.token(),
            fence: self.fence.fetch_add(1, Ordering::SeqCst) + 1,
        };
        let lease = ttl.map(|ttl| {
            let me = self.me.clone();
            let (name, token) = (name.to_string(), grant.token.clone());
            tokio::spawn(async move {
                tokio::time::sleep(ttl.min(MAX_DURATION)).await;
                if let Some(locks) = me.upgrade() {
                    locks.release(&name, &token);
                }
            })
            .abort_handle()
        });
        st.holder = Some(Holder {
            token: grant.token.clone(),
            owner,
            lease,
        });
        grant
    }

    /// Frees `st` and hands it to the first waiter still listening.
    fn pass_on(&self, name: &str, st: &mut LockState) {
        if let Some(h) = st.holder.take() {
            if let Some(lease) = h.lease {
                lease.abort();
            }
        }
        while let Some(w) = st.waiters.pop_front() {
            let grant = self.grant(name, st, w.owner, w.ttl);
            if w.tx.send(grant).is_ok() {
                return;
            }
            // That waiter is gone; undo and try the next one.
            if let Some(Holder { lease: Some(l), .. }) = st.holder.take() {
                l.abort();
            }
        }
    }

    /// Acquires `name` for `owner`, waiting up to `wait` (zero: try once) in
    /// FIFO order behind earlier waiters. `None` if not acquired in time.
    /// Dropping the future leaves the queue.
    pub async fn acquire(
        &self,
        name: &str,
        owner: u64,
        ttl: Option<Duration>,
        wait: Duration,
    ) -> Option<Grant> {
        let (id, mut rx) = {
            let mut table = self.table.lock();
            let st = table.entry(name.into()).or_default();
            if st.holder.is_none() && st.waiters.is_empty() {
                return Some(self.grant(name, st, owner, ttl));
            }
            if wait.is_zero() {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            st.waiters.push_back(Waiter { id, owner, ttl, tx });
            (id, rx)
        };
        let guard = LeaveQueue {
            locks: self,
            name,
            id,
        };
        let got = tokio::time::timeout(wait.min(MAX_DURATION), &mut rx).await;
        if let Ok(Ok(grant)) = got {
            std::mem::forget(guard);
            return Some(grant);
        }
        // Timed out. Leave the queue — unless the grant raced in just now.
        let mut table = self.table.lock();
        if guard.remove_locked(&mut table) {
            std::mem::forget(guard);
            return None;
        }
        std::mem::forget(guard);
        drop(table);
        rx.try_recv().ok()
    }

    /// Releases `name` if `token` holds it; false otherwise.
    pub fn release(&self, name: &str, token: &str) -> bool {
        let mut table = self.table.lock();
        let Some(st) = table.get_mut(name) else {
            return false;
        };
        if st.holder.as_ref().is_none_or(|h| &*h.token != token) {
            return false;
        }
        self.pass_on(name, st);
        if st.holder.is_none() && st.waiters.is_empty() {
            table.remove(name);
        }
        true
    }

    /// Releases every lock `owner` holds and drops its waiters (its
    /// connection closed).
    pub fn release_owner(&self, owner: u64) {
        let mut table = self.table.lock();
        let names: Vec<Box<str>> = table.keys().cloned().collect();
        for name in names {
            let Some(st) = table.get_mut(&name) else {
                continue;
            };
            st.waiters.retain(|w| w.owner != owner);
            if st.holder.as_ref().is_some_and(|h| h.owner == owner) {
                self.pass_on(&name, st);
            }
            if st.holder.is_none() && st.waiters.is_empty() {
                table.remove(&name);
            }
        }
    }

    /// How many locks are held and how many requests wait.
    pub fn counts(&self) -> LockCounts {
        let table = self.table.lock();
        LockCounts {
            held: table.values().filter(|s| s.holder.is_some()).count(),
            waiting: table.values().map(|s| s.waiters.len()).sum(),
        }
    }
}

/// Removes a waiter from its queue when its `acquire` future is dropped.
struct LeaveQueue<'a> {
    locks: &'a Locks,
    name: &'a str,
    id: u64,
}

impl LeaveQueue<'_> {
    /// Removes the waiter; true if it was still queued.
    fn remove_locked(&self, table: &mut HashMap<Box<str>, LockState>) -> bool {
        let Some(st) = table.get_mut(self.name) else {
            return false;
        };
        let before = st.waiters.len();
        st.waiters.retain(|w| w.id != self.id);
        let removed = st.waiters.len() != before;
        if st.holder.is_none() && st.waiters.is_empty() {
            table.remove(self.name);
        }
        removed
    }
}

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        let mut table = self.locks.table.lock();
        self.remove_locked(&mut table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;

    #[tokio::test]
    async fn fifo_fences_and_owner_release() {
        let locks = Locks::new();
        let a = locks.acquire("l", 1, None, NOW).await.unwrap();
        assert!(locks.acquire("l", 2, None, NOW).await.is_none());
        let (l2, l3) = (locks.clone(), locks.clone());
        let w2 =
            tokio::spawn(async move { l2.acquire("l", 2, None, Duration::from_secs(10)).await });
        while locks.counts().waiting < 1 {
            tokio::task::yield_now().await;
        }
        let w3 =
            tokio::spawn(async move { l3.acquire("l", 3, None, Duration::from_secs(10)).await });
        while locks.counts().waiting < 2 {
            tokio::task::yield_now().await;
        }
        assert!(!locks.release("l", "wrong"));
        assert!(locks.release("l", &a.token));
        let b = w2.await.unwrap().unwrap();
        assert!(b.fence > a.fence);
        locks.release_owner(2);
        let c = w3.await.unwrap().unwrap();
        assert!(c.fence > b.fence);
        assert!(!locks.release("l", &b.token));
        assert!(locks.release("l", &c.token));
        assert_eq!(locks.counts(), LockCounts::default());
        assert!(locks.table.lock().is_empty());
    }

    #[tokio::test]
    async fn timed_out_and_dropped_waiters_leave_the_queue() {
        let locks = Locks::new();
        let a = locks.acquire("l", 1, None, NOW).await.unwrap();
        assert!(locks
            .acquire("l", 2, None, Duration::from_millis(5))
            .await
            .is_none());
        assert_eq!(
            locks.counts(),
            LockCounts {
                held: 1,
                waiting: 0
            }
        );
        let fut = locks.acquire("l", 3, None, Duration::from_secs(10));
        let _ = tokio::time::timeout(Duration::from_millis(5), fut).await;
        assert_eq!(
            locks.counts(),
            LockCounts {
                held: 1,
                waiting: 0
            }
        );
        assert!(locks.release("l", &a.token));
        assert!(locks.table.lock().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn lease_runs_out() {
        let locks = Locks::new();
        let a = locks
            .acquire("l", 1, Some(Duration::from_millis(50)), NOW)
            .await
            .unwrap();
        let b = locks
            .acquire("l", 2, None, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(b.fence > a.fence);
        assert!(!locks.release("l", &a.token));
    }
}
