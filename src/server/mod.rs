//! The hub server: `MemService` to configure and bind, `Server` to run.
//!
//! Rooms: [`http`] admits connections, [`connection`] runs each socket,
//! [`dispatch`] applies JSON-RPC framing, [`methods`] calls the [`Store`],
//! [`outbox`] queues what goes back. This module wires them together and owns
//! the lifecycle: bind, serve, graceful shutdown (stop accepting, close every
//! connection with 1001, wait at most `shutdown_grace`).

mod admission;
mod assets;
mod auth;
mod canonical;
mod config;
mod connection;
mod dispatch;
mod http;
mod inproc;
mod listen;
mod methods;
mod metrics;
mod outbox;
mod session;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use admission::{
    exposes_beyond_loopback, origin_allowed, protected_mode_allows, PROTECTED_MODE_REFUSAL,
};
pub use auth::{Role, Tokens};
pub use config::{ServerConfig, TlsFiles, MAX_NESTING_CEILING};
pub use inproc::InProcessHub;
pub use metrics::Metrics;

use crate::locks::Locks;
use crate::store::Store;

/// State shared by every connection of one hub.
pub struct Hub {
    /// The keyspace and its subscriptions.
    pub store: Arc<Store>,
    /// The settings the hub was started with.
    pub config: ServerConfig,
    /// Counters exposed at `/metrics`.
    pub metrics: Metrics,
    /// Named locks.
    pub locks: Arc<Locks>,
    /// Cancelled when the hub shuts down.
    pub shutdown: CancellationToken,
    /// Set just before `shutdown` is cancelled: a check that costs one load,
    /// for connections busy with a stream of frames.
    stopping: Arc<AtomicBool>,
    /// When the hub started.
    pub started: Instant,
    bind_ip: IpAddr,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    conn_ids: AtomicU64,
}

impl Hub {
    /// An empty hub with `config`, for a listener bound to `bind_ip`.
    fn new(config: ServerConfig, bind_ip: IpAddr) -> Self {
        Self {
            store: Arc::new(Store::new()),
            metrics: Metrics::new(),
            locks: Locks::new(),
            conn_ids: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            stopping: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            bind_ip,
            slots: Arc::new(Semaphore::new(config.max_connections)),
            tracker: TaskTracker::new(),
            config,
        }
    }

    /// True once a shutdown was requested (see [`ShutdownHandle`]).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// A connection id never used before in this hub.
    pub fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A hub to be bound: address plus configuration. Mirrors rpyc-mem's
/// `RpycMemService(host, port)`: host `0.0.0.0` and port 0 (a random free
/// port) by default.
#[derive(Debug, Clone)]
pub struct MemService {
    host: String,
    port: u16,
    config: ServerConfig,
}

impl Default for MemService {
    fn default() -> Self {
        Self::new("0.0.0.0", 0)
    }
}

impl MemService {
    /// A service for `host:port` with the default [`ServerConfig`]; port 0
    /// picks a free port, readable from [`Server::local_addr`] after binding.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            config: ServerConfig::default(),
        }
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// The configuration that will be used.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Binds the listening socket. Fails if the address cannot be resolved or
    /// bound, or if the configuration is out of range.
    pub async fn bind(self) -> io::Result<Server> {
        let cfg = self.config;
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if cfg.max_nesting == 0 || cfg.max_nesting > MAX_NESTING_CEILING {
            return invalid(format!(
                "max_nesting must be between 1 and {MAX_NESTING_CEILING}"
            ));
        }
        if cfg.ping_interval.is_zero()
            || cfg.expiry_sweep_interval.is_zero()
            || cfg.slow_client_timeout.is_zero()
            || cfg.handshake_timeout.is_zero()
        {
            return invalid(
                "ping_interval, expiry_sweep_interval, slow_client_timeout and handshake_timeout \
                 must be above zero"
                    .into(),
            );
        }
        let tls = match &cfg.tls {
            Some(files) => Some(listen::tls_acceptor(&files.cert, &files.key)?),
            None => None,
        };
        let listener = TcpListener::bind((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on {}:{}: {e}", self.host, self.port),
                )
            })?;
        let local_addr = listener.local_addr()?;
        let hub = Arc::new(Hub::new(cfg, local_addr.ip()));
        Ok(Server {
            listener,
            local_addr,
            hub,
            tls,
        })
    }
}

/// A bound hub, ready to run.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    hub: Arc<Hub>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Stops a running hub from anywhere; cloneable.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(CancellationToken, Arc<AtomicBool>);

impl ShutdownHandle {
    /// Starts a graceful shutdown: stop accepting, close every connection
    /// with code 1001, let `run` return once they are closed (or the grace
    /// period ran out).
    pub fn shutdown(&self) {
        self.1.store(true, Ordering::Release);
        self.0.cancel();
    }

    /// True once a shutdown was requested.
    pub fn is_shutdown(&self) -> bool {
        self.0.is_cancelled()
    }
}

impl Server {
    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.hub.shutdown.clone(), self.hub.stopping.clone())
    }

    /// The hub's keyspace, for embedding programs that want direct access.
    pub fn store(&self) -> Arc<Store> {
        self.hub.store.clone()
    }

    /// The hub's lock table, for embedding programs that coordinate with
    /// clients in-process (an in-process holder is never released by a
    /// connection closing).
    pub fn locks(&self) -> Arc<Locks> {
        self.hub.locks.clone()
    }

    /// Serves until the shutdown handle is used, then shuts down gracefully.
    pub async fn run(self) -> io::Result<()> {
        let Server {
            listener,
            local_addr,
            hub,
            tls,
        } = self;
        let (ws, http) = if tls.is_some() {
            ("wss", "https")
        } else {
            ("ws", "http")
        };
        // An unspecified bind address is not a URL anyone can open; show the
        // loopback one, which always reaches this hub from this machine.
        let browse = if local_addr.ip().is_unspecified() {
            let lo: IpAddr = if local_addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            SocketAddr::new(lo, local_addr.port())
        } else {
            local_addr
        };
        info!(
            "memhub {} listening on {ws}://{local_addr}/ws (open {http}://{browse}/ in a browser)",
            env!("CARGO_PKG_VERSION")
        );
        if !hub.config.tokens.is_empty() {
            info!("token authentication is on");
        } else if exposes_beyond_loopback(local_addr.ip()) {
            if hub.config.protected_mode {
                warn!(
                    "bound to non-loopback address {}: protected mode is on, so only \
                     clients on this machine can connect (see --protected-mode)",
                    local_addr.ip()
                );
            } else {
                warn!(
                    "bound to non-loopback address {} with protected mode off and no \
                     authentication: anyone who can reach this port can read and change all data",
                    local_addr.ip()
                );
            }
        }
        let sweeper = tokio::spawn(sweep_expired(hub.clone()));
        let app = http::router(hub.clone());
        listen::serve(listener, app, hub.clone(), tls).await;
        hub.tracker.close();
        let open = hub.tracker.len();
        if open > 0 {
            info!("closing {open} connections");
        }
        if tokio::time::timeout(hub.config.shutdown_grace, hub.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                "{} connections did not close within {:?}; stopping anyway",
                hub.tracker.len(),
                hub.config.shutdown_grace
            );
        }
        sweeper.abort();
        info!("memhub stopped");
        Ok(())
    }

    /// Like [`Server::run`], but also shuts down on SIGINT (Ctrl-C) or SIGTERM.
    pub async fn run_until_signal(self) -> io::Result<()> {
        let handle = self.shutdown_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("shutdown signal received");
            handle.shutdown();
        });
        self.run().await
    }
}

/// Removes expired keys and sends their `expire` events until shutdown.
async fn sweep_expired(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(hub.config.expiry_sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = tick.tick() => {
                hub.store.expire_due(crate::store::now_ms());
            }
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
