//! # memhub
//!
//! A shared-memory hub: processes on one machine or many store JSON values
//! under unique keys, read and change them atomically (compare-and-set by
//! revision), and get pushed a notification the moment a key they watch
//! changes — all over one WebSocket speaking JSON-RPC 2.0.
//!
//! Run a hub from code (the same defaults as rpyc-mem's `RpycMemService`:
//! host `0.0.0.0`, port 0 = a random free port):
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use memhub::{MemService, ServerConfig};
//!
//! let server = MemService::new("127.0.0.1", 0)
//!     .with_config(ServerConfig::default())
//!     .bind()
//!     .await?;
//! println!("listening on ws://{}/ws", server.local_addr());
//! let stop = server.shutdown_handle();
//! # stop.shutdown();
//! server.run().await // returns after `stop.shutdown()`
//! # }
//! ```
//!
//! The wire protocol is in `docs/protocol.md`; the rooms of the server in
//! `docs/architecture.md`.

#![warn(missing_docs)]

pub mod bench;
pub mod client;
pub mod jsontext;
pub mod locks;
pub mod protocol;
pub mod pubsub;
pub mod server;
pub mod store;

pub use client::{Client, ClientOptions, Error, Mem, Subscription};
pub use protocol::{RpcError, PROTOCOL_VERSION};
pub use server::{MemService, Server, ServerConfig, ShutdownHandle};
pub use store::Store;
