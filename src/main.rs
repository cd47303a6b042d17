//! The `memhub` command line: `memhub serve` runs a hub; `get`, `set`,
//! `del`, `keys` and `watch` talk to one (see `cli_client`).

mod allocator;
mod cli_client;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use memhub::server::{Role, Tokens, MAX_NESTING_CEILING};
use memhub::{MemService, ServerConfig};
use tracing_subscriber::EnvFilter;

/// memhub — a shared-memory hub: JSON values under unique keys, atomic
/// compare-and-set updates and per-key push notifications, over one
/// WebSocket speaking JSON-RPC 2.0.
#[derive(Parser, Debug)]
#[command(name = "memhub", version, about, long_about = None)]
#[command(after_help = "\
Examples:
  memhub serve                          # all interfaces, port 18813, protected mode on
  memhub serve --host 127.0.0.1 --port 0
  MEMHUB_PORT=9000 RUST_LOG=debug memhub serve

  memhub set greeting '\"hello\"'         # values are JSON: quote strings for JSON and the shell
  memhub get greeting                   # {\"value\":\"hello\",\"rev\":1}
  memhub set greeting '\"hi\"' --if-rev 1 # compare-and-set
  memhub keys greet                     # {\"key\":\"greeting\",\"rev\":2,\"bytes\":4}
  memhub watch greeting                 # one JSON line per change until Ctrl-C
  memhub del greeting

The client commands connect to --url (env MEMHUB_URL, default ws://127.0.0.1:18813/ws),
print JSON on stdout and errors on stderr, and exit with
  0 on success, 1 if the hub refused (not found, rev mismatch, …),
  2 for a bad command line or invalid JSON, 3 if the hub cannot be reached.

Every flag can also be set by the environment variable shown in `memhub COMMAND --help`.
`serve` logs to stderr; set RUST_LOG (e.g. RUST_LOG=memhub=debug) to change the detail.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a hub (in memory) until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Load-test a hub (like redis-benchmark): closed-loop clients, latency
    /// percentiles, fan-out deliveries/s. `--spawn` benches an in-process hub.
    #[command(after_help = "\
Examples:
  memhub bench --spawn                                  # get, 50 clients, against an in-process hub
  memhub bench --mode update --clients 50 --pipeline 16 --seconds 10
  memhub bench --mode fanout --subscribers 1000 --pipeline 16
  memhub bench --mode mixed --ratio 0.8 --json          # one JSON line, for scripts

Headline numbers should be taken against a separate `memhub serve` process.")]
    Bench(memhub::bench::BenchConfig),
    #[command(flatten)]
    Client(cli_client::ClientCommand),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (0.0.0.0 = every interface; 127.0.0.1 = this machine only).
    #[arg(long, env = "MEMHUB_HOST", default_value = "0.0.0.0")]
    host: String,
    /// TCP port for WebSocket and HTTP (0 = pick a free port and log it).
    #[arg(long, env = "MEMHUB_PORT", default_value_t = 18813)]
    port: u16,
    /// Refuse WebSocket clients from other machines while bound to a
    /// non-loopback address without authentication.
    #[arg(long, env = "MEMHUB_PROTECTED_MODE", value_enum, default_value = "on")]
    protected_mode: OnOff,
    /// Longest key, in bytes.
    #[arg(long, env = "MEMHUB_MAX_KEY_BYTES", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_key_bytes: u64,
    /// Largest value (as compact JSON), in bytes.
    #[arg(long, env = "MEMHUB_MAX_VALUE_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    max_value_bytes: u64,
    /// Largest WebSocket message, in bytes; larger ones close the connection (1009).
    #[arg(long, env = "MEMHUB_MAX_MESSAGE_BYTES", default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    max_message_bytes: u64,
    /// Most requests in one JSON-RPC batch.
    #[arg(long, env = "MEMHUB_MAX_BATCH", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    max_batch: u64,
    /// Deepest array/object nesting in one message.
    #[arg(long, env = "MEMHUB_MAX_NESTING", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=MAX_NESTING_CEILING as u64))]
    max_nesting: u64,
    /// Most subscriptions per connection.
    #[arg(long, env = "MEMHUB_MAX_SUBSCRIPTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_subscriptions: u64,
    /// Most open WebSocket connections; more are answered HTTP 503.
    #[arg(long, env = "MEMHUB_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Most events queued per connection before its subscriptions are marked lagged.
    #[arg(long, env = "MEMHUB_OUTBOUND_MAX_EVENTS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    outbound_max_events: u64,
    /// Most bytes queued per connection before events are dropped as lagged.
    #[arg(long, env = "MEMHUB_OUTBOUND_MAX_BYTES", default_value_t = 8 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    outbound_max_bytes: u64,
    /// A browser origin (scheme://host[:port]) allowed to open WebSockets besides the
    /// hub's own; repeatable or comma-separated; `*` allows every origin.
    #[arg(
        long = "allow-origin",
        env = "MEMHUB_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    allow_origin: Vec<String>,
    /// An access token with the write role (every method); repeatable or
    /// comma-separated. With any token configured, clients must present one.
    #[arg(
        long = "token",
        env = "MEMHUB_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    token: Vec<String>,
    /// An access token with the read role (get, is_memoized, keys, stats,
    /// version, subscribe, unsubscribe); repeatable or comma-separated.
    #[arg(
        long = "read-token",
        env = "MEMHUB_READ_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    read_token: Vec<String>,
    /// A file of `write TOKEN` / `read TOKEN` lines (`#` comments allowed).
    #[arg(long, env = "MEMHUB_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Serve https:// and wss:// with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "MEMHUB_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, env = "MEMHUB_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Drop a connection that has not finished its TLS handshake and sent its
    /// HTTP request within this many milliseconds.
    #[arg(long, env = "MEMHUB_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..))]
    handshake_timeout_ms: u64,
    /// Disconnect (close code 1008) a client that takes none of its responses for this many milliseconds.
    #[arg(long, env = "MEMHUB_SLOW_CLIENT_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(10..))]
    slow_client_timeout_ms: u64,
    /// Keepalive ping interval in milliseconds; a client silent for two intervals is dropped.
    #[arg(long, env = "MEMHUB_PING_INTERVAL_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(10..))]
    ping_interval_ms: u64,
}

fn size(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl ServeArgs {
    fn tokens(&self) -> anyhow::Result<Tokens> {
        let mut tokens = Tokens::new();
        for t in &self.token {
            tokens
                .add(t, Role::Write)
                .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
        }
        for t in &self.read_token {
            tokens
                .add(t, Role::Read)
                .map_err(|e| anyhow::anyhow!("--read-token: {e}"))?;
        }
        if let Some(path) = &self.token_file {
            tokens.add_file(path).map_err(|e| anyhow::anyhow!(e))?;
        }
        Ok(tokens)
    }

    fn config(&self) -> ServerConfig {
        ServerConfig {
            max_key_bytes: size(self.max_key_bytes),
            max_value_bytes: size(self.max_value_bytes),
            max_message_bytes: size(self.max_message_bytes),
            max_batch: size(self.max_batch),
            max_nesting: size(self.max_nesting),
            max_subscriptions: size(self.max_subscriptions),
            max_connections: size(self.max_connections),
            outbound_max_events: size(self.outbound_max_events),
            outbound_max_bytes: size(self.outbound_max_bytes),
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            slow_client_timeout: Duration::from_millis(self.slow_client_timeout_ms),
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(memhub::server::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            protected_mode: self.protected_mode == OnOff::On,
            allowed_origins: self.allow_origin.clone(),
            ..ServerConfig::default()
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The hub logs its progress; client commands keep stderr for errors.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        Command::Bench(_) => "warn",
        Command::Client(_) => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    match cli.command {
        Command::Bench(mut cfg) => {
            cfg.progress = std::io::stderr().is_terminal();
            let report = memhub::bench::run(&cfg).await.context("benchmark")?;
            if cfg.json {
                println!("{}", report.to_json_line());
            } else {
                report.print_human();
            }
        }
        Command::Client(cmd) => {
            let code = cli_client::run(cmd).await;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::Serve(args) => {
            allocator::return_large_buffers_to_the_kernel();
            let config = ServerConfig {
                tokens: args.tokens()?,
                ..args.config()
            };
            let server = MemService::new(args.host.clone(), args.port)
                .with_config(config)
                .bind()
                .await
                .context("starting the hub")?;
            server.run_until_signal().await.context("serving")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed_and_defaults_match_the_library() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["memhub", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("`memhub serve` parses as Serve");
        };
        assert_eq!(args.port, 18813);
        assert_eq!(args.host, "0.0.0.0");
        assert_eq!(args.config(), ServerConfig::default());
    }

    #[test]
    fn client_commands_parse_with_the_default_url() {
        use cli_client::ClientCommand;
        let cli = Cli::try_parse_from(["memhub", "set", "k", "-1", "--if-rev", "0"]).unwrap();
        let Command::Client(ClientCommand::Set(a)) = cli.command else {
            panic!("set parses as Set");
        };
        assert_eq!(
            (a.key.as_str(), a.json.as_str(), a.if_rev),
            ("k", "-1", Some(0))
        );
        assert_eq!(a.conn.url, cli_client::DEFAULT_URL);
        let cli = Cli::try_parse_from(["memhub", "watch", "--prefix", ""]).unwrap();
        let Command::Client(ClientCommand::Watch(a)) = cli.command else {
            panic!("watch parses as Watch");
        };
        assert_eq!((a.key, a.prefix.as_deref()), (None, Some("")));
        assert!(Cli::try_parse_from(["memhub", "watch"]).is_err());
        assert!(Cli::try_parse_from(["memhub", "delete", "k"]).is_ok());
    }
}
