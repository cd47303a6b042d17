//! One live WebSocket to the hub: a writer task, a reader task, the table of
//! requests awaiting answers and the routes from hub subscription ids to
//! local subscriptions.
//!
//! The reader answers each waiting call with its response, routes events, and
//! registers a subscription's route (and its snapshot) *before* reading the
//! next frame, so no event of a new subscription can be missed or reordered.
//! When the socket ends, every waiting call fails at once with
//! `Error::Connection` and the link reports itself lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

use super::error::{Error, Result};
use super::subscription::{Event, Snapshot, SubState};
use crate::jsontext::{deeper_than, from_str_prechecked};
use crate::protocol::RpcError;

/// A client socket's read buffer. tungstenite zero-fills the free part of
/// its read buffer before every read, so its 128 KiB default costs a memset
/// of up to 128 KiB per read (a fifth of `memhub bench`'s CPU at pipeline
/// 16); 16 KiB still takes a whole burst of replies per read, and larger
/// messages grow the buffer as they arrive.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// What the reader does with a subscribe response besides answering it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SubMode {
    /// A new subscription: its snapshot becomes the known state.
    Initial,
    /// A resumed one after a reconnect: yield what changed while away.
    Resume {
        /// Whether the hub kept its revs (same epoch).
        same_epoch: bool,
    },
}

struct Pending {
    tx: oneshot::Sender<Result<Value>>,
    sub: Option<(Arc<SubState>, SubMode)>,
}

/// One connection to the hub.
pub(crate) struct Link {
    out: mpsc::UnboundedSender<Message>,
    pending: Mutex<HashMap<u64, Pending>>,
    routes: Mutex<HashMap<u64, Arc<SubState>>>,
    alive: AtomicBool,
}

impl Link {
    /// Connects and starts the reader and writer; `on_lost` runs once when
    /// the socket ends (not when `close` was called).
    pub(crate) async fn open(
        url: &str,
        token: Option<&str>,
        tls: Option<&Arc<rustls::ClientConfig>>,
        timeout: Duration,
        on_lost: Box<dyn FnOnce() + Send>,
    ) -> Result<Arc<Link>> {
        let mut request = url
            .into_client_request()
            .map_err(|e| Error::Connection(format!("bad hub URL {url:?}: {e}")))?;
        if let Some(t) = token {
            let value = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| Error::Connection("the token is not a valid header value".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let connector = match tls {
            Some(config) if url.starts_with("wss:") => Some(Connector::Rustls(config.clone())),
            _ => None,
        };
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            false,
            connector,
        );
        let (ws, _) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| {
                Error::Connection(format!("connecting to {url} timed out after {timeout:?}"))
            })?
            .map_err(|e| Error::Connection(format!("cannot connect to {url}: {e}")))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<Message>();
        let link = Arc::new(Link {
            out,
            pending: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
        });
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let closing = matches!(msg, Message::Close(_));
                if sink.feed(msg).await.is_err() {
                    break;
                }
                // Batch whatever else is queued into one flush.
                while let Ok(more) = rx.try_recv() {
                    if sink.feed(more).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() || closing {
                    break;
                }
            }
        });
        let reader = link.clone();
        tokio::spawn(async move {
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(Message::Text(text)) => reader.on_text(text.as_str()),
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            if reader.fail_all("the connection to the hub closed") {
                on_lost();
            }
        });
        Ok(link)
    }

    /// Marks the link dead and fails every waiting call; true the first time.
    fn fail_all(&self, why: &str) -> bool {
        let was_alive = self.alive.swap(false, Ordering::SeqCst);
        let pending: Vec<Pending> = self.pending.lock().drain().map(|(_, p)| p).collect();
        for p in pending {
            let _ = p.tx.send(Err(Error::Connection(why.to_string())));
        }
        was_alive
    }

    /// True until the socket ended or `close` was called.
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Closes the socket without reporting it lost.
    pub(crate) fn close(&self) {
        if self.alive.swap(false, Ordering::SeqCst) {
            let _ = self.out.send(Message::Close(None));
        }
        self.fail_all("the client was closed");
    }

    fn on_text(&self, text: &str) {
        // The hub bounds nesting by its configured limit (at most
        // MAX_NESTING_CEILING); parse up to that, not serde's fixed 128.
        let max = crate::server::MAX_NESTING_CEILING + 2;
        if deeper_than(text.as_bytes(), max) {
            return;
        }
        let Ok(msg) = from_str_prechecked::<Value>(text) else {
            return;
        };
        if msg.get("method").and_then(Value::as_str) == Some("event") {
            let params = &msg["params"];
            let Some(sub) = params.get("sub").and_then(Value::as_u64) else {
                return;
            };
            let route = self.routes.lock().get(&sub).cloned();
            if let (Some(state), Ok(ev)) = (route, serde_json::from_value::<Event>(params.clone()))
            {
                state.deliver(ev);
            }
            return;
        }
        let Some(id) = msg.get("id").and_then(Value::as_u64) else {
            return;
        };
        let Some(p) = self.pending.lock().remove(&id) else {
            return;
        };
        let result = match msg.get("error") {
            Some(err) => Err(serde_json::from_value::<RpcError>(err.clone())
                .map(Error::from)
                .unwrap_or_else(|e| Error::Decode(format!("malformed error from the hub: {e}")))),
            None => Ok(msg.get("result").cloned().unwrap_or(Value::Null)),
        };
        if let (Ok(res), Some((state, mode))) = (&result, &p.sub) {
            if let Some(sub) = res.get("sub").and_then(Value::as_u64) {
                state.server_sub.store(sub, Ordering::SeqCst);
                self.routes.lock().insert(sub, state.clone());
                if let Ok(snap) = serde_json::from_value::<Snapshot>(res.clone()) {
                    if matches!(state.watch, super::subscription::Watch::Key(_)) {
                        match mode {
                            SubMode::Initial => state.set_known(&snap),
                            SubMode::Resume { same_epoch } => {
                                state.resume(Some(&snap), *same_epoch)
                            }
                        }
                    } else if let SubMode::Resume { .. } = mode {
                        state.resume(None, false);
                    }
                }
            }
        }
        let _ = p.tx.send(result);
    }

    /// Sends a request and waits for its answer (at most `timeout`).
    pub(crate) async fn call(
        &self,
        id: u64,
        method: &str,
        params: Value,
        sub: Option<(Arc<SubState>, SubMode)>,
        timeout: Duration,
    ) -> Result<Value> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, Pending { tx, sub });
        let text = request_text(Some(id), method, &params);
        if !self.is_alive() || self.out.send(Message::text(text)).is_err() {
            self.pending.lock().remove(&id);
            return Err(Error::Connection("not connected to the hub".into()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Connection("the connection to the hub closed".into())),
            Err(_) => {
                self.pending.lock().remove(&id);
                Err(Error::Timeout(timeout))
            }
        }
    }

    /// Sends a notification (no answer expected).
    pub(crate) fn notify(&self, method: &str, params: Value) {
        let text = request_text(None, method, &params);
        let _ = self.out.send(Message::text(text));
    }

    /// Forgets the route of hub subscription `sub` and tells the hub.
    pub(crate) fn unsubscribe(&self, sub: u64) {
        if self.routes.lock().remove(&sub).is_some() && self.is_alive() {
            self.notify("unsubscribe", json!({ "sub": sub }));
        }
    }
}

/// A request's (or, without `id`, a notification's) text with its members
/// in the order `jsonrpc`, `id`, `method`, `params`: the shape the hub
/// recognizes without its general JSON pass (`server/canonical.rs`).
fn request_text(id: Option<u64>, method: &str, params: &Value) -> String {
    let mut text = String::from(r#"{"jsonrpc":"2.0","#);
    if let Some(id) = id {
        text.push_str(r#""id":"#);
        text.push_str(itoa::Buffer::new().format(id));
        text.push(',');
    }
    text.push_str(r#""method":"#);
    text.push_str(&Value::from(method).to_string());
    text.push_str(r#","params":"#);
    text.push_str(&params.to_string());
    text.push('}');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_written_in_the_canonical_member_order() {
        let params = json!({"key": "a\"b"});
        assert_eq!(
            request_text(Some(7), "get", &params),
            r#"{"jsonrpc":"2.0","id":7,"method":"get","params":{"key":"a\"b"}}"#
        );
        assert_eq!(
            request_text(None, "unsubscribe", &json!({"sub": 3})),
            r#"{"jsonrpc":"2.0","method":"unsubscribe","params":{"sub":3}}"#
        );
        let parsed: Value =
            serde_json::from_str(&request_text(Some(1), "m\"x", &params)).unwrap_or_default();
        assert_eq!(
            parsed,
            json!({"jsonrpc": "2.0", "id": 1, "method": "m\"x", "params": params})
        );
    }
}
