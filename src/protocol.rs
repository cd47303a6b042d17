//! The wire vocabulary of protocol v1: error codes, the error object, and the
//! `params` shapes of every method.
//!
//! This module owns *what* travels on the wire, shared by the server and the
//! clients. It never touches sockets or the keyspace; `docs/protocol.md`
//! describes the same contract in prose.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// The protocol version this build speaks; reported by `version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// JSON-RPC error codes used by memhub (standard and application-defined).
pub mod code {
    /// The frame is not valid JSON or is nested deeper than allowed.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a valid JSON-RPC 2.0 request (or a binary frame arrived).
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Params are missing, of the wrong type, positional, or over a size limit.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The hub failed in a way the client did not cause.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// No value exists for the key.
    pub const NOT_FOUND: i64 = -32001;
    /// `if_rev` did not match the key's current rev.
    pub const REV_MISMATCH: i64 = -32002;
    /// A lock was not acquired within `wait_ms`.
    pub const LOCK_TIMEOUT: i64 = -32003;
    /// A lock is not held by the given token.
    pub const LOCK_NOT_HELD: i64 = -32004;
    /// A JSON Patch failed; no op was applied.
    pub const PATCH_FAILED: i64 = -32005;
    /// The value is not a number, or arithmetic overflowed.
    pub const NOT_A_NUMBER: i64 = -32006;
    /// The method is forbidden for the connection's token role.
    pub const FORBIDDEN: i64 = -32010;
    /// A resource limit (batch size, subscriptions per connection) was exceeded.
    pub const LIMIT_EXCEEDED: i64 = -32011;
}

/// A JSON-RPC error object: a code, a message naming what was wrong, and
/// optional structured `data` as listed in the protocol's error table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    /// One of the constants in [`code`].
    pub code: i64,
    /// A human-readable sentence naming what was wrong.
    pub message: String,
    /// Structured details (`{key}`, `{rev}`, `{limit, max}`, …) where the protocol defines them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with a code and message and no data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Attaches structured `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// `-32700`: the frame could not be parsed.
    pub fn parse_error(detail: impl fmt::Display) -> Self {
        Self::new(code::PARSE_ERROR, format!("parse error: {detail}"))
    }

    /// `-32600`: the JSON is not a valid request.
    pub fn invalid_request(detail: impl fmt::Display) -> Self {
        Self::new(code::INVALID_REQUEST, format!("invalid request: {detail}"))
    }

    /// `-32601`: no such method.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            code::METHOD_NOT_FOUND,
            format!("method not found: {method:?} is not a memhub method"),
        )
    }

    /// `-32602`: params are unusable.
    pub fn invalid_params(detail: impl fmt::Display) -> Self {
        Self::new(code::INVALID_PARAMS, format!("invalid params: {detail}"))
    }

    /// `-32001` with `data: {key}`.
    pub fn not_found(key: &str) -> Self {
        Self::new(code::NOT_FOUND, format!("no value exists for key {key:?}"))
            .with_data(json!({ "key": key }))
    }

    /// `-32002` with `data: {rev}` (the key's current rev, 0 when absent).
    pub fn rev_mismatch(key: &str, expected: u64, current: u64) -> Self {
        let now = if current == 0 {
            "the key is absent".to_string()
        } else {
            format!("its current rev is {current}")
        };
        Self::new(
            code::REV_MISMATCH,
            format!("revision mismatch on key {key:?}: if_rev was {expected} but {now}"),
        )
        .with_data(json!({ "rev": current }))
    }

    /// `-32005` with `data: {op_index}`.
    pub fn patch_failed(key: &str, op_index: usize, why: impl fmt::Display) -> Self {
        Self::new(
            code::PATCH_FAILED,
            format!(
                "patch of key {key:?} failed at operation {op_index}: {why}; nothing was changed"
            ),
        )
        .with_data(json!({ "op_index": op_index }))
    }

    /// `-32006` with `data: {key}`.
    pub fn not_a_number(key: &str, why: impl fmt::Display) -> Self {
        Self::new(code::NOT_A_NUMBER, format!("incr of key {key:?}: {why}"))
            .with_data(json!({ "key": key }))
    }

    /// `-32003` with `data: {name}`.
    pub fn lock_timeout(name: &str, wait_ms: u64) -> Self {
        let when = if wait_ms == 0 {
            "it is held by someone else".to_string()
        } else {
            format!("it was still held after waiting {wait_ms} ms")
        };
        Self::new(
            code::LOCK_TIMEOUT,
            format!("lock {name:?} not acquired: {when}"),
        )
        .with_data(json!({ "name": name }))
    }

    /// `-32004` with `data: {name}`.
    pub fn lock_not_held(name: &str) -> Self {
        Self::new(
            code::LOCK_NOT_HELD,
            format!("lock {name:?} is not held by that token (wrong token, already unlocked, or its lease ran out)"),
        )
        .with_data(json!({ "name": name }))
    }

    /// `-32010` with `data: {method}`.
    pub fn forbidden(method: &str) -> Self {
        Self::new(
            code::FORBIDDEN,
            format!(
                "{method:?} is not allowed with a read-only token (it may change shared state)"
            ),
        )
        .with_data(json!({ "method": method }))
    }

    /// `-32011` with `data: {limit, max}`.
    pub fn limit_exceeded(limit: &str, max: usize, what: impl fmt::Display) -> Self {
        Self::new(code::LIMIT_EXCEEDED, format!("limit exceeded: {what}"))
            .with_data(json!({ "limit": limit, "max": max }))
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// Deserializes an optional field so that JSON `null` counts as absent.
fn null_as_absent<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// Params of `get`, `is_memoized`: one key.
#[derive(Debug, Deserialize)]
pub struct KeyParams<'a> {
    /// The key, non-empty, at most the configured key length in bytes.
    #[serde(borrow)]
    pub key: Cow<'a, str>,
}

/// Params of `memoize`.
#[derive(Debug, Deserialize)]
pub struct MemoizeParams<'a> {
    /// The key to create.
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    /// The value to store if the key is absent (any JSON, `null` included).
    #[serde(borrow)]
    pub value: &'a RawValue,
    /// Expiry after creation, in milliseconds.
    #[serde(default, deserialize_with = "null_as_absent")]
    pub ttl_ms: Option<u64>,
}

/// Params of `update`.
#[derive(Debug, Deserialize)]
pub struct UpdateParams<'a> {
    /// The key to insert or replace.
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    /// The new value (any JSON, `null` included).
    #[serde(borrow)]
    pub value: &'a RawValue,
    /// Expiry after this write, in milliseconds.
    #[serde(default, deserialize_with = "null_as_absent")]
    pub ttl_ms: Option<u64>,
    /// Compare-and-set: apply only if the key's rev equals this (0 = only if absent).
    #[serde(default, deserialize_with = "null_as_absent")]
    pub if_rev: Option<u64>,
}

/// Params of `delete`.
#[derive(Debug, Deserialize)]
pub struct DeleteParams<'a> {
    /// The key to delete.
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    /// Compare-and-set: delete only if the key's rev equals this.
    #[serde(default, deserialize_with = "null_as_absent")]
    pub if_rev: Option<u64>,
}

/// Params of `patch`.
#[derive(Debug, Deserialize)]
pub struct PatchParams<'a> {
    /// The key to change; it must exist.
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    /// An RFC 6902 JSON Patch: an array of operations, applied all or none.
    #[serde(borrow)]
    pub ops: &'a RawValue,
    /// Compare-and-set: apply only if the key's rev equals this.
    #[serde(default, deserialize_with = "null_as_absent")]
    pub if_rev: Option<u64>,
    /// New expiry after this write; without it the key keeps its expiry.
    #[serde(default, deserialize_with = "null_as_absent")]
    pub ttl_ms: Option<u64>,
}

/// Params of `merge`.
#[derive(Debug, Deserialize)]
pub struct MergeParams<'a> {
    /// The key to change (absent: the patch applies to `null`).
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    /// An RFC 7396 merge patch.
    #[serde(borrow)]
    pub value: &'a RawValue,
    /// Compare-and-set: apply only if the key's rev equals this (0 = only if absent).
    #[serde(default, deserialize_with = "null_as_absent")]
    pub if_rev: Option<u64>,
    /// New expiry after this write; without it the key keeps its expiry.
    #[serde(default, deserialize_with = "null_as_absent")]
    pub ttl_ms: Option<u64>,
}

/// Params of `incr`.
#[derive(Debug, Deserialize)]
pub struct IncrParams<'a> {
    /// The key holding a number (absent: starts at 0).
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    /// The amount to add (default 1).
    #[serde(default, deserialize_with = "null_as_absent")]
    pub by: Option<serde_json::Number>,
    /// Compare-and-set (an extension of protocol v1): apply only if the key's rev equals this.
    #[serde(default, deserialize_with = "null_as_absent")]
    pub if_rev: Option<u64>,
    /// New expiry after this write; without it the key keeps its expiry.
    #[serde(default, deserialize_with = "null_as_absent")]
    pub ttl_ms: Option<u64>,
}

/// Params of `lock`.
#[derive(Debug, Deserialize)]
pub struct LockParams<'a> {
    /// The lock's name (a namespace separate from keys).
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// Lease: the lock is released this many ms after it is acquired unless unlocked first.
    #[serde(default, deserialize_with = "null_as_absent")]
    pub ttl_ms: Option<u64>,
    /// How long to wait for the lock; 0 or absent = try once.
    #[serde(default, deserialize_with = "null_as_absent")]
    pub wait_ms: Option<u64>,
}

/// Params of `unlock`.
#[derive(Debug, Deserialize)]
pub struct UnlockParams<'a> {
    /// The lock's name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// The token `lock` returned.
    #[serde(borrow)]
    pub token: Cow<'a, str>,
}

/// Params of `keys`.
#[derive(Debug, Default, Deserialize)]
pub struct KeysParams<'a> {
    /// Only keys starting with this.
    #[serde(borrow, default, deserialize_with = "null_as_absent")]
    pub prefix: Option<Cow<'a, str>>,
    /// Only keys sorting strictly after this (the previous page's `next`).
    #[serde(borrow, default, deserialize_with = "null_as_absent")]
    pub after: Option<Cow<'a, str>>,
    /// Page size; default 100, clamped to 1000.
    #[serde(default, deserialize_with = "null_as_absent")]
    pub limit: Option<u64>,
}

/// Params of `subscribe`: exactly one of `key` and `prefix`.
#[derive(Debug, Deserialize)]
pub struct SubscribeParams<'a> {
    /// Watch this key.
    #[serde(borrow, default, deserialize_with = "null_as_absent")]
    pub key: Option<Cow<'a, str>>,
    /// Watch every key starting with this (may be empty: every key).
    #[serde(borrow, default, deserialize_with = "null_as_absent")]
    pub prefix: Option<Cow<'a, str>>,
}

/// Params of `unsubscribe`.
#[derive(Debug, Deserialize)]
pub struct UnsubscribeParams {
    /// The id returned by `subscribe` on this connection.
    pub sub: u64,
}

/// The kinds of change an `event` notification reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The key is present with a new value.
    Update,
    /// The key was deleted.
    Delete,
    /// The key's expiry ran out.
    Expire,
    /// The subscriber fell behind; for a key subscription the current state follows.
    Lagged,
}

impl EventKind {
    /// The wire name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Update => "update",
            EventKind::Delete => "delete",
            EventKind::Expire => "expire",
            EventKind::Lagged => "lagged",
        }
    }
}
