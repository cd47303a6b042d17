//! The load generator behind `memhub bench`, in the spirit of
//! `redis-benchmark`.
//!
//! Closed-loop clients, spread over tokio tasks, speak raw WebSocket frames
//! (not [`crate::Client`]; the request/response modes write them straight
//! on the socket, see `frames.rs`) so that the client side is not the bottleneck:
//! request texts are built from pre-serialized pieces, responses are matched
//! by counting (the hub answers each connection in order) and only their first
//! bytes are looked at. Every connection keeps `pipeline` requests in flight;
//! each request's latency goes into an HDR histogram; the per-client
//! histograms are merged at the end. Requests sent during the warmup are
//! neither counted nor timed. A JSON-RPC error response counts as an error and
//! the run goes on.
//!
//! Modes: `get`, `update`, `mixed`, `memoize`, `incr` (request/response on
//! keys `bench:{n}`; `incr` uses `bench:incr:{n}` so that it never meets the
//! string values the other modes leave behind), `fanout` and `prefix-fanout`
//! (one publisher, many subscribers; see [`fanout`]), `connect`
//! (connection setup rate), `chaos` (a soak under abuse with a PASS/FAIL
//! verdict; see [`chaos`]), `keys` (latency of a `keys` page), `idle` (hub
//! RSS per open idle connection) and `redis-fanout` (the `fanout` workload
//! against Redis pub/sub, for comparison; see [`redis_fanout`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use memhub::bench::{run, BenchConfig, Mode};
//! use std::time::Duration;
//!
//! let cfg = BenchConfig {
//!     mode: Mode::Get,
//!     spawn: true,
//!     duration: Some(Duration::from_secs(2)),
//!     ..BenchConfig::default()
//! };
//! let report = run(&cfg).await?;
//! report.print_human();
//! # Ok(())
//! # }
//! ```

pub mod chaos;
mod connect;
pub mod fanout;
mod frames;
mod idle;
mod progress;
pub mod redis_fanout;
mod report;
mod workload;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::builder::RangedU64ValueParser;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use report::{ChaosReport, FanoutReport, HubState, IdleReport, Latency, Report};

/// How long `run` measures when neither `--seconds` nor `--requests` is given.
pub const DEFAULT_SECONDS: u64 = 10;

/// Longest wait for a WebSocket connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for the answer to an outstanding request before the
/// connection is given up (its outstanding requests count as errors).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything `memhub bench` can be told; the field docs are the `--help`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchConfig {
    /// WebSocket URL of the hub to measure (ignored with --spawn); for
    /// `--mode redis-fanout` the Redis server as redis://HOST:PORT.
    #[arg(long, env = "MEMHUB_URL", default_value = "ws://127.0.0.1:18813/ws")]
    pub url: String,

    /// Access token for a hub started with tokens (sent as `?token=`; never
    /// printed: reports and errors show the URL with `token=***`).
    #[arg(long, env = "MEMHUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The workload.
    #[arg(long, value_enum, default_value_t = Mode::Get)]
    pub mode: Mode,

    /// Concurrent connections, each a closed loop (the publisher count is
    /// always 1 in the fan-out modes).
    #[arg(long, default_value_t = 50, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub clients: usize,

    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub pipeline: usize,

    /// Seconds to measure, after the warmup (a number, or with a unit: 500ms,
    /// 2s, 1m). Default 10 unless --requests is given; with both, whichever
    /// ends first.
    #[arg(long = "seconds", value_name = "SECONDS", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Measured requests in total (over all clients), after the warmup.
    #[arg(long, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub requests: Option<u64>,

    /// Time to run before measuring (a number of seconds, or 500ms, 2s...).
    #[arg(long, default_value = "1", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Number of distinct keys (`bench:0` .. `bench:{K-1}`).
    #[arg(long, default_value_t = 10_000, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub keyspace: u64,

    /// Length of each value written: a JSON string of that many characters.
    #[arg(long, default_value_t = 100, value_parser = RangedU64ValueParser::<usize>::new().range(0..=(64 << 20)))]
    pub value_size: usize,

    /// Share of `get` requests in `--mode mixed` (the rest are `update`).
    #[arg(long = "ratio", default_value_t = 0.9, value_parser = parse_ratio)]
    pub mixed_get_ratio: f64,

    /// Subscriber connections in the fan-out modes.
    #[arg(long, default_value_t = 100, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub subscribers: usize,

    /// Start an in-process hub on a free loopback port and measure that.
    #[arg(long)]
    pub spawn: bool,

    /// The hub's largest WebSocket message in bytes (its --max-message-bytes):
    /// `--mode chaos` sends messages 1 MiB over it and expects close code
    /// 1009. With --spawn, the in-process hub gets this limit.
    #[arg(long, default_value_t = 16 << 20, value_parser = RangedU64ValueParser::<usize>::new().range(1024..=(1 << 30)))]
    pub max_message_bytes: usize,

    /// Process id of an external hub, for `--mode chaos` and `--mode idle` to
    /// read its RSS from /proc/PID/status (with --spawn the RSS of this
    /// process is read).
    #[arg(long)]
    pub pid: Option<u32>,

    /// Print the report as one JSON line.
    #[arg(long)]
    pub json: bool,

    /// Show a live progress line on stderr (the CLI turns this on when
    /// stderr is a terminal).
    #[arg(skip)]
    pub progress: bool,
}

impl Default for BenchConfig {
    /// The same defaults as the command line.
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:18813/ws".into(),
            token: None,
            mode: Mode::Get,
            clients: 50,
            pipeline: 1,
            duration: None,
            requests: None,
            warmup: Duration::from_secs(1),
            keyspace: 10_000,
            value_size: 100,
            mixed_get_ratio: 0.9,
            subscribers: 100,
            spawn: false,
            max_message_bytes: 16 << 20,
            pid: None,
            json: false,
            progress: false,
        }
    }
}

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `get` of random keys (the keyspace is filled first).
    Get,
    /// `update` of random keys.
    Update,
    /// `get` and `update` mixed by `--ratio` (the keyspace is filled first).
    Mixed,
    /// `memoize` of random keys.
    Memoize,
    /// `incr` of random counters.
    Incr,
    /// One publisher updates one key; `--subscribers` connections watch it.
    Fanout,
    /// One publisher updates several keys under a prefix; `--subscribers`
    /// connections watch the prefix.
    PrefixFanout,
    /// Connection setup: open a WebSocket, send `version`, read the answer,
    /// close.
    Connect,
    /// A soak: valid traffic from `--clients` connections plus resets,
    /// reconnect storms, oversized and garbage messages and vanishing lock
    /// holders; then checks known keys, hub state and RSS. Prints PASS or
    /// FAIL (and exits non-zero on FAIL).
    Chaos,
    /// `keys` pages of 100 under the prefix `bench:`, each starting after a
    /// random key (the keyspace is filled first).
    Keys,
    /// Opens `--clients` connections, has each answer one `version`, and
    /// reports the hub's RSS growth per connection (needs --pid or --spawn).
    Idle,
    /// The `fanout` workload against Redis pub/sub (`--url
    /// redis://HOST:PORT`): `--subscribers` SUBSCRIBE connections, one
    /// publisher.
    RedisFanout,
}

impl Mode {
    /// The name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Get => "get",
            Mode::Update => "update",
            Mode::Mixed => "mixed",
            Mode::Memoize => "memoize",
            Mode::Incr => "incr",
            Mode::Fanout => "fanout",
            Mode::PrefixFanout => "prefix-fanout",
            Mode::Connect => "connect",
            Mode::Chaos => "chaos",
            Mode::Keys => "keys",
            Mode::Idle => "idle",
            Mode::RedisFanout => "redis-fanout",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `10`, `1.5`, `500ms`, `2s` or `1m` into a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 10, 1.5, 500ms, 2s, 1m)"))?;
    let secs = v * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a ratio between 0 and 1")),
    }
}

/// Runs one benchmark as configured and returns its report. Prints nothing
/// except the progress line when `cfg.progress` is set.
pub async fn run(cfg: &BenchConfig) -> anyhow::Result<Report> {
    if cfg.clients == 0 || cfg.pipeline == 0 || cfg.keyspace == 0 || cfg.subscribers == 0 {
        bail!("clients, pipeline, keyspace and subscribers must be at least 1");
    }
    if !(0.0..=1.0).contains(&cfg.mixed_get_ratio) {
        bail!("the mixed ratio must be between 0 and 1");
    }
    if cfg.duration.is_some_and(|d| d.is_zero()) {
        bail!("--seconds must be above zero");
    }
    if cfg.mode == Mode::Chaos && cfg.requests.is_some() {
        bail!("--requests does not apply to --mode chaos; use --seconds");
    }
    let hub = if cfg.spawn && cfg.mode != Mode::RedisFanout {
        let config = crate::ServerConfig {
            max_message_bytes: cfg.max_message_bytes,
            ..crate::ServerConfig::default()
        };
        Some(SpawnedHub::start(config).await?)
    } else {
        None
    };
    let url = match (&hub, &cfg.token) {
        (Some(h), _) => h.url.clone(),
        (None, Some(token)) if cfg.mode != Mode::RedisFanout => with_token(&cfg.url, token),
        (None, _) => cfg.url.clone(),
    };
    let result = match cfg.mode {
        Mode::Get | Mode::Update | Mode::Mixed | Mode::Memoize | Mode::Incr | Mode::Keys => {
            workload::run(cfg, &url).await
        }
        Mode::Fanout | Mode::PrefixFanout => fanout::run(cfg, &url).await,
        Mode::Connect => connect::run(cfg, &url).await,
        Mode::Chaos => chaos::run(cfg, &url).await,
        Mode::Idle => idle::run(cfg, &url).await,
        Mode::RedisFanout => redis_fanout::run(cfg, &url).await,
    };
    if let Some(h) = hub {
        h.stop().await;
    }
    // Tokens never reach the output, whether from --token or in --url.
    let result = match result {
        Ok(mut r) => {
            r.url = redact_token(&r.url);
            Ok(r)
        }
        Err(e) => Err(anyhow::anyhow!(redact_token(&format!("{e:#}")))),
    };
    // A failed soak is an error (a non-zero exit for the CLI), but its report
    // is what explains the failure: print it first.
    if let Ok(r) = &result {
        if let Some(c) = r.chaos.as_ref().filter(|c| !c.passed) {
            r.print(cfg.json);
            bail!("chaos soak FAILED: {}", c.failures.join("; "));
        }
    }
    result
}

/// `url` with `token=TOKEN` (URL-encoded) added to its query string.
fn with_token(url: &str, token: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}token={encoded}")
}

/// `text` with the value of every `token=` query parameter replaced by `***`.
pub(crate) fn redact_token(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("token=") {
        let boundary = at == 0 || matches!(rest.as_bytes()[at - 1], b'?' | b'&');
        let value_start = at + "token=".len();
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        if boundary {
            let end = rest
                .find(|c: char| c == '&' || c == '#' || c.is_whitespace() || c == '"' || c == ':')
                .unwrap_or(rest.len());
            if end > 0 {
                out.push_str("***");
            }
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// An in-process hub on a free loopback port.
struct SpawnedHub {
    url: String,
    handle: crate::ShutdownHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl SpawnedHub {
    async fn start(config: crate::ServerConfig) -> anyhow::Result<Self> {
        let server = crate::MemService::new("127.0.0.1", 0)
            .with_config(config)
            .bind()
            .await
            .context("cannot start the in-process hub")?;
        let url = format!("ws://{}/ws", server.local_addr());
        let handle = server.shutdown_handle();
        let task = tokio::spawn(server.run());
        Ok(Self { url, handle, task })
    }

    async fn stop(self) {
        self.handle.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// One WebSocket connection of a load client.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A load connection's socket read buffer, the hub's size. tungstenite
/// zero-fills the free part of its read buffer before every read, so a
/// larger buffer costs a larger memset per read: with 1,000 fan-out
/// subscribers each reading an event or two at a time, 16 KiB still cost a
/// tenth of the bench's CPU. 4 KiB holds a burst of 16 replies to 100-byte
/// values; larger replies take more reads.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Opens a WebSocket with Nagle's algorithm off.
pub(crate) async fn open(url: &str) -> anyhow::Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let conn = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, conn).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(anyhow::anyhow!("cannot connect to {url}: {e}")),
        Err(_) => Err(anyhow::anyhow!(
            "cannot connect to {url}: no answer within {CONNECT_TIMEOUT:?}"
        )),
    }
}

/// Opens `n` WebSockets, at most 64 handshakes at a time; fails if any fails.
pub(crate) async fn open_many(url: &str, n: usize) -> anyhow::Result<Vec<Ws>> {
    let url = std::sync::Arc::new(url.to_string());
    sixty_four_at_a_time(0..n, "a connecting task", move |_| {
        let url = url.clone();
        async move { open(&url).await }
    })
    .await
}

/// Runs `task` for every input as its own tokio task, at most 64 at a time,
/// and collects the connections they return (in completion order); fails
/// with the first task's error. `what` names the tasks if one panics.
async fn sixty_four_at_a_time<I, F, Fut>(
    inputs: impl IntoIterator<Item = I>,
    what: &str,
    task: F,
) -> anyhow::Result<Vec<Ws>>
where
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Ws>> + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut set = tokio::task::JoinSet::new();
    for input in inputs {
        let slots = slots.clone();
        let run = task(input);
        set.spawn(async move {
            let _slot = slots.acquire_owned().await.ok();
            run.await
        });
    }
    let mut out = Vec::with_capacity(set.len());
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(ws)) => out.push(ws),
            Ok(Err(e)) => return Err(e),
            Err(e) => bail!("{what} failed: {e}"),
        }
    }
    Ok(out)
}

/// Sends `request` (a `method` call) on every connection, 64 at a time, and
/// waits for each one's successful answer, skipping notifications; fails on
/// the first connection that is closed, answers with an error or stays
/// silent for [`RESPONSE_TIMEOUT`].
pub(crate) async fn ask_all(
    conns: Vec<Ws>,
    method: &'static str,
    request: String,
) -> anyhow::Result<Vec<Ws>> {
    let request = std::sync::Arc::new(request);
    let what = format!("a task sending {method}");
    sixty_four_at_a_time(conns, &what, move |mut ws| {
        let request = request.clone();
        async move {
            if ws.send(Message::text(request.as_str())).await.is_err() {
                bail!("the hub closed a connection before it answered {method}");
            }
            loop {
                match tokio::time::timeout(RESPONSE_TIMEOUT, ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => match classify(t.as_str()) {
                        Reply::Ok => return Ok(ws),
                        Reply::Notification => continue,
                        Reply::Err => {
                            let snippet: String = t.as_str().chars().take(300).collect();
                            bail!("{method} failed: {snippet}");
                        }
                    },
                    Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                        bail!("the hub closed a connection before it answered {method}")
                    }
                    Ok(Some(Ok(_))) => continue,
                    Err(_) => bail!("no answer to {method} within {RESPONSE_TIMEOUT:?}"),
                }
            }
        }
    })
    .await
}

/// When the phases of a run begin and end, and how many measured requests
/// remain; shared by all clients of a run.
pub(crate) struct Plan {
    /// Zero of the timestamps carried in fan-out values.
    pub start: Instant,
    /// Requests sent from here on are measured.
    pub warm_end: Instant,
    /// No request is sent from here on.
    pub end: Option<Instant>,
    /// Measured requests still to send (when `--requests` was given).
    budget: Option<AtomicI64>,
}

impl Plan {
    /// A plan starting now.
    pub fn new(cfg: &BenchConfig) -> Self {
        let start = Instant::now();
        let warm_end = start + cfg.warmup;
        let duration = match (cfg.duration, cfg.requests) {
            (None, None) => Some(Duration::from_secs(DEFAULT_SECONDS)),
            (d, _) => d,
        };
        Self {
            start,
            warm_end,
            end: duration.map(|d| warm_end + d),
            budget: cfg
                .requests
                .map(|n| AtomicI64::new(i64::try_from(n).unwrap_or(i64::MAX))),
        }
    }

    /// May a request be sent at `now`? Takes one from the budget when it is
    /// a measured one.
    pub fn may_send(&self, now: Instant) -> bool {
        if self.end.is_some_and(|e| now >= e) {
            return false;
        }
        if now < self.warm_end {
            return true;
        }
        match &self.budget {
            Some(b) => b.fetch_sub(1, Ordering::Relaxed) > 0,
            None => true,
        }
    }

    /// Nanoseconds since `start`.
    pub fn ns_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Live counters of one client, read by the progress line. Padded so that
/// clients on different threads do not share a cache line.
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct Counter {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
}

impl Counter {
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// What one client measured.
pub(crate) struct ClientOutcome {
    pub hist: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    /// When its last measured request completed.
    pub last: Option<Instant>,
}

impl ClientOutcome {
    pub fn new() -> Self {
        Self {
            hist: new_histogram(),
            ops: 0,
            errors: 0,
            last: None,
        }
    }

    /// Records a completed measured request sent at `sent`.
    pub fn record(&mut self, sent: Instant, done: Instant, ok: bool, live: &Counter) {
        if ok {
            self.ops += 1;
            record_ns(&mut self.hist, nanos(done - sent));
            live.ops.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors += 1;
            live.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.last = Some(done);
    }
}

/// A histogram of nanoseconds, 3 significant digits, growing as needed.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // new(3) only fails for sigfig > 5.
    Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
}

/// Records `ns`, growing the histogram as needed.
pub(crate) fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    if h.record(ns).is_err() {
        h.saturating_record(ns);
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Waits for every load client and merges their outcomes; a client task
/// that died counts as one error.
pub(crate) async fn join_clients(
    tasks: Vec<tokio::task::JoinHandle<ClientOutcome>>,
) -> ClientOutcome {
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(o) => outcomes.push(o),
            Err(_) => {
                let mut o = ClientOutcome::new();
                o.errors = 1;
                outcomes.push(o);
            }
        }
    }
    merge(outcomes)
}

/// Merges client outcomes into totals.
pub(crate) fn merge(outcomes: Vec<ClientOutcome>) -> ClientOutcome {
    let mut total = ClientOutcome::new();
    for o in outcomes {
        // Both grow automatically, so adding cannot run out of range.
        let _ = total.hist.add(&o.hist);
        total.ops += o.ops;
        total.errors += o.errors;
        total.last = total.last.max(o.last);
    }
    total
}

/// Seconds measured: from the end of the warmup to the last completion (at
/// least a microsecond, so rates stay finite).
pub(crate) fn measured_seconds(plan: &Plan, last: Option<Instant>) -> f64 {
    let end = last.unwrap_or(plan.warm_end);
    end.saturating_duration_since(plan.warm_end)
        .as_secs_f64()
        .max(1e-6)
}

/// A small fast PRNG (SplitMix64); statistical quality is plenty for picking
/// keys.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n ≥ 1).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What a response frame was, judged from as few bytes as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// A response with `result`.
    Ok,
    /// A response with `error`.
    Err,
    /// A notification (an event): not an answer to a request.
    Notification,
}

/// Classifies a text frame. The hub writes `{"jsonrpc":"2.0","id":ID,` first,
/// so normally only the bytes after the id are looked at; anything else is
/// parsed in full.
pub(crate) fn classify(text: &str) -> Reply {
    classify_bytes(text.as_bytes())
}

/// [`classify`] for a payload not yet checked for UTF-8 (an invalid one is
/// an error).
pub(crate) fn classify_bytes(text: &[u8]) -> Reply {
    const HEAD: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":";
    if let Some(rest) = text.strip_prefix(HEAD) {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let rest = &rest[digits..];
        if rest.starts_with(b",\"result\":") {
            return Reply::Ok;
        }
        if rest.starts_with(b",\"error\":") {
            return Reply::Err;
        }
    }
    classify_slow(text)
}

fn classify_slow(text: &[u8]) -> Reply {
    #[derive(serde::Deserialize)]
    struct Frame {
        #[serde(default)]
        method: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        error: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        result: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Frame>(text) {
        Ok(f) if f.method.is_some() && f.result.is_none() && f.error.is_none() => {
            Reply::Notification
        }
        Ok(f) if f.error.is_none() => Reply::Ok,
        // An error response, a batch answer or something unreadable.
        _ => Reply::Err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_added_encoded_and_redacted() {
        assert_eq!(with_token("ws://h/ws", "a b&c"), "ws://h/ws?token=a+b%26c");
        assert_eq!(with_token("ws://h/ws?x=1", "t"), "ws://h/ws?x=1&token=t");
        assert_eq!(
            redact_token("ws://h/ws?token=s3cret"),
            "ws://h/ws?token=***"
        );
        assert_eq!(
            redact_token("cannot connect to ws://h/ws?x=1&token=s3cret&y=2: refused"),
            "cannot connect to ws://h/ws?x=1&token=***&y=2: refused"
        );
        assert_eq!(redact_token("no token here"), "no token here");
        assert_eq!(redact_token("mytoken=keep"), "mytoken=keep");
    }

    #[test]
    fn classify_fast_and_slow() {
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","id":1,"result":{"value":"x","rev":3}}"#),
            Reply::Ok
        );
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","id":17,"error":{"code":-32001,"message":"m"}}"#),
            Reply::Err
        );
        assert_eq!(
            classify(r#"{"id":1,"jsonrpc":"2.0","result":null}"#),
            Reply::Ok
        );
        assert_eq!(
            classify(r#"{"error":{"code":1,"message":"m"},"id":1,"jsonrpc":"2.0"}"#),
            Reply::Err
        );
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","method":"event","params":{"sub":1}}"#),
            Reply::Notification
        );
        assert_eq!(classify("not json"), Reply::Err);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_ratio("1.5").is_err());
    }

    #[test]
    fn rng_below_stays_in_range() {
        let mut r = Rng::new(7);
        for n in [1u64, 2, 3, 10_000] {
            for _ in 0..1000 {
                assert!(r.below(n) < n);
            }
        }
        let u = r.unit();
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn clap_defaults_match_default() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchConfig,
        }
        let cli = Cli::try_parse_from(["x"]).map(|c| c.bench);
        let Ok(c) = cli else {
            panic!("defaults must parse")
        };
        let d = BenchConfig::default();
        assert_eq!(c.mode, d.mode);
        assert_eq!(c.clients, d.clients);
        assert_eq!(c.pipeline, d.pipeline);
        assert_eq!(c.duration, d.duration);
        assert_eq!(c.warmup, d.warmup);
        assert_eq!(c.keyspace, d.keyspace);
        assert_eq!(c.value_size, d.value_size);
        assert_eq!(c.mixed_get_ratio, d.mixed_get_ratio);
        assert_eq!(c.subscribers, d.subscribers);
        assert_eq!(c.max_message_bytes, d.max_message_bytes);
        assert_eq!(c.pid, d.pid);
        let c = Cli::try_parse_from([
            "x",
            "--mode",
            "prefix-fanout",
            "--seconds",
            "500ms",
            "--requests",
            "9",
        ]);
        let Ok(c) = c.map(|c| c.bench) else {
            panic!("flags must parse")
        };
        assert_eq!(c.mode, Mode::PrefixFanout);
        assert_eq!(c.duration, Some(Duration::from_millis(500)));
        assert_eq!(c.requests, Some(9));
    }
}
