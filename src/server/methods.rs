//! The JSON-RPC methods: decode `params`, call the store, write the result.
//!
//! Each handler appends its result as JSON text to the response buffer, so a
//! `get` copies the stored value's text once and never builds a tree. Input
//! checks (key length, value size, `limit`, exactly-one-of) live here, in one
//! place per rule. Handlers never await and never hold a store lock.

use std::fmt::Write;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::session::Session;
use crate::jsontext::{compact, from_str_prechecked, push_str_literal};
use crate::protocol::{
    DeleteParams, KeyParams, KeysParams, MemoizeParams, RpcError, SubscribeParams,
    UnsubscribeParams, UpdateParams, PROTOCOL_VERSION,
};
use crate::pubsub::{Subscription, Target};
use crate::store::StoreError;

/// Every method the hub counts in its metrics; `Other` covers unknown names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `memoize`
    Memoize,
    /// `get`
    Get,
    /// `update`
    Update,
    /// `delete`
    Delete,
    /// `is_memoized`
    IsMemoized,
    /// `version`
    Version,
    /// `keys`
    Keys,
    /// `stats`
    Stats,
    /// `subscribe`
    Subscribe,
    /// `unsubscribe`
    Unsubscribe,
    /// Any name this hub does not implement.
    Other,
}

impl Method {
    /// All variants, in discriminant order.
    pub const ALL: [Method; 11] = [
        Method::Memoize,
        Method::Get,
        Method::Update,
        Method::Delete,
        Method::IsMemoized,
        Method::Version,
        Method::Keys,
        Method::Stats,
        Method::Subscribe,
        Method::Unsubscribe,
        Method::Other,
    ];

    /// The method named `name`, or `Other`.
    pub fn from_name(name: &str) -> Method {
        match name {
            "memoize" => Method::Memoize,
            "get" => Method::Get,
            "update" => Method::Update,
            "delete" => Method::Delete,
            "is_memoized" => Method::IsMemoized,
            "version" => Method::Version,
            "keys" => Method::Keys,
            "stats" => Method::Stats,
            "subscribe" => Method::Subscribe,
            "unsubscribe" => Method::Unsubscribe,
            _ => Method::Other,
        }
    }

    /// The wire name (`other` for unknown methods).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Memoize => "memoize",
            Method::Get => "get",
            Method::Update => "update",
            Method::Delete => "delete",
            Method::IsMemoized => "is_memoized",
            Method::Version => "version",
            Method::Keys => "keys",
            Method::Stats => "stats",
            Method::Subscribe => "subscribe",
            Method::Unsubscribe => "unsubscribe",
            Method::Other => "other",
        }
    }
}

/// Runs `method` with `params` (a JSON object's text) and appends the result
/// JSON to `out`. On error, `out` may hold partial output; the caller discards it.
pub fn call(
    session: &mut Session,
    method: Method,
    name: &str,
    params: &str,
    out: &mut String,
) -> Result<(), RpcError> {
    match method {
        Method::Memoize => memoize(session, decode(params)?, out),
        Method::Get => get(session, decode(params)?, out),
        Method::Update => update(session, decode(params)?, out),
        Method::Delete => delete(session, decode(params)?, out),
        Method::IsMemoized => is_memoized(session, decode(params)?, out),
        Method::Version => version(session, out),
        Method::Keys => keys(session, decode(params)?, out),
        Method::Stats => stats(session, out),
        Method::Subscribe => subscribe(session, decode(params)?, out),
        Method::Unsubscribe => unsubscribe(session, decode(params)?, out),
        Method::Other => Err(RpcError::method_not_found(name)),
    }
}

fn decode<'a, T: Deserialize<'a>>(params: &'a str) -> Result<T, RpcError> {
    // serde's messages name the field and position ("missing field `key`").
    from_str_prechecked(params).map_err(RpcError::invalid_params)
}

fn check_key(session: &Session, key: &str) -> Result<(), RpcError> {
    let max = session.hub.config.max_key_bytes;
    if key.is_empty() {
        return Err(RpcError::invalid_params("key must not be empty"));
    }
    if key.len() > max {
        return Err(RpcError::invalid_params(format!(
            "key is {} bytes, over the {max}-byte limit",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(session: &Session, raw: &serde_json::value::RawValue) -> Result<Arc<str>, RpcError> {
    let value = compact(raw.get());
    let max = session.hub.config.max_value_bytes;
    if value.len() > max {
        return Err(RpcError::invalid_params(format!(
            "value is {} bytes as compact JSON, over the {max}-byte limit",
            value.len()
        )));
    }
    Ok(Arc::from(value.as_ref()))
}

fn check_ttl(ttl_ms: Option<u64>) -> Result<(), RpcError> {
    match ttl_ms {
        None => Ok(()),
        Some(_) => Err(RpcError::invalid_params(
            "ttl_ms is not supported by this hub yet (key expiry is not implemented)",
        )),
    }
}

fn store_error(key: &str, if_rev: Option<u64>, e: StoreError) -> RpcError {
    match e {
        StoreError::NotFound => RpcError::not_found(key),
        StoreError::RevMismatch { current } => {
            RpcError::rev_mismatch(key, if_rev.unwrap_or_default(), current)
        }
    }
}

fn push_bool(out: &mut String, b: bool) {
    out.push_str(if b { "true" } else { "false" });
}

fn memoize(s: &mut Session, p: MemoizeParams, out: &mut String) -> Result<(), RpcError> {
    check_key(s, &p.key)?;
    check_ttl(p.ttl_ms)?;
    let value = check_value(s, p.value)?;
    let m = s.hub.store.memoize(&p.key, value);
    out.push_str("{\"value\":");
    out.push_str(&m.value);
    let _ = write!(out, ",\"rev\":{},\"created\":", m.rev);
    push_bool(out, m.created);
    out.push('}');
    Ok(())
}

fn get(s: &mut Session, p: KeyParams, out: &mut String) -> Result<(), RpcError> {
    check_key(s, &p.key)?;
    let e = s
        .hub
        .store
        .get(&p.key)
        .ok_or_else(|| RpcError::not_found(&p.key))?;
    out.reserve(e.value.len() + 32);
    out.push_str("{\"value\":");
    out.push_str(&e.value);
    let _ = write!(out, ",\"rev\":{}}}", e.rev);
    Ok(())
}

fn update(s: &mut Session, p: UpdateParams, out: &mut String) -> Result<(), RpcError> {
    check_key(s, &p.key)?;
    check_ttl(p.ttl_ms)?;
    let value = check_value(s, p.value)?;
    let w = s
        .hub
        .store
        .update(&p.key, value, p.if_rev)
        .map_err(|e| store_error(&p.key, p.if_rev, e))?;
    let _ = write!(out, "{{\"rev\":{},\"created\":", w.rev);
    push_bool(out, w.created);
    out.push('}');
    Ok(())
}

fn delete(s: &mut Session, p: DeleteParams, out: &mut String) -> Result<(), RpcError> {
    check_key(s, &p.key)?;
    let rev = s
        .hub
        .store
        .delete(&p.key, p.if_rev)
        .map_err(|e| store_error(&p.key, p.if_rev, e))?;
    let _ = write!(out, "{{\"rev\":{rev}}}");
    Ok(())
}

fn is_memoized(s: &mut Session, p: KeyParams, out: &mut String) -> Result<(), RpcError> {
    check_key(s, &p.key)?;
    push_bool(out, s.hub.store.contains(&p.key));
    Ok(())
}

fn version(s: &mut Session, out: &mut String) -> Result<(), RpcError> {
    let v = json!({
        "name": "memhub",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": PROTOCOL_VERSION,
        "epoch": s.hub.store.epoch(),
    });
    let _ = write!(out, "{v}");
    Ok(())
}

/// Default and maximum page size of `keys`.
const KEYS_DEFAULT_LIMIT: u64 = 100;
const KEYS_MAX_LIMIT: u64 = 1000;

fn keys(s: &mut Session, p: KeysParams, out: &mut String) -> Result<(), RpcError> {
    let limit = p.limit.unwrap_or(KEYS_DEFAULT_LIMIT);
    if limit == 0 {
        return Err(RpcError::invalid_params("limit must be at least 1"));
    }
    let limit = limit.min(KEYS_MAX_LIMIT) as usize;
    let page = s
        .hub
        .store
        .keys(p.prefix.as_deref().unwrap_or(""), p.after.as_deref(), limit);
    out.reserve(page.keys.len() * 48);
    out.push_str("{\"keys\":[");
    for (i, k) in page.keys.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":");
        push_str_literal(out, &k.key);
        let _ = write!(out, ",\"rev\":{},\"bytes\":{}}}", k.rev, k.bytes);
    }
    out.push_str("],\"next\":");
    match &page.next {
        Some(n) => push_str_literal(out, n),
        None => out.push_str("null"),
    }
    out.push('}');
    Ok(())
}

fn stats(s: &mut Session, out: &mut String) -> Result<(), RpcError> {
    let hub = &s.hub;
    let v = json!({
        "keys": hub.store.len(),
        "connections": hub.metrics.connections.get(),
        "subscriptions": hub.store.pubsub().len(),
        "rev": hub.store.rev(),
        "uptime_ms": u64::try_from(hub.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "epoch": hub.store.epoch(),
        "version": env!("CARGO_PKG_VERSION"),
        "connection_subscriptions": s.subscription_count(),
    });
    let _ = write!(out, "{v}");
    Ok(())
}

fn subscribe(s: &mut Session, p: SubscribeParams, out: &mut String) -> Result<(), RpcError> {
    let target = match (p.key, p.prefix) {
        (Some(key), None) => {
            check_key(s, &key)?;
            Target::Key(key.into())
        }
        (None, Some(prefix)) => {
            let max = s.hub.config.max_key_bytes;
            if prefix.len() > max {
                return Err(RpcError::invalid_params(format!(
                    "prefix is {} bytes, over the {max}-byte key limit",
                    prefix.len()
                )));
            }
            Target::Prefix(prefix.into())
        }
        _ => {
            return Err(RpcError::invalid_params(
                "subscribe takes exactly one of `key` and `prefix`",
            ))
        }
    };
    let max = s.hub.config.max_subscriptions;
    if s.subscription_count() >= max {
        return Err(RpcError::limit_exceeded(
            "subscriptions",
            max,
            format!("this connection already has {max} subscriptions; unsubscribe some first"),
        ));
    }
    let id = s.next_sub_id();
    let sub = Subscription::new(id, target, s.outbox.clone());
    s.outbox.add_pending(&sub);
    let snapshot = s.hub.store.subscribe(sub.clone());
    s.insert(sub);
    let _ = write!(out, "{{\"sub\":{id}");
    if let Some(snap) = snapshot {
        match snap.entry {
            Some(e) => {
                out.push_str(",\"exists\":true,\"value\":");
                out.push_str(&e.value);
                let _ = write!(out, ",\"rev\":{}", e.rev);
            }
            None => out.push_str(",\"exists\":false"),
        }
    }
    out.push('}');
    Ok(())
}

fn unsubscribe(s: &mut Session, p: UnsubscribeParams, out: &mut String) -> Result<(), RpcError> {
    push_bool(out, s.unsubscribe(p.sub));
    Ok(())
}
