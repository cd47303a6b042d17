//! The Rust client: one multiplexed WebSocket per [`Client`], typed calls,
//! subscriptions as streams, [`Mem<T>`] handles, and automatic reconnect.
//!
//! ```no_run
//! # async fn demo() -> memhub::client::Result<()> {
//! let client = memhub::Client::connect("ws://127.0.0.1:18813/ws").await?;
//! let v: Vec<i32> = client.memoize("k", &vec![1, 2]).await?; // yours or the one already there
//! client.update("k", &vec![1, 2, 3]).await?;
//! let counter: memhub::Mem<i64> = client.mem("counter", 0).await?;
//! counter.update(&5).await?;
//! let mut changes = counter.watch().await?;
//! while let Some(event) = changes.next_event().await {
//!     println!("{:?} {:?}", event.kind, event.value);
//! }
//! # Ok(()) }
//! ```
//!
//! Guarantees: a `Client` is `Clone + Send + Sync` and any number of tasks
//! may call it at once over one socket; answers are routed by request id.
//! When the socket drops, calls in flight fail at once with
//! [`Error::Connection`]; the client reconnects up to `max_retry` times,
//! `retry_delay` apart (after that, each later call tries once more), then
//! re-subscribes every live [`Subscription`] and yields one event for what
//! changed while it was away (a prefix subscription gets `lagged`: re-list).
//! If every retry fails, subscription streams end (`None`) rather than go
//! silent.

mod error;
mod link;
mod mem;
mod subscription;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_core::Stream;
use futures_util::{stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use error::{Error, Result};
pub use mem::Mem;
pub use subscription::{Event, EventKind, Snapshot, Subscription, Watch};

use link::{Link, SubMode};
use subscription::SubState;

/// A hook run after every successful reconnect.
pub type ReconnectHook = Arc<dyn Fn() + Send + Sync>;

/// How a [`Client`] connects and retries. Defaults follow rpyc-mem's
/// `RpycMemConnect`: 4 retries, 3 s apart, protocol version checked.
#[derive(Clone)]
pub struct ClientOptions {
    /// Reconnect attempts after a connection is lost (and retries of the first connect).
    pub max_retry: u32,
    /// Pause before each attempt.
    pub retry_delay: Duration,
    /// Connect even if the hub speaks another protocol version.
    pub ignore_version: bool,
    /// Sent as `Authorization: Bearer …` (for hubs that require tokens).
    pub token: Option<String>,
    /// How long a call waits for its answer (a `lock` waits this plus its `wait`).
    pub request_timeout: Duration,
    /// How long `memoize_with` waits for another client's generator.
    pub memoize_wait: Duration,
    /// Called after each successful reconnect, once subscriptions are resumed.
    pub on_reconnect: Option<ReconnectHook>,
    /// For `wss://` URLs: trust the CA certificates in this PEM file as well
    /// as the public web roots (for hubs with a private or self-signed CA).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            max_retry: 4,
            retry_delay: Duration::from_secs(3),
            ignore_version: false,
            token: None,
            request_timeout: Duration::from_secs(30),
            memoize_wait: Duration::from_secs(60),
            on_reconnect: None,
            ca_file: None,
        }
    }
}

/// The TLS settings for `wss://`: the public web roots plus `ca_file`.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let bad = |e: String| Error::Connection(format!("CA file {}: {e}", path.display()));
        for cert in
            rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?
        {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Connection(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("max_retry", &self.max_retry)
            .field("retry_delay", &self.retry_delay)
            .field("ignore_version", &self.ignore_version)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .field("memoize_wait", &self.memoize_wait)
            .field("on_reconnect", &self.on_reconnect.is_some())
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// What `version` reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Version {
    /// Always `memhub`.
    pub name: String,
    /// The hub's release.
    pub version: String,
    /// The wire protocol version.
    pub protocol: u64,
    /// Changes whenever the hub's revs restart.
    pub epoch: String,
}

/// What `stats` reports (fields this client does not know are in `extra`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Stats {
    /// Keys stored.
    pub keys: u64,
    /// Open connections.
    pub connections: u64,
    /// Live subscriptions.
    pub subscriptions: u64,
    /// Highest rev.
    pub rev: u64,
    /// Time since the hub started.
    pub uptime_ms: u64,
    /// Anything else the hub reports.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// One key in a `keys` listing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KeyInfo {
    /// The key.
    pub key: String,
    /// Its rev.
    pub rev: u64,
    /// Size of its value's compact JSON.
    pub bytes: u64,
    /// Unix ms at which it expires, if it does.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

/// Conditions and expiry for a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Apply only if the key's rev equals this (0: only if absent).
    pub if_rev: Option<u64>,
    /// Expire the key this long after the write.
    pub ttl: Option<Duration>,
}

/// A held lock. Release it with [`Client::unlock`]; dropping the `Lock`
/// (and all its clones) without unlocking also releases it, because each
/// lock is held on a connection of its own that closes with it. That own
/// connection is also why waiting for a lock never delays the client's other
/// calls (the hub answers one connection's requests strictly in order).
#[derive(Clone)]
pub struct Lock {
    /// The lock's name.
    pub name: String,
    /// The secret that releases it.
    pub token: String,
    /// Strictly increasing across all acquisitions: pass it to resources
    /// that must reject a holder whose lease ran out.
    pub fence: u64,
    conn: Arc<LockConn>,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name)
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

/// The connection a lock is held on; closing it releases the lock.
struct LockConn(Arc<Link>);

impl Drop for LockConn {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// How to acquire a lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockOptions {
    /// Release automatically this long after acquiring.
    pub ttl: Option<Duration>,
    /// Wait this long for the lock (none: try once).
    pub wait: Option<Duration>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn decode<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(Error::from)
}

fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Decode(format!("cannot encode the value: {e}")))
}

/// A connection to a hub. Cheap to clone; all clones share one socket, and
/// any number of tasks may call it at once.
///
/// ```no_run
/// # async fn demo() -> memhub::client::Result<()> {
/// use memhub::{Client, ClientOptions};
/// use std::time::Duration;
///
/// let client = Client::connect_with(
///     "ws://127.0.0.1:18813/ws",
///     ClientOptions { retry_delay: Duration::from_millis(500), ..Default::default() },
/// )
/// .await?;
/// let c2 = client.clone();
/// let task = tokio::spawn(async move { c2.incr("hits", 1).await });
/// client.incr("hits", 1).await?;
/// task.await.expect("task")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    me: Weak<Inner>,
    url: String,
    opts: ClientOptions,
    next_id: AtomicU64,
    next_sub: AtomicU64,
    link: Mutex<Option<Arc<Link>>>,
    subs: Mutex<HashMap<u64, Arc<SubState>>>,
    epoch: Mutex<Option<String>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_gate: tokio::sync::Mutex<()>,
    reconnecting: AtomicBool,
    closed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(link) = self.link.lock().take() {
            link.close();
        }
    }
}

impl Inner {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Opens a socket, checks the version, installs it, and (when resuming)
    /// re-subscribes every established subscription.
    async fn establish(&self, resume: bool) -> Result<()> {
        let me = self.me.clone();
        let on_lost = Box::new(move || {
            if let Some(inner) = me.upgrade() {
                inner.link_lost();
            }
        });
        let t = self.opts.request_timeout;
        let link = Link::open(
            &self.url,
            self.opts.token.as_deref(),
            self.tls.as_ref(),
            t,
            on_lost,
        )
        .await?;
        let v: Version = decode(
            link.call(self.next_id(), "version", json!({}), None, t)
                .await?,
        )?;
        let client = u64::from(crate::PROTOCOL_VERSION);
        if v.protocol != client && !self.opts.ignore_version {
            link.close();
            return Err(Error::Version {
                hub: v.protocol,
                client,
            });
        }
        let same_epoch = self.epoch.lock().replace(v.epoch.clone()) == Some(v.epoch);
        *self.link.lock() = Some(link.clone());
        if resume {
            let subs: Vec<Arc<SubState>> = self
                .subs
                .lock()
                .values()
                .filter(|s| s.server_sub.load(Ordering::SeqCst) != 0)
                .cloned()
                .collect();
            for sub in subs {
                let params = match &sub.watch {
                    Watch::Key(k) => json!({ "key": k }),
                    Watch::Prefix(p) => json!({ "prefix": p }),
                };
                let mode = SubMode::Resume { same_epoch };
                link.call(self.next_id(), "subscribe", params, Some((sub, mode)), t)
                    .await?;
            }
        }
        Ok(())
    }

    /// The socket ended: reconnect in the background.
    fn link_lost(&self) {
        if self.closed.load(Ordering::SeqCst) || self.reconnecting.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(inner) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            for _ in 0..inner.opts.max_retry {
                tokio::time::sleep(inner.opts.retry_delay).await;
                if inner.closed.load(Ordering::SeqCst) {
                    break;
                }
                let _gate = inner.connect_gate.lock().await;
                if inner.establish(true).await.is_ok() {
                    inner.reconnecting.store(false, Ordering::SeqCst);
                    if let Some(hook) = &inner.opts.on_reconnect {
                        hook();
                    }
                    return;
                }
            }
            // Out of retries: end every subscription's stream rather than
            // leave it silent. Later calls still try to connect once each.
            for sub in inner.subs.lock().drain() {
                sub.1.end();
            }
            inner.reconnecting.store(false, Ordering::SeqCst);
        });
    }

    /// The live socket, or one more connection attempt when none is left.
    async fn link(&self) -> Result<Arc<Link>> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Connection("the client was closed".into()));
        }
        if let Some(l) = self.live_link() {
            return Ok(l);
        }
        if self.reconnecting.load(Ordering::SeqCst) {
            return Err(Error::Connection(
                "the connection to the hub was lost; reconnecting".into(),
            ));
        }
        let _gate = self.connect_gate.lock().await;
        if let Some(l) = self.live_link() {
            return Ok(l);
        }
        self.establish(true).await?;
        self.live_link()
            .ok_or_else(|| Error::Connection("the connection to the hub was lost".into()))
    }

    fn live_link(&self) -> Option<Arc<Link>> {
        self.link.lock().clone().filter(|l| l.is_alive())
    }

    async fn call_with_timeout(&self, method: &str, params: Value, t: Duration) -> Result<Value> {
        let link = self.link().await?;
        link.call(self.next_id(), method, params, None, t).await
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.call_with_timeout(method, params, self.opts.request_timeout)
            .await
    }

    pub(crate) fn forget_subscription(&self, state: &SubState) {
        self.subs.lock().remove(&state.id);
        let sub = state.server_sub.load(Ordering::SeqCst);
        if sub != 0 {
            if let Some(link) = self.live_link() {
                link.unsubscribe(sub);
            }
        }
    }
}

impl Client {
    /// Connects with [`ClientOptions::default`]. Fails with
    /// [`Error::Connection`] if the hub cannot be reached after the retries,
    /// or [`Error::Version`] if it speaks another protocol.
    pub async fn connect(url: &str) -> Result<Client> {
        Self::connect_with(url, ClientOptions::default()).await
    }

    /// Connects with the given options (see [`ClientOptions`]).
    pub async fn connect_with(url: &str, opts: ClientOptions) -> Result<Client> {
        let tls = if url.starts_with("wss:") {
            Some(tls_config(opts.ca_file.as_deref())?)
        } else {
            None
        };
        let inner = Arc::new_cyclic(|me| Inner {
            tls,
            me: me.clone(),
            url: url.to_string(),
            opts,
            next_id: AtomicU64::new(0),
            next_sub: AtomicU64::new(0),
            link: Mutex::new(None),
            subs: Mutex::new(HashMap::new()),
            epoch: Mutex::new(None),
            connect_gate: tokio::sync::Mutex::new(()),
            reconnecting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let mut attempt = 0;
        loop {
            match inner.establish(false).await {
                Ok(()) => return Ok(Client { inner }),
                Err(e @ Error::Version { .. }) => return Err(e),
                Err(e) if attempt >= inner.opts.max_retry => return Err(e),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(inner.opts.retry_delay).await;
                }
            }
        }
    }

    /// Closes the socket; later calls fail with [`Error::Connection`] and
    /// subscriptions end.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Some(link) = self.inner.link.lock().take() {
            link.close();
        }
        for (_, sub) in self.inner.subs.lock().drain() {
            sub.end();
        }
    }

    /// Sends any JSON-RPC request and returns its raw `result`.
    pub async fn call_raw(&self, method: &str, params: Value) -> Result<Value> {
        self.inner.call(method, params).await
    }

    /// Stores `value` under `key` if the key is absent; returns the value
    /// held afterwards (yours, or the one that was already there).
    pub async fn memoize<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<T> {
        let r = self
            .inner
            .call("memoize", json!({"key": key, "value": encode(value)?}))
            .await?;
        decode(r["value"].clone())
    }

    /// ```no_run
    /// # async fn demo(client: memhub::Client) -> memhub::client::Result<()> {
    /// let table: Vec<u64> = client
    ///     .memoize_with("primes", || async { vec![2, 3, 5, 7] /* expensive */ })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Like [`Client::memoize`] but computes the value only if the key is
    /// absent: `generate` runs at most once across all clients racing on the
    /// key (they serialize on the lock `memoize_with:KEY`) and never when the
    /// key exists. Waiters give up after `ClientOptions::memoize_wait` with
    /// [`Error::LockTimeout`].
    pub async fn memoize_with<T, F, Fut>(&self, key: &str, generate: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        if let Some(v) = self.try_get(key).await? {
            return Ok(v);
        }
        let wait = Some(self.inner.opts.memoize_wait);
        let lock = self
            .lock(
                &format!("memoize_with:{key}"),
                LockOptions { ttl: None, wait },
            )
            .await?;
        let result = async {
            if let Some(v) = self.try_get(key).await? {
                return Ok(v);
            }
            let value = generate().await;
            self.memoize(key, &value).await
        }
        .await;
        let _ = self.unlock(&lock).await;
        result
    }

    /// The key's value, or `None` if it does not exist.
    pub async fn try_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get_with_rev(key).await {
            Ok((v, _)) => Ok(Some(v)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The key's value; [`Error::NotFound`] if it does not exist.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        Ok(self.get_with_rev(key).await?.0)
    }

    /// The key's value and rev (for compare-and-set with [`WriteOptions::if_rev`]).
    pub async fn get_with_rev<T: DeserializeOwned>(&self, key: &str) -> Result<(T, u64)> {
        let r = self.inner.call("get", json!({ "key": key })).await?;
        let rev = r["rev"].as_u64().unwrap_or_default();
        Ok((decode(r["value"].clone())?, rev))
    }

    /// Inserts or replaces the key's value; returns the write's rev.
    pub async fn update<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<u64> {
        self.update_with(key, value, WriteOptions::default()).await
    }

    /// [`Client::update`] with a condition and/or expiry.
    pub async fn update_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        opts: WriteOptions,
    ) -> Result<u64> {
        let r = self
            .inner
            .call(
                "update",
                json!({"key": key, "value": encode(value)?, "if_rev": opts.if_rev, "ttl_ms": opts.ttl.map(ms)}),
            )
            .await?;
        Ok(r["rev"].as_u64().unwrap_or_default())
    }

    /// Deletes the key; returns the deletion's rev ([`Error::NotFound`] if absent).
    pub async fn delete(&self, key: &str) -> Result<u64> {
        let r = self.inner.call("delete", json!({ "key": key })).await?;
        Ok(r["rev"].as_u64().unwrap_or_default())
    }

    /// Deletes the key only if its rev equals `if_rev`.
    pub async fn delete_if(&self, key: &str, if_rev: u64) -> Result<u64> {
        let r = self
            .inner
            .call("delete", json!({ "key": key, "if_rev": if_rev }))
            .await?;
        Ok(r["rev"].as_u64().unwrap_or_default())
    }

    /// True if the key exists.
    pub async fn is_memoized(&self, key: &str) -> Result<bool> {
        decode(
            self.inner
                .call("is_memoized", json!({ "key": key }))
                .await?,
        )
    }

    /// The hub's name, release, protocol version and epoch.
    pub async fn version(&self) -> Result<Version> {
        decode(self.inner.call("version", json!({})).await?)
    }

    /// The hub's counters.
    pub async fn stats(&self) -> Result<Stats> {
        decode(self.inner.call("stats", json!({})).await?)
    }

    /// Every key starting with `prefix`, in key order, fetched page by page.
    pub fn keys(&self, prefix: &str) -> impl Stream<Item = Result<KeyInfo>> + Send + 'static {
        #[derive(Deserialize)]
        struct Page {
            keys: Vec<KeyInfo>,
            next: Option<String>,
        }
        let client = self.clone();
        let prefix = prefix.to_string();
        stream::try_unfold(Some(None::<String>), move |after| {
            let (client, prefix) = (client.clone(), prefix.clone());
            async move {
                let Some(after) = after else {
                    return Ok::<_, Error>(None);
                };
                let r = client
                    .inner
                    .call(
                        "keys",
                        json!({"prefix": prefix, "after": after, "limit": 1000}),
                    )
                    .await?;
                let page: Page = decode(r)?;
                let next = page.next.map(Some);
                Ok(Some((stream::iter(page.keys.into_iter().map(Ok)), next)))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn subscribe_to(&self, watch: Watch) -> Result<Subscription> {
        let id = self.inner.next_sub.fetch_add(1, Ordering::Relaxed) + 1;
        let params = match &watch {
            Watch::Key(k) => json!({ "key": k }),
            Watch::Prefix(p) => json!({ "prefix": p }),
        };
        let is_key = matches!(watch, Watch::Key(_));
        let (state, rx) = SubState::new(id, watch);
        self.inner.subs.lock().insert(id, state.clone());
        let link = match self.inner.link().await {
            Ok(l) => l,
            Err(e) => {
                self.inner.subs.lock().remove(&id);
                return Err(e);
            }
        };
        let t = self.inner.opts.request_timeout;
        let res = link
            .call(
                self.inner.next_id(),
                "subscribe",
                params,
                Some((state.clone(), SubMode::Initial)),
                t,
            )
            .await;
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                self.inner.subs.lock().remove(&id);
                return Err(e);
            }
        };
        let initial = if is_key { Some(decode(res)?) } else { None };
        Ok(Subscription {
            state,
            rx,
            initial,
            client: Arc::downgrade(&self.inner),
        })
    }

    /// Watches one key: [`Subscription::initial`] is its state now, then
    /// every change arrives in rev order.
    ///
    /// ```no_run
    /// # async fn demo(client: memhub::Client) -> memhub::client::Result<()> {
    /// use futures_util::StreamExt;
    /// let mut sub = client.subscribe("config").await?;
    /// println!("now: {:?}", sub.initial());
    /// while let Some(event) = sub.next().await {
    ///     println!("{:?} at rev {:?}: {:?}", event.kind, event.rev, event.value);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, key: &str) -> Result<Subscription> {
        self.subscribe_to(Watch::Key(key.to_string())).await
    }

    /// Watches every key starting with `prefix` (`""`: every key).
    pub async fn subscribe_prefix(&self, prefix: &str) -> Result<Subscription> {
        self.subscribe_to(Watch::Prefix(prefix.to_string())).await
    }

    /// A typed handle on `key`, memoizing `initial` if the key is absent
    /// (like rpyc-mem's `RpycMem(conn, key, robj)`).
    ///
    /// ```no_run
    /// # async fn demo(client: memhub::Client) -> memhub::client::Result<()> {
    /// let counter: memhub::Mem<i64> = client.mem("counter", 0).await?;
    /// let n = counter.get().await?;
    /// counter.update(&(n + 1)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn mem<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        initial: T,
    ) -> Result<Mem<T>> {
        self.memoize(key, &initial).await?;
        Ok(Mem::new(self.clone(), key))
    }

    /// Applies an RFC 6902 JSON Patch atomically; returns the new value and rev.
    pub async fn patch(&self, key: &str, ops: &Value) -> Result<(Value, u64)> {
        let r = self
            .inner
            .call("patch", json!({ "key": key, "ops": ops }))
            .await?;
        Ok((r["value"].clone(), r["rev"].as_u64().unwrap_or_default()))
    }

    /// Applies an RFC 7396 merge patch atomically (absent key: onto `null`);
    /// returns the new value and rev.
    pub async fn merge<P: Serialize + ?Sized>(&self, key: &str, patch: &P) -> Result<(Value, u64)> {
        let r = self
            .inner
            .call("merge", json!({ "key": key, "value": encode(patch)? }))
            .await?;
        Ok((r["value"].clone(), r["rev"].as_u64().unwrap_or_default()))
    }

    /// Adds `by` to the integer held (absent: 0) atomically; returns the new value.
    pub async fn incr(&self, key: &str, by: i64) -> Result<i64> {
        let r = self
            .inner
            .call("incr", json!({ "key": key, "by": by }))
            .await?;
        r["value"].as_i64().ok_or_else(|| {
            Error::Decode(format!(
                "incr returned {} instead of an integer",
                r["value"]
            ))
        })
    }

    /// Adds `by` (a float) to the number held; returns the new value.
    pub async fn incr_f64(&self, key: &str, by: f64) -> Result<f64> {
        let r = self
            .inner
            .call("incr", json!({ "key": key, "by": by }))
            .await?;
        r["value"].as_f64().ok_or_else(|| {
            Error::Decode(format!("incr returned {} instead of a number", r["value"]))
        })
    }

    /// ```no_run
    /// # async fn demo(client: memhub::Client) -> memhub::client::Result<()> {
    /// use memhub::client::LockOptions;
    /// use std::time::Duration;
    /// let lock = client
    ///     .lock("jobs", LockOptions { ttl: Some(Duration::from_secs(30)), wait: Some(Duration::from_secs(5)) })
    ///     .await?;
    /// let n: i64 = client.get("jobs/next").await?;
    /// client.update("jobs/next", &(n + 1)).await?;
    /// client.unlock(&lock).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Acquires the named lock ([`Error::LockTimeout`] if not acquired within
    /// `opts.wait`). Released by [`Client::unlock`], by its `ttl`, or when
    /// this client's connection closes.
    pub async fn lock(&self, name: &str, opts: LockOptions) -> Result<Lock> {
        let wait = opts.wait.unwrap_or_default();
        let params = json!({
            "name": name,
            "ttl_ms": opts.ttl.map(ms),
            "wait_ms": u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        });
        #[derive(Deserialize)]
        struct Granted {
            token: String,
            fence: u64,
        }
        let inner = &self.inner;
        let t = inner.opts.request_timeout;
        // Held on a connection of its own (see `Lock`); it is not resumed
        // after a drop, since the hub releases the lock with the connection.
        let link = Link::open(
            &inner.url,
            inner.opts.token.as_deref(),
            inner.tls.as_ref(),
            t,
            Box::new(|| {}),
        )
        .await?;
        let conn = Arc::new(LockConn(link));
        let r = conn
            .0
            .call(
                inner.next_id(),
                "lock",
                params,
                None,
                t.saturating_add(wait),
            )
            .await?;
        let g: Granted = decode(r)?;
        Ok(Lock {
            name: name.to_string(),
            token: g.token,
            fence: g.fence,
            conn,
        })
    }

    /// Releases a lock ([`Error::LockNotHeld`] if the token no longer holds
    /// it: already unlocked, lease ran out, or its connection dropped).
    pub async fn unlock(&self, lock: &Lock) -> Result<()> {
        let params = json!({ "name": lock.name, "token": lock.token });
        let link = &lock.conn.0;
        let result = if link.is_alive() {
            let t = self.inner.opts.request_timeout;
            link.call(self.inner.next_id(), "unlock", params, None, t)
                .await
        } else {
            self.inner.call("unlock", params).await
        };
        link.close();
        result.map(|_| ())
    }
}
