//! Everything an operator can tune about a hub, with the protocol's defaults.
//!
//! `ServerConfig` is plain data: the CLI fills it from flags and environment
//! variables, embedders build it in code. Nothing here acts on it.

use std::time::Duration;

use super::auth::Tokens;

/// Tunables of one hub. `ServerConfig::default()` gives the limits of
/// PROTOCOL.md and protected mode on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Longest key, in bytes (default 1024).
    pub max_key_bytes: usize,
    /// Largest value, as compact JSON, in bytes (default 1 MiB).
    pub max_value_bytes: usize,
    /// Largest incoming WebSocket message in bytes (default 16 MiB); a larger
    /// one closes the connection with code 1009.
    pub max_message_bytes: usize,
    /// Most requests in one batch (default 1000).
    pub max_batch: usize,
    /// Deepest array/object nesting in one frame (default 128, at most 1024).
    pub max_nesting: usize,
    /// Most live subscriptions per connection (default 10,000).
    pub max_subscriptions: usize,
    /// Most open WebSocket connections (default 10,000); more get HTTP 503.
    pub max_connections: usize,
    /// Most events queued for one connection before its subscriptions are
    /// marked lagged (default 1024).
    pub outbound_max_events: usize,
    /// Most bytes queued for one connection before its subscriptions are
    /// marked lagged and its requests wait (default 8 MiB).
    pub outbound_max_bytes: usize,
    /// How often the hub pings each connection (default 30 s); a connection
    /// silent for two intervals is closed.
    pub ping_interval: Duration,
    /// Refuse non-loopback peers when bound to a non-loopback address with no
    /// authentication configured (default on).
    pub protected_mode: bool,
    /// A client that takes none of its responses for this long (its socket
    /// accepts no bytes, or its queued responses never drain) is
    /// disconnected, with a warning in the log (default 30 s): with close
    /// code 1008 when a close frame can still get through, else by dropping
    /// the TCP connection.
    pub slow_client_timeout: Duration,
    /// A TCP connection must finish its TLS handshake and send its HTTP
    /// request headers within this time, or it is dropped (default 10 s).
    pub handshake_timeout: Duration,
    /// Serve `https://` and `wss://` with this PEM certificate chain and key.
    pub tls: Option<TlsFiles>,
    /// How long a graceful shutdown waits for connections to close (default 5 s).
    pub shutdown_grace: Duration,
    /// How often expired keys are swept and their `expire` events sent
    /// (default 10 ms). Readers never see an expired key, whatever this is.
    pub expiry_sweep_interval: Duration,
    /// Browser origins allowed to open a WebSocket besides the hub's own
    /// (`http(s)://` + the request's `Host`); `*` allows every origin.
    /// Requests without an `Origin` header (non-browser clients) are unaffected.
    pub allowed_origins: Vec<String>,
    /// Access tokens and their roles; empty = no authentication (then
    /// protected mode applies). Never logged.
    pub tokens: Tokens,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_message_bytes: 16 << 20,
            max_batch: 1000,
            max_nesting: 128,
            max_subscriptions: 10_000,
            max_connections: 10_000,
            outbound_max_events: 1024,
            outbound_max_bytes: 8 << 20,
            ping_interval: Duration::from_secs(30),
            protected_mode: true,
            slow_client_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            tls: None,
            shutdown_grace: Duration::from_secs(5),
            expiry_sweep_interval: Duration::from_millis(10),
            allowed_origins: Vec::new(),
            tokens: Tokens::new(),
        }
    }
}

/// Where the hub's TLS certificate chain and private key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// The hard ceiling on `max_nesting`: deeper JSON would risk the parser's stack.
pub const MAX_NESTING_CEILING: usize = 1024;
