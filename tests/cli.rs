//! The `memhub` binary's client commands (`get`, `set`, `del`, `keys`,
//! `watch`) against a real hub in this process: stdout JSON, stderr
//! sentences and exit codes (1 hub error, 2 usage, 3 connection).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// What one run of the binary produced.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one stdout line parsed as JSON (after checking the run succeeded).
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{self:?}");
        assert_eq!(self.stdout.lines().count(), 1, "{self:?}");
        serde_json::from_str(&self.stdout).expect("stdout is JSON")
    }
}

/// The binary with a clean environment (no MEMHUB_* or RUST_LOG from outside).
fn memhub_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memhub"));
    for var in ["MEMHUB_URL", "MEMHUB_TOKEN", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs the binary with `args` (and `stdin`), waiting at most WAIT.
async fn run_with(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
    let mut cmd = memhub_cmd();
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = stdin.to_string();
    let task = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("spawn memhub");
        let mut pipe = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut pipe, stdin.as_bytes()).unwrap();
        drop(pipe);
        child.wait_with_output().expect("wait for memhub")
    });
    let out = tokio::time::timeout(WAIT, task)
        .await
        .unwrap_or_else(|_| panic!("memhub {args:?} did not finish in time"))
        .unwrap();
    Run {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs `memhub CMD ARGS… --url URL`.
async fn run(hub: &TestHub, args: &[&str]) -> Run {
    let url = hub.url();
    let mut all = args.to_vec();
    all.extend(["--url", url.as_str()]);
    run_with(&all, &[], "").await
}

/// Checks a failed run: exit code and the one stderr sentence.
fn assert_fails(r: &Run, code: i32, stderr_has: &str) {
    assert_eq!(r.code, code, "{r:?}");
    assert!(r.stdout.is_empty(), "nothing on stdout on failure: {r:?}");
    assert!(r.stderr.contains(stderr_has), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_del_round_trip() {
    let hub = TestHub::start().await;
    let r = run(&hub, &["set", "greeting", r#"{"text":"hello","n":[1,2]}"#]).await;
    assert_eq!(r.stdout, "{\"rev\":1}\n");
    let r = run(&hub, &["get", "greeting"]).await;
    assert_eq!(
        r.json(),
        json!({"value": {"text": "hello", "n": [1, 2]}, "rev": 1})
    );
    assert!(
        r.stdout.starts_with("{\"value\":"),
        "value first: {}",
        r.stdout
    );
    assert!(r.stderr.is_empty(), "{r:?}");

    let r = run(&hub, &["set", "greeting", r#""hi""#]).await;
    assert_eq!(r.json(), json!({"rev": 2}));
    let r = run(&hub, &["del", "greeting"]).await;
    assert_eq!(r.json(), json!({"rev": 3}));

    let r = run(&hub, &["get", "greeting"]).await;
    assert_fails(&r, 1, "memhub: no value exists for key \"greeting\"");
    assert_eq!(r.stderr.lines().count(), 1, "one sentence: {r:?}");

    // JSON null is a value like any other.
    assert_eq!(run(&hub, &["set", "nothing", "null"]).await.code, 0);
    let r = run(&hub, &["get", "nothing"]).await;
    assert_eq!(r.stdout, "{\"value\":null,\"rev\":4}\n");
    let r = run(&hub, &["del", "greeting"]).await;
    assert_fails(&r, 1, "memhub: no value exists for key \"greeting\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_rev_conditions_and_their_errors() {
    let hub = TestHub::start().await;
    let r = run(&hub, &["set", "counter", "5", "--if-rev", "0"]).await;
    assert_eq!(r.json(), json!({"rev": 1}));
    let r = run(&hub, &["set", "counter", "6", "--if-rev", "0"]).await;
    assert_fails(
        &r,
        1,
        "memhub: key \"counter\" is at rev 1 but --if-rev 0 requires that it does not exist; nothing was changed",
    );
    let r = run(&hub, &["set", "counter", "6", "--if-rev", "7"]).await;
    assert_fails(
        &r,
        1,
        "memhub: key \"counter\" is at rev 1 but --if-rev 7 requires rev 7",
    );
    let r = run(&hub, &["set", "counter", "6", "--if-rev", "1"]).await;
    assert_eq!(r.json(), json!({"rev": 2}));
    let r = run(&hub, &["set", "missing", "1", "--if-rev", "4"]).await;
    assert_fails(&r, 1, "key \"missing\" does not exist but --if-rev 4");

    let r = run(&hub, &["del", "counter", "--if-rev", "1"]).await;
    assert_fails(&r, 1, "is at rev 2 but --if-rev 1 requires rev 1");
    let r = run(&hub, &["get", "counter"]).await;
    assert_eq!(
        r.json(),
        json!({"value": 6, "rev": 2}),
        "nothing was deleted"
    );
    let r = run(&hub, &["del", "counter", "--if-rev", "2"]).await;
    assert_eq!(r.json(), json!({"rev": 3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_refused_with_a_quoting_hint() {
    let hub = TestHub::start().await;
    let r = run(&hub, &["set", "greeting", "hello"]).await;
    assert_fails(&r, 2, "memhub: the value is not valid JSON");
    assert!(
        r.stderr.contains(r#"memhub set greeting '"hello"'"#),
        "{r:?}"
    );
    let r = run(&hub, &["get", "greeting"]).await;
    assert_eq!(r.code, 1, "nothing was written: {r:?}");

    // `-` reads the value from stdin.
    let url = hub.url();
    let args = ["set", "doc", "-", "--url", url.as_str()];
    let r = run_with(&args, &[], "{\"a\": [1, 2]}\n").await;
    assert_eq!(r.json(), json!({"rev": 1}));
    let r = run_with(&args, &[], "{oops").await;
    assert_fails(&r, 2, "memhub: stdin is not valid JSON");

    // Bad flags are usage errors too (clap's exit code 2).
    let r = run(&hub, &["set", "k", "1", "--ttl-ms", "0"]).await;
    assert_fails(&r, 2, "at least 1 ms");
    let r = run_with(&["get", "k", "--url", "127.0.0.1:18813"], &[], "").await;
    assert_fails(&r, 2, "must start with ws://");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_lists_one_object_per_line() {
    let hub = TestHub::start().await;
    assert_eq!(run(&hub, &["set", "user:2", "[1,2]"]).await.code, 0);
    assert_eq!(run(&hub, &["set", "user:1", r#""ann""#]).await.code, 0);
    assert_eq!(run(&hub, &["set", "other", "true"]).await.code, 0);
    let r = run(&hub, &["set", "user:3", "{}", "--ttl-ms", "600000"]).await;
    assert_eq!(r.json(), json!({"rev": 4}));

    let r = run(&hub, &["keys", "user:"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{r:?}");
    assert_eq!(lines[0], r#"{"key":"user:1","rev":2,"bytes":5}"#);
    assert_eq!(lines[1], r#"{"key":"user:2","rev":1,"bytes":5}"#);
    let third: Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(third["key"], "user:3");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let expires = third["expires_at_ms"].as_u64().expect("expires_at_ms");
    assert!(expires > now_ms && expires <= now_ms + 600_000, "{third}");

    let r = run(&hub, &["keys"]).await;
    assert_eq!(r.stdout.lines().count(), 4, "no prefix: every key: {r:?}");
    let r = run(&hub, &["keys", "nothing-here"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_comes_from_the_environment() {
    let hub = TestHub::start().await;
    let url = hub.url();
    let r = run_with(&["set", "k", "1"], &[("MEMHUB_URL", url.as_str())], "").await;
    assert_eq!(r.json(), json!({"rev": 1}));
    let r = run_with(&["get", "k"], &[("MEMHUB_URL", url.as_str())], "").await;
    assert_eq!(r.json(), json!({"value": 1, "rev": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_hub_fails_at_once_with_exit_3() {
    // A port nobody listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    for args in [
        vec!["get", "k"],
        vec!["set", "k", "1"],
        vec!["del", "k"],
        vec!["keys"],
        vec!["watch", "k"],
    ] {
        let mut all = args.clone();
        all.extend(["--url", url.as_str()]);
        let started = Instant::now();
        let r = run_with(&all, &[], "").await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert_fails(
            &r,
            3,
            &format!("memhub: cannot connect to the hub at {url}"),
        );
        assert!(r.stderr.contains("memhub serve"), "{r:?}");
    }
}

/// A running `memhub watch`: its stdout lines arrive on a channel; dropping
/// it kills the process.
struct Watcher {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Watcher {
    fn start(hub: &TestHub, args: &[&str]) -> Self {
        let mut child = memhub_cmd()
            .arg("watch")
            .args(args)
            .args(["--url", &hub.url()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn memhub watch");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next stdout line as JSON, within WAIT.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .expect("timed out waiting for a watch line")
            .expect("memhub watch ended");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_a_key_prints_the_snapshot_then_each_event() {
    let hub = TestHub::start().await;
    let client = memhub::Client::connect(&hub.url()).await.unwrap();
    client.update("greeting", &json!("hello")).await.unwrap();

    let mut w = Watcher::start(&hub, &["greeting"]);
    // The snapshot is printed once the subscription exists, so every later
    // write is an event.
    assert_eq!(
        w.next().await,
        json!({"key": "greeting", "event": "snapshot", "exists": true, "value": "hello", "rev": 1})
    );
    client
        .update("greeting", &json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(
        w.next().await,
        json!({"key": "greeting", "event": "update", "value": {"text": "hi"}, "rev": 2})
    );
    client.delete("greeting").await.unwrap();
    assert_eq!(
        w.next().await,
        json!({"key": "greeting", "event": "delete", "rev": 3})
    );
    drop(w);

    let mut w = Watcher::start(&hub, &["absent"]);
    assert_eq!(
        w.next().await,
        json!({"key": "absent", "event": "snapshot", "exists": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_a_prefix_prints_events_of_matching_keys() {
    let hub = TestHub::start().await;
    let client = memhub::Client::connect(&hub.url()).await.unwrap();
    let mut w = Watcher::start(&hub, &["--prefix", "user:"]);
    // A prefix watch prints nothing until an event: wait until the hub
    // counts its subscription.
    hub.wait_stats(|s| s["subscriptions"] == 1).await;
    client.update("other", &1).await.unwrap();
    client.update("user:1", &json!("ann")).await.unwrap();
    assert_eq!(
        w.next().await,
        json!({"key": "user:1", "event": "update", "value": "ann", "rev": 2})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_needs_exactly_one_of_key_and_prefix() {
    let hub = TestHub::start().await;
    let r = run(&hub, &["watch"]).await;
    assert_fails(&r, 2, "<KEY|--prefix <P>>");
    let r = run(&hub, &["watch", "k", "--prefix", "p"]).await;
    assert_fails(&r, 2, "cannot be used with");
}

#[tokio::test]
async fn every_client_command_has_examples_in_its_help() {
    for cmd in ["get", "set", "del", "keys", "watch"] {
        let r = run_with(&[cmd, "--help"], &[], "").await;
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.contains("Examples:"), "{cmd}: {}", r.stdout);
        assert!(r.stdout.contains("MEMHUB_URL"), "{cmd}: {}", r.stdout);
        assert!(r.stdout.contains(&format!("memhub {cmd} ")), "{cmd}");
    }
}

/// `memhub bench` from the command line, so the tool cannot rot: a 2-second
/// run against its own in-process hub completes with zero errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_smoke_run_has_no_errors() {
    let r = run_with(
        &[
            "bench",
            "--spawn",
            "--seconds",
            "2",
            "--clients",
            "4",
            "--json",
        ],
        &[],
        "",
    )
    .await;
    let report = r.json();
    assert_eq!(report["errors"], json!(0), "{report}");
    assert!(report["ops"].as_u64().is_some_and(|n| n > 0), "{report}");
}

/// `memhub bench --token` reaches a hub with tokens, and the token appears
/// nowhere in its output, nor in the error when it is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_token_is_used_and_never_printed() {
    let mut tokens = memhub::server::Tokens::new();
    tokens
        .add("bench-secret-9f2", memhub::server::Role::Write)
        .expect("token");
    let hub = TestHub::with_config(memhub::ServerConfig {
        tokens,
        ..memhub::ServerConfig::default()
    })
    .await;
    let url = hub.url();
    let args = [
        "bench",
        "--url",
        &url,
        "--seconds",
        "1",
        "--clients",
        "2",
        "--json",
    ];
    let mut with_token = args.to_vec();
    with_token.extend(["--token", "bench-secret-9f2"]);
    let ok = run_with(&with_token, &[], "").await;
    let report = ok.json();
    assert_eq!(report["errors"], json!(0), "{report}");
    assert!(!ok.stdout.contains("bench-secret") && !ok.stderr.contains("bench-secret"));
    assert!(
        report["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("?token=***")),
        "{report}"
    );

    let wrong = run_with(&args, &[("MEMHUB_TOKEN", "wrong-secret-71c")], "").await;
    assert_ne!(wrong.code, 0, "{wrong:?}");
    assert!(wrong.stderr.contains("401"), "{wrong:?}");
    assert!(
        !wrong.stderr.contains("wrong-secret") && !wrong.stdout.contains("wrong-secret"),
        "{wrong:?}"
    );
}
