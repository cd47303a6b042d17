//! The hub's frame handling without a socket, for fuzzers and property tests.
//!
//! [`InProcessHub`] runs exactly the dispatcher a connection runs — envelope
//! checks, limits, roles, every method — on frames handed to it as strings.
//! It never opens a port and is never used by the network path.

use std::sync::Arc;

use super::auth::Role;
use super::outbox::Outbox;
use super::session::Session;
use super::{dispatch, Hub, ServerConfig};
use crate::store::Store;

/// One hub with one connected session, driven frame by frame.
///
/// Subscription events are queued in the session's bounded outbox (and
/// marked lagged once it is full), so memory stays bounded however many
/// frames are fed in.
pub struct InProcessHub {
    session: Session,
}

impl InProcessHub {
    /// A fresh, empty hub with `config` and one session of `role`.
    pub fn new(config: ServerConfig, role: Role) -> Self {
        let outbox = Arc::new(Outbox::new(
            config.outbound_max_events,
            config.outbound_max_bytes,
        ));
        let hub = Arc::new(Hub::new(config, std::net::Ipv4Addr::LOCALHOST.into()));
        Self {
            session: Session::new(hub, outbox, role),
        }
    }

    /// The reply the hub sends for one text frame, or `None` when it sends
    /// nothing (a frame of notifications only). Must run inside a tokio
    /// runtime; a `lock` with `wait_ms` waits that long (use paused time).
    pub async fn frame(&mut self, text: &str) -> Option<String> {
        dispatch::handle_frame(&mut self.session, text).await
    }

    /// The reply to a binary frame.
    pub fn binary_frame(&self) -> String {
        dispatch::binary_frame_error()
    }

    /// The hub's keyspace, to check what the frames changed.
    pub fn store(&self) -> &Store {
        &self.session.hub.store
    }
}
