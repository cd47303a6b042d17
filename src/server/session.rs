//! One connection's protocol state: its subscriptions and where their events go.
//!
//! A `Session` is owned by the connection's reader task, so it needs no lock.
//! It guarantees that every subscription it created is removed from the hub,
//! and every lock it holds released, when the session ends, however the
//! connection ended.

use std::collections::HashMap;
use std::sync::Arc;

use super::auth::Role;
use super::outbox::Outbox;
use super::Hub;
use crate::pubsub::Subscription;

/// Per-connection state used by the method handlers.
pub struct Session {
    /// The hub this connection belongs to.
    pub hub: Arc<Hub>,
    /// This connection's outbound queue.
    pub outbox: Arc<Outbox>,
    subs: HashMap<u64, Arc<Subscription>>,
    next_sub: u64,
    conn_id: u64,
    used_locks: bool,
    role: Role,
    scratch: String,
}

/// The largest response buffer a session keeps between requests; a larger
/// one (a big value, a keys page) is freed after its response is copied out.
const SCRATCH_KEEP_BYTES: usize = 4 * 1024;

impl Session {
    /// A session with no subscriptions.
    pub fn new(hub: Arc<Hub>, outbox: Arc<Outbox>, role: Role) -> Self {
        let conn_id = hub.next_conn_id();
        Self {
            hub,
            outbox,
            subs: HashMap::new(),
            next_sub: 1,
            conn_id,
            used_locks: false,
            role,
            scratch: String::new(),
        }
    }

    /// What this connection's token allows.
    pub fn role(&self) -> Role {
        self.role
    }

    /// This connection's id, unique within the hub's lifetime (lock owner).
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// Records that this connection took part in locking, so its locks and
    /// waits are released when it ends.
    pub fn note_lock_use(&mut self) {
        self.used_locks = true;
    }

    /// Number of live subscriptions on this connection.
    pub fn subscription_count(&self) -> usize {
        self.subs.len()
    }

    /// A fresh subscription id, unique on this connection.
    pub fn next_sub_id(&mut self) -> u64 {
        let id = self.next_sub;
        self.next_sub += 1;
        id
    }

    /// An empty buffer to write one response into, reused across requests
    /// so that building a response does not grow (reallocate) a fresh one.
    /// Hand it back with [`Session::recycle`].
    pub fn response_buffer(&mut self) -> String {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf
    }

    /// Keeps `buf` for the next response if it is small (a buffer grown by
    /// a big value or a keys page is freed instead).
    pub fn recycle(&mut self, buf: String) {
        if buf.capacity() <= SCRATCH_KEEP_BYTES {
            self.scratch = buf;
        }
    }

    /// Remembers a registered subscription.
    pub fn insert(&mut self, sub: Arc<Subscription>) {
        self.subs.insert(sub.id, sub);
    }

    /// Removes subscription `id` from the hub; false if this connection has no such subscription.
    pub fn unsubscribe(&mut self, id: u64) -> bool {
        match self.subs.remove(&id) {
            Some(sub) => self.hub.store.unsubscribe(&sub),
            None => false,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for (_, sub) in self.subs.drain() {
            self.hub.store.unsubscribe(&sub);
        }
        if self.used_locks {
            self.hub.locks.release_owner(self.conn_id);
        }
    }
}
