//! The one error type of the client: every protocol error as its own
//! variant, plus what can go wrong on the way (connection, timeout, decoding).

use std::time::Duration;

use serde_json::Value;

use crate::protocol::{code, RpcError};

/// Everything a client call can fail with. `Display` says what went wrong
/// in words meant for the person reading the log.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `-32001`: no value exists for the key.
    #[error("no value exists for key {key:?}")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// `-32002`: `if_rev` did not match.
    #[error("revision mismatch: the key changed (its current rev is {current}; 0 means absent)")]
    RevMismatch {
        /// The key's current rev (0 when absent).
        current: u64,
    },
    /// `-32003`: the lock was not acquired in time.
    #[error("lock {name:?} was not acquired in time")]
    LockTimeout {
        /// The lock's name.
        name: String,
    },
    /// `-32004`: the token does not hold the lock.
    #[error("lock {name:?} is not held by that token (already released, or its lease ran out)")]
    LockNotHeld {
        /// The lock's name.
        name: String,
    },
    /// `-32005`: a JSON Patch failed; nothing was applied.
    #[error("{message}")]
    PatchFailed {
        /// Index of the failing operation, when known.
        op_index: Option<usize>,
        /// The hub's explanation.
        message: String,
    },
    /// `-32006`: the value is not a number, or the arithmetic overflowed.
    #[error("{message}")]
    NotANumber {
        /// The key.
        key: String,
        /// The hub's explanation.
        message: String,
    },
    /// `-32010`: this connection's token may not call that method.
    #[error("forbidden: {message}")]
    Forbidden {
        /// The hub's explanation.
        message: String,
    },
    /// `-32011`: a resource limit was exceeded.
    #[error("{message}")]
    LimitExceeded {
        /// Which limit (`batch`, `subscriptions`, …).
        limit: String,
        /// Its value.
        max: u64,
        /// The hub's explanation.
        message: String,
    },
    /// `-32602`: the hub refused the parameters (bad key, value too large, …).
    #[error("{message}")]
    InvalidParams {
        /// The hub's explanation.
        message: String,
    },
    /// Any other JSON-RPC error the hub answered.
    #[error("the hub answered error {}: {}", .0.code, .0.message)]
    Rpc(RpcError),
    /// The hub could not be reached, or the connection dropped during the call.
    #[error("connection to the hub failed: {0}")]
    Connection(String),
    /// The hub did not answer in time.
    #[error("the hub did not answer within {0:?}")]
    Timeout(Duration),
    /// A value could not be converted to or from the type asked for.
    #[error("could not decode the hub's answer: {0}")]
    Decode(String),
    /// The hub speaks another protocol version (see `ClientOptions::ignore_version`).
    #[error("the hub speaks protocol {hub} but this client speaks {client}; upgrade one of them or set ClientOptions::ignore_version")]
    Version {
        /// The hub's protocol version.
        hub: u64,
        /// This client's.
        client: u64,
    },
}

fn data_str(data: &Option<Value>, field: &str) -> String {
    data.as_ref()
        .and_then(|d| d.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn data_u64(data: &Option<Value>, field: &str) -> Option<u64> {
    data.as_ref()
        .and_then(|d| d.get(field))
        .and_then(Value::as_u64)
}

impl From<RpcError> for Error {
    fn from(e: RpcError) -> Self {
        match e.code {
            code::NOT_FOUND => Error::NotFound {
                key: data_str(&e.data, "key"),
            },
            code::REV_MISMATCH => Error::RevMismatch {
                current: data_u64(&e.data, "rev").unwrap_or_default(),
            },
            code::LOCK_TIMEOUT => Error::LockTimeout {
                name: data_str(&e.data, "name"),
            },
            code::LOCK_NOT_HELD => Error::LockNotHeld {
                name: data_str(&e.data, "name"),
            },
            code::PATCH_FAILED => Error::PatchFailed {
                op_index: data_u64(&e.data, "op_index").and_then(|i| usize::try_from(i).ok()),
                message: e.message,
            },
            code::NOT_A_NUMBER => Error::NotANumber {
                key: data_str(&e.data, "key"),
                message: e.message,
            },
            code::FORBIDDEN => Error::Forbidden { message: e.message },
            code::LIMIT_EXCEEDED => Error::LimitExceeded {
                limit: data_str(&e.data, "limit"),
                max: data_u64(&e.data, "max").unwrap_or_default(),
                message: e.message,
            },
            code::INVALID_PARAMS => Error::InvalidParams { message: e.message },
            _ => Error::Rpc(e),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Decode(e.to_string())
    }
}

/// Result of a client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
