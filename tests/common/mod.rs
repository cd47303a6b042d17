//! Test support: a real hub on a free loopback port and a raw WebSocket
//! JSON-RPC client over a real socket (tokio-tungstenite).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use memhub::{MemService, ServerConfig, ShutdownHandle};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single awaited condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A hub running in this process on 127.0.0.1 and a free port.
pub struct TestHub {
    pub addr: SocketAddr,
    /// The hub's lock table, for in-process lock holders.
    pub locks: std::sync::Arc<memhub::locks::Locks>,
    pub handle: ShutdownHandle,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestHub {
    pub async fn start() -> Self {
        Self::with_config(ServerConfig::default()).await
    }

    pub async fn with_config(config: ServerConfig) -> Self {
        let server = MemService::new("127.0.0.1", 0)
            .with_config(config)
            .bind()
            .await
            .expect("bind test hub");
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let locks = server.locks();
        let task = tokio::spawn(server.run());
        Self {
            addr,
            locks,
            handle,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// Fetches an HTTP path with a plain request and returns (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = http_request(&self.addr.to_string(), path, &[]).await;
        (status, body)
    }

    /// Reads `stats` over a fresh connection (which counts itself).
    pub async fn stats(&self) -> Value {
        let mut c = self.client().await;
        c.call("stats", json!({})).await
    }

    /// Polls `stats` until `pred` holds.
    pub async fn wait_stats(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = self.stats().await;
            if pred(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stats never matched: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) -> std::io::Result<()> {
        self.handle.shutdown();
        let task = self.task.take().unwrap();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("hub stopped in time")
            .unwrap()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// A raw JSON-RPC client: sends frames, reads frames, sorts events from responses.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Event notifications read while waiting for a response.
    pub events: std::collections::VecDeque<Value>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Self::from_ws(ws)
    }

    /// Wraps an already upgraded socket.
    pub fn from_ws(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self {
            ws,
            next_id: 1,
            events: Default::default(),
        }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send");
    }

    /// Next text frame parsed as JSON (skips pings/pongs), within WAIT.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("websocket error");
            match msg {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("valid JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Next frame that is not an event notification (events are queued).
    pub async fn recv_response(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            if v.get("method").and_then(Value::as_str) == Some("event") {
                self.events.push_back(v["params"].clone());
            } else {
                return v;
            }
        }
    }

    /// Next event's params (queued ones first).
    pub async fn next_event(&mut self) -> Value {
        if let Some(e) = self.events.pop_front() {
            return e;
        }
        let v = self.recv().await;
        assert_eq!(v["method"], "event", "expected an event, got {v}");
        v["params"].clone()
    }

    /// Sends a request and returns the whole response object.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_text(frame.to_string()).await;
        let resp = self.recv_response().await;
        assert_eq!(resp["id"], id, "response out of order: {resp}");
        resp
    }

    /// Sends a request and returns its `result`, panicking on an error response.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let resp = self.request(method, params).await;
        assert!(resp.get("error").is_none(), "{method} failed: {resp}");
        resp["result"].clone()
    }

    /// Sends a request and returns its `error` object, panicking on success.
    pub async fn call_err(&mut self, method: &str, params: Value) -> Value {
        let resp = self.request(method, params).await;
        assert!(
            resp.get("result").is_none(),
            "{method} unexpectedly succeeded: {resp}"
        );
        resp["error"].clone()
    }
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Checks that `resp` is a JSON-RPC error response with this `id` and
/// `code`, no `result`, and a non-empty human-readable message; returns the
/// error object.
#[track_caller]
pub fn assert_error(resp: &Value, id: &Value, code: i64) -> Value {
    let obj = resp
        .as_object()
        .unwrap_or_else(|| panic!("expected an error response object, got {resp}"));
    assert_eq!(
        obj.get("jsonrpc"),
        Some(&json!("2.0")),
        "jsonrpc member in {resp}"
    );
    assert_eq!(
        obj.get("id"),
        Some(id),
        "id member (must be present) in {resp}"
    );
    assert!(
        obj.get("result").is_none(),
        "an error response must not carry a result: {resp}"
    );
    let err = &resp["error"];
    assert_eq!(err["code"], json!(code), "error code in {resp}");
    let msg = err["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error message must be a string: {resp}"));
    assert!(
        !msg.trim().is_empty(),
        "error message must not be empty: {resp}"
    );
    err.clone()
}

/// Sends a request that must fail with `code` (see [`assert_error`]);
/// returns the error object.
pub async fn expect_err(c: &mut Client, method: &str, params: Value, code: i64) -> Value {
    let resp = c.request(method, params.clone()).await;
    let id = resp["id"].clone();
    let err = assert_error(&resp, &id, code);
    assert_eq!(err["code"], json!(code), "{method} {params}: {resp}");
    err
}

/// One plain HTTP/1.1 `GET path` to `addr` with extra `headers`; returns
/// (status, response head with lowercase header names, body).
pub async fn http_request(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("a response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_lowercase(), body.to_string())
}

/// The real `memhub` binary serving on 127.0.0.1 and a free port, its log
/// collected; killed when dropped. Use it where the hub's own process
/// matters: its RSS, its log, its exit.
pub struct BinaryHub {
    pub child: std::process::Child,
    pub addr: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    terminated: bool,
}

impl BinaryHub {
    /// Starts `memhub serve --host 127.0.0.1 --port 0 <args>` with `env`,
    /// and waits for its `listening on` line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_memhub"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memhub");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        // Drain the log for the hub's whole life so it never blocks on a pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some((_, rest)) = line.split_once("listening on ws://") {
                    let _ = tx.send(rest.split_once("/ws").map(|(a, _)| a.to_string()));
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(WAIT)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("memhub did not log `listening on ws://ADDR/ws`"));
        Self {
            child,
            addr,
            log,
            terminated: false,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The hub's resident set size, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS line");
        kb * 1024
    }

    /// Sends the hub SIGTERM (a graceful shutdown), once.
    pub fn terminate(&mut self) {
        if std::mem::replace(&mut self.terminated, true) {
            return;
        }
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success());
    }

    /// Stops the hub with SIGTERM, checks it exits with status 0 within
    /// [`WAIT`], returns its whole log.
    pub fn stop(mut self) -> String {
        self.terminate();
        let deadline = std::time::Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "memhub did not exit within {WAIT:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(0), "memhub exited with {status}");
        // The reader thread ends with the pipe; give it a moment to finish.
        let deadline = std::time::Instant::now() + WAIT;
        while std::sync::Arc::strong_count(&self.log) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.clone()
    }
}

impl Drop for BinaryHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
