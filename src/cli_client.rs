//! The client subcommands of the `memhub` command line: `get`, `set`, `del`,
//! `keys` and `watch`, built on [`memhub::Client`].
//!
//! Every command prints JSON on stdout (one compact object per line) and, on
//! failure, one sentence on stderr and a non-zero exit code:
//! [`EXIT_HUB`] when the hub refused the request, [`EXIT_USAGE`] for bad
//! input (clap uses the same code for bad flags), [`EXIT_CONNECTION`] when
//! the hub could not be reached or the connection broke.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use futures_util::StreamExt;
use memhub::client::{ClientOptions, Event, KeyInfo, Snapshot, WriteOptions};
use memhub::{Client, Error};
use serde_json::Value;

/// The hub URL used when neither `--url` nor `MEMHUB_URL` is given.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:18813/ws";

/// Exit code: the hub answered with an error (not found, rev mismatch, …).
pub const EXIT_HUB: i32 = 1;
/// Exit code: the command line or its input was wrong (same as clap's).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the hub could not be reached, or the connection broke.
pub const EXIT_CONNECTION: i32 = 3;

/// How long one call (or the connection handshake) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between reconnect attempts of `watch`.
const WATCH_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Where the hub is and how to authenticate (shared by every client command).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connection")]
pub struct ConnArgs {
    /// WebSocket URL of the hub.
    #[arg(long, env = "MEMHUB_URL", default_value = DEFAULT_URL, value_name = "URL", value_parser = parse_url)]
    pub url: String,
    /// Token sent as `Authorization: Bearer TOKEN`, for hubs that require one.
    #[arg(
        long,
        env = "MEMHUB_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// For wss:// URLs: also trust the CA certificates in this PEM file.
    #[arg(long, env = "MEMHUB_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<std::path::PathBuf>,
}

fn parse_url(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("ws://") || lower.starts_with("wss://") {
        Ok(s.to_string())
    } else {
        Err(format!(
            "the hub URL must start with ws:// or wss://, like {DEFAULT_URL}"
        ))
    }
}

fn parse_ttl_ms(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("the TTL must be at least 1 ms".into()),
        Ok(ms) => Ok(ms),
        Err(_) => Err("expected a whole number of milliseconds, like 60000".into()),
    }
}

/// The client commands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Print a key's value and rev as {"value":…,"rev":…}.
    #[command(after_help = "\
Examples:
  memhub get greeting                   # {\"value\":\"hello\",\"rev\":3}
  memhub get config | jq .value         # just the value
  memhub --help                         # exit codes and the other commands

Exits 1 with `memhub: no value exists for key \"…\"` if the key is absent.")]
    Get(GetArgs),
    /// Store a JSON value under a key; print the write's rev as {"rev":…}.
    #[command(after_help = "\
Examples:
  memhub set greeting '\"hello\"'         # a JSON string: quote it for JSON and for the shell
  memhub set config '{\"debug\":true}'
  memhub set counter 5 --if-rev 0       # only if the key does not exist yet
  memhub set counter 6 --if-rev 7       # only if the key is still at rev 7
  memhub set session '{}' --ttl-ms 60000
  jq -c . big.json | memhub set big -   # read the value from stdin

A failed --if-rev condition exits 1 and writes nothing.")]
    Set(SetArgs),
    /// Delete a key; print the deletion's rev as {"rev":…}.
    #[command(alias = "delete")]
    #[command(after_help = "\
Examples:
  memhub del greeting
  memhub del lock --if-rev 12           # only if nobody changed it since rev 12

Exits 1 if the key is absent or the --if-rev condition fails.")]
    Del(DelArgs),
    /// List keys (all, or those starting with PREFIX), one JSON object per line.
    #[command(after_help = "\
Each line is {\"key\":…,\"rev\":…,\"bytes\":…} plus \"expires_at_ms\" (Unix ms) for keys with a TTL;
\"bytes\" is the size of the value's compact JSON. Keys come in key order.

Examples:
  memhub keys                           # every key
  memhub keys user:                     # keys starting with \"user:\"
  memhub keys | jq -r .key              # just the names")]
    Keys(KeysArgs),
    /// Print a key's changes (or every key's under a prefix) as JSON lines until Ctrl-C.
    #[command(after_help = "\
Output, one JSON object per line:
  {\"key\":\"k\",\"event\":\"snapshot\",\"exists\":true,\"value\":1,\"rev\":4}   first, for `watch KEY` only
  {\"key\":\"k\",\"event\":\"update\",\"value\":2,\"rev\":5}
  {\"key\":\"k\",\"event\":\"delete\",\"rev\":6}                          also \"expire\"
  {\"event\":\"lagged\"}          the watcher fell behind and missed events (list again with `memhub keys`)

If the connection drops, watch reconnects every second and then reports what
changed while it was away as one event (a prefix watch reports \"lagged\").

Examples:
  memhub watch greeting
  memhub watch --prefix user:
  memhub watch --prefix ''              # every key
  memhub watch config | jq -c --unbuffered .value")]
    Watch(WatchArgs),
}

/// `memhub get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The key to read.
    pub key: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `memhub set`.
#[derive(Args, Debug)]
pub struct SetArgs {
    /// The key to write.
    pub key: String,
    /// The value as JSON text (a string needs JSON quotes: '"hello"'); `-` reads it from stdin.
    #[arg(allow_hyphen_values = true)]
    pub json: String,
    /// Write only if the key's rev equals N (0: only if the key does not exist).
    #[arg(long, value_name = "N")]
    pub if_rev: Option<u64>,
    /// Expire the key this many milliseconds after the write.
    #[arg(long, value_name = "MS", value_parser = parse_ttl_ms)]
    pub ttl_ms: Option<u64>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `memhub del`.
#[derive(Args, Debug)]
pub struct DelArgs {
    /// The key to delete.
    pub key: String,
    /// Delete only if the key's rev equals N.
    #[arg(long, value_name = "N")]
    pub if_rev: Option<u64>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `memhub keys`.
#[derive(Args, Debug)]
pub struct KeysArgs {
    /// List only keys starting with this (default: every key).
    pub prefix: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `memhub watch`.
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["key", "prefix"]))]
pub struct WatchArgs {
    /// The key to watch.
    pub key: Option<String>,
    /// Watch every key starting with P instead of one key ('' watches every key).
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Why a command failed: what to tell the user and which exit code to use.
#[derive(Debug)]
pub enum Failure {
    /// The hub refused the request.
    Hub(String),
    /// The input was wrong.
    Usage(String),
    /// The hub could not be reached or the connection broke.
    Connection(String),
    /// Stdout was closed (e.g. piped into `head`): stop quietly.
    StdoutClosed,
}

impl Failure {
    fn exit_code(&self) -> i32 {
        match self {
            Failure::Hub(_) => EXIT_HUB,
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Connection(_) => EXIT_CONNECTION,
            Failure::StdoutClosed => 0,
        }
    }

    fn message(&self) -> Option<&str> {
        match self {
            Failure::Hub(m) | Failure::Usage(m) | Failure::Connection(m) => Some(m),
            Failure::StdoutClosed => None,
        }
    }
}

/// A failed call, worded for the command line.
fn call_failure(e: Error) -> Failure {
    match e {
        Error::Connection(_) | Error::Timeout(_) | Error::Version { .. } => {
            Failure::Connection(e.to_string())
        }
        other => Failure::Hub(other.to_string()),
    }
}

/// A failed conditional write or delete, saying what the condition was.
fn write_failure(key: &str, if_rev: Option<u64>, e: Error) -> Failure {
    match (e, if_rev) {
        (Error::RevMismatch { current }, Some(want)) => {
            let now = if current == 0 {
                format!("key {key:?} does not exist")
            } else {
                format!("key {key:?} is at rev {current}")
            };
            let cond = if want == 0 {
                "--if-rev 0 requires that it does not exist".to_string()
            } else {
                format!("--if-rev {want} requires rev {want}")
            };
            Failure::Hub(format!("{now} but {cond}; nothing was changed"))
        }
        (e, _) => call_failure(e),
    }
}

/// Options for a one-shot command: no retries, so an unreachable hub fails at once.
fn options(conn: &ConnArgs) -> ClientOptions {
    ClientOptions {
        max_retry: 0,
        retry_delay: Duration::ZERO,
        token: conn.token.clone(),
        ca_file: conn.ca_file.clone(),
        request_timeout: REQUEST_TIMEOUT,
        ..ClientOptions::default()
    }
}

/// Connects for one command; an unreachable hub fails at once with a hint.
async fn connect(conn: &ConnArgs) -> Result<Client, Failure> {
    connect_with(conn, options(conn)).await
}

async fn connect_with(conn: &ConnArgs, opts: ClientOptions) -> Result<Client, Failure> {
    Client::connect_with(&conn.url, opts)
        .await
        .map_err(|e| connect_failure(&conn.url, e))
}

fn connect_failure(url: &str, e: Error) -> Failure {
    let detail = match &e {
        Error::Connection(m) => {
            let prefix = format!("cannot connect to {url}: ");
            m.strip_prefix(&prefix).unwrap_or(m).to_string()
        }
        Error::Timeout(t) => format!("no answer within {t:?}"),
        Error::Version { hub, client } => {
            return Failure::Connection(format!(
                "the hub at {url} speaks protocol {hub} but this memhub speaks protocol {client}; \
                 use a memhub of the same release as the hub"
            ))
        }
        other => other.to_string(),
    };
    let hint = if detail.contains("404") {
        "is the path right? The hub serves WebSockets at /ws"
    } else if detail.contains("401") {
        "the hub requires a token: pass --token or set MEMHUB_TOKEN"
    } else if detail.contains("403") {
        "the hub refused this client (protected mode, or a browser origin it does not allow)"
    } else {
        "is a hub running there? Start one with `memhub serve`, or point --url (or MEMHUB_URL) at a running hub"
    };
    Failure::Connection(format!(
        "cannot connect to the hub at {url} ({detail}); {hint}"
    ))
}

/// A JSON object whose fields keep the order given (a `serde_json::Map`
/// would sort them); `None` fields are left out.
struct Obj(Vec<(&'static str, Value)>);

impl Obj {
    fn new() -> Self {
        Obj(Vec::new())
    }

    fn field(mut self, name: &'static str, v: impl Into<Value>) -> Self {
        self.0.push((name, v.into()));
        self
    }

    fn opt(self, name: &'static str, v: Option<impl Into<Value>>) -> Self {
        match v {
            Some(v) => self.field(name, v),
            None => self,
        }
    }
}

impl std::fmt::Display for Obj {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (i, (name, v)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}:{v}", Value::from(*name))?;
        }
        f.write_str("}")
    }
}

/// Writes one line of JSON to stdout and flushes it.
fn emit(out: &mut impl Write, v: &Obj) -> Result<(), Failure> {
    writeln!(out, "{v}")
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => Failure::StdoutClosed,
            _ => Failure::Connection(format!("cannot write to stdout: {e}")),
        })
}

/// True for words that need no quoting in a POSIX shell.
fn shell_safe(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/@+,%=".contains(c))
}

/// Parses `set`'s value, explaining how to quote a string if it is not JSON.
fn parse_value(key: &str, text: &str, from_stdin: bool) -> Result<Value, Failure> {
    let source = if from_stdin { "stdin" } else { "the value" };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        if e.to_string().starts_with("recursion limit exceeded") {
            return Failure::Usage(format!(
                "{source} nests arrays and objects too deeply (at most 127 levels)"
            ));
        }
        let example = if !from_stdin && shell_safe(key) && shell_safe(text) {
            format!("memhub set {key} '\"{text}\"'")
        } else {
            "memhub set greeting '\"hello\"'".to_string()
        };
        Failure::Usage(format!(
            "{source} is not valid JSON ({e}); a string needs JSON double quotes inside shell quotes, \
             e.g. {example}"
        ))
    })?;
    if let Some(n) = first_wide_integer(text) {
        return Err(Failure::Usage(format!(
            "{source} holds the integer {n}, which does not fit in 64 bits and would be stored \
             rounded; store it as a string instead, e.g. '\"{n}\"'"
        )));
    }
    Ok(value)
}

/// The first integer literal in valid JSON `text` that fits neither `i64`
/// nor `u64` (the client would turn it into a rounded float).
fn first_wide_integer(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
        } else if b == b'"' {
            in_string = true;
            i += 1;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < bytes.len()
                && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            let n = &text[start..i];
            let integer = !n.contains(['.', 'e', 'E']);
            if integer && n.parse::<i64>().is_err() && n.parse::<u64>().is_err() {
                return Some(n);
            }
        } else {
            i += 1;
        }
    }
    None
}

fn key_info_json(k: &KeyInfo) -> Obj {
    Obj::new()
        .field("key", k.key.as_str())
        .field("rev", k.rev)
        .field("bytes", k.bytes)
        .opt("expires_at_ms", k.expires_at_ms)
}

fn snapshot_json(key: &str, s: &Snapshot) -> Obj {
    Obj::new()
        .field("key", key)
        .field("event", "snapshot")
        .field("exists", s.exists)
        .opt("value", s.value.clone())
        .opt("rev", s.rev)
}

fn event_json(ev: &Event) -> Obj {
    Obj::new()
        .opt("key", ev.key.as_deref())
        .field("event", ev.kind.as_str())
        .opt("value", ev.value.clone())
        .opt("rev", ev.rev)
}

/// Runs a client command; returns the process exit code.
pub async fn run(cmd: ClientCommand) -> i32 {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match execute(cmd, &mut out).await {
        Ok(()) => 0,
        Err(f) => {
            if let Some(m) = f.message() {
                eprintln!("memhub: {m}");
            }
            f.exit_code()
        }
    }
}

async fn execute(cmd: ClientCommand, out: &mut impl Write) -> Result<(), Failure> {
    match cmd {
        ClientCommand::Get(a) => {
            let client = connect(&a.conn).await?;
            let (value, rev) = client
                .get_with_rev::<Value>(&a.key)
                .await
                .map_err(call_failure)?;
            emit(out, &Obj::new().field("value", value).field("rev", rev))
        }
        ClientCommand::Set(a) => {
            let from_stdin = a.json == "-";
            let text = if from_stdin {
                let mut s = String::new();
                io::stdin().read_to_string(&mut s).map_err(|e| {
                    Failure::Usage(format!("cannot read the value from stdin: {e}"))
                })?;
                s
            } else {
                a.json.clone()
            };
            let value = parse_value(&a.key, &text, from_stdin)?;
            let client = connect(&a.conn).await?;
            let opts = WriteOptions {
                if_rev: a.if_rev,
                ttl: a.ttl_ms.map(Duration::from_millis),
            };
            let rev = client
                .update_with(&a.key, &value, opts)
                .await
                .map_err(|e| write_failure(&a.key, a.if_rev, e))?;
            emit(out, &Obj::new().field("rev", rev))
        }
        ClientCommand::Del(a) => {
            let client = connect(&a.conn).await?;
            let res = match a.if_rev {
                Some(r) => client.delete_if(&a.key, r).await,
                None => client.delete(&a.key).await,
            };
            let rev = res.map_err(|e| write_failure(&a.key, a.if_rev, e))?;
            emit(out, &Obj::new().field("rev", rev))
        }
        ClientCommand::Keys(a) => {
            let client = connect(&a.conn).await?;
            let mut keys = client.keys(a.prefix.as_deref().unwrap_or_default());
            while let Some(k) = keys.next().await {
                emit(out, &key_info_json(&k.map_err(call_failure)?))?;
            }
            Ok(())
        }
        ClientCommand::Watch(a) => watch(a, out).await,
    }
}

async fn watch(a: WatchArgs, out: &mut impl Write) -> Result<(), Failure> {
    // Fail at once if the hub is unreachable; only then connect with a
    // client that keeps reconnecting for as long as the watch runs.
    drop(connect(&a.conn).await?);
    let url = a.conn.url.clone();
    let opts = ClientOptions {
        max_retry: u32::MAX,
        retry_delay: WATCH_RETRY_DELAY,
        on_reconnect: Some(Arc::new(move || {
            eprintln!("memhub: reconnected to {url}; watching again");
        })),
        ..options(&a.conn)
    };
    let client = connect_with(&a.conn, opts).await?;
    let mut sub = match (&a.key, &a.prefix) {
        (_, Some(p)) => client.subscribe_prefix(p).await,
        (Some(k), None) => client.subscribe(k).await,
        (None, None) => unreachable!("clap requires KEY or --prefix"),
    }
    .map_err(call_failure)?;
    if let (Some(k), Some(snap)) = (&a.key, sub.initial()) {
        emit(out, &snapshot_json(k, snap))?;
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            ev = sub.next_event() => match ev {
                Some(ev) => emit(out, &event_json(&ev))?,
                None => return Err(Failure::Connection("the connection to the hub closed".into())),
            },
            _ = &mut ctrl_c => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_json_explains_shell_quoting() {
        let Err(Failure::Usage(m)) = parse_value("greeting", "hello", false) else {
            panic!("hello is not JSON");
        };
        assert!(m.contains(r#"memhub set greeting '"hello"'"#), "{m}");
        let Err(Failure::Usage(m)) = parse_value("a b", "it's", false) else {
            panic!("it's is not JSON");
        };
        assert!(m.contains(r#"memhub set greeting '"hello"'"#), "{m}");
        assert_eq!(
            parse_value("k", r#"{"a":[1]}"#, false).unwrap(),
            serde_json::json!({"a":[1]})
        );
    }

    #[test]
    fn integers_beyond_64_bits_are_refused() {
        assert_eq!(
            first_wide_integer(r#"{"a":[1,-9223372036854775808,18446744073709551615]}"#),
            None
        );
        assert_eq!(
            first_wide_integer(r#"{"n":"123456789012345678901234567890","f":1.5e300}"#),
            None,
            "strings and floats are fine"
        );
        assert_eq!(
            first_wide_integer(r#"{"a\"":[2, -18446744073709551616]}"#),
            Some("-18446744073709551616")
        );
        let Err(Failure::Usage(m)) = parse_value("k", "123456789012345678901234567890", false)
        else {
            panic!("a 97-bit integer is refused");
        };
        assert!(m.contains(r#"'"123456789012345678901234567890"'"#), "{m}");
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let Err(Failure::Usage(m)) = parse_value("k", &deep, false) else {
            panic!("too deep");
        };
        assert!(m.contains("too deeply"), "{m}");
    }

    #[test]
    fn rev_mismatch_names_both_revs() {
        let f = write_failure("k", Some(3), Error::RevMismatch { current: 5 });
        assert_eq!(f.exit_code(), EXIT_HUB);
        assert_eq!(
            f.message().unwrap(),
            r#"key "k" is at rev 5 but --if-rev 3 requires rev 3; nothing was changed"#
        );
        let f = write_failure("k", Some(0), Error::RevMismatch { current: 2 });
        assert!(f.message().unwrap().contains("does not exist"));
    }

    #[test]
    fn output_keeps_field_order_and_skips_absent_fields() {
        let k = KeyInfo {
            key: "a\"b".into(),
            rev: 2,
            bytes: 3,
            expires_at_ms: None,
        };
        assert_eq!(
            key_info_json(&k).to_string(),
            r#"{"key":"a\"b","rev":2,"bytes":3}"#
        );
        let snap = Snapshot {
            exists: false,
            value: None,
            rev: None,
        };
        assert_eq!(
            snapshot_json("k", &snap).to_string(),
            r#"{"key":"k","event":"snapshot","exists":false}"#
        );
    }

    #[test]
    fn urls_need_a_websocket_scheme() {
        assert!(parse_url("ws://h:1/ws").is_ok());
        assert!(parse_url("WSS://h/ws").is_ok());
        assert!(parse_url("127.0.0.1:18813").is_err());
    }
}
