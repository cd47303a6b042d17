//! The HTTP face of the hub on its one port: `/ws`, `/healthz`, `/metrics`, `/`.
//!
//! The `/ws` handler is the admission gate: token (401), browser origin
//! (403), protected mode (403) and the connection cap (503) are decided here, before any WebSocket exists, and
//! the socket's size limit (tokio-websockets, through axum-tws) is set from
//! the config.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use axum_tws::{Config, Limits, WebSocketError, WebSocketUpgrade};
use tracing::debug;

use super::admission::{
    origin_allowed, origin_refusal, protected_mode_allows, PROTECTED_MODE_REFUSAL,
};
use super::auth::{presented_token, Role, UNAUTHORIZED};
use super::{assets, connection, Hub};

/// Bytes of queued frames past which the socket writes before it takes
/// another (a batch is written whole, in one flush, below it).
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// The hub's routes.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/", get(assets::index))
        .route("/{*path}", get(assets::file))
        .with_state(hub)
}

async fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketError>,
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(err) => return not_an_upgrade(err),
    };
    // The token check comes first (401), then the browser origin (403).
    let tokens = &hub.config.tokens;
    let role = if tokens.is_empty() {
        Role::Write
    } else {
        match presented_token(&headers, query.as_deref()).and_then(|t| tokens.role_of(&t)) {
            Some(role) => role,
            None => {
                hub.metrics.connections_rejected.inc();
                debug!(%peer, "upgrade refused: missing or invalid token");
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer realm=\"memhub\"")],
                    UNAUTHORIZED,
                )
                    .into_response();
            }
        }
    };
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !origin_allowed(origin, host, &hub.config.allowed_origins) {
        hub.metrics.connections_rejected.inc();
        let origin = origin.unwrap_or_default();
        debug!(%peer, origin, "upgrade refused: origin not allowed");
        return (StatusCode::FORBIDDEN, origin_refusal(origin)).into_response();
    }
    if !protected_mode_allows(
        hub.config.protected_mode,
        !tokens.is_empty(),
        hub.bind_ip,
        peer.ip(),
    ) {
        hub.metrics.connections_rejected.inc();
        debug!(%peer, "upgrade refused by protected mode");
        return (StatusCode::FORBIDDEN, PROTECTED_MODE_REFUSAL).into_response();
    }
    let Ok(permit) = hub.slots.clone().try_acquire_owned() else {
        hub.metrics.connections_rejected.inc();
        debug!(%peer, "upgrade refused: connection cap reached");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!(
                "memhub has reached its limit of {} connections; retry later\n",
                hub.config.max_connections
            ),
        )
            .into_response();
    };
    let max = hub.config.max_message_bytes;
    let tracker = hub.tracker.clone();
    ws.limits(Limits::default().max_payload_len(Some(max)))
        .config(
            Config::default()
                .frame_size(usize::MAX)
                .flush_threshold(WRITE_BUFFER_BYTES),
        )
        .on_upgrade(move |socket| {
            tracker.track_future(connection::run(socket, hub, peer, role, permit))
        })
}

/// A request to `/ws` that is not a WebSocket upgrade (a browser tab, a
/// plain `curl`): the status the upgrade check chose (400, 405 or 426) and
/// a body that says what was missing and what the endpoint is for.
fn not_an_upgrade(err: WebSocketError) -> Response {
    let body = format!(
        "not a WebSocket upgrade ({err}): /ws speaks JSON-RPC 2.0 over WebSocket; \
         connect with a WebSocket client, or open / for the dashboard\n"
    );
    (err.into_response().status(), body).into_response()
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        hub.metrics.render(&hub.store, &hub.locks),
    )
        .into_response()
}
