//! The JSON-RPC methods: decode `params`, call the store, write the result.
//!
//! Each handler appends its result as JSON text to the response buffer, so a
//! `get` copies the stored value's text once and never builds a tree. Input
//! checks (key length, value size, `limit`, exactly-one-of) live here, in one
//! place per rule. Handlers never hold a store lock across an await; only
//! `lock` awaits at all.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::session::Session;
use crate::jsontext::{compact, deeper_than, from_str_prechecked, push_str_literal};
use crate::protocol::{
    code, DeleteParams, IncrParams, KeyParams, KeysParams, LockParams, MemoizeParams, MergeParams,
    PatchParams, RpcError, SubscribeParams, UnlockParams, UnsubscribeParams, UpdateParams,
    PROTOCOL_VERSION,
};
use crate::pubsub::{Subscription, Target};
use crate::store::{ModifyError, StoreError};

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
    /// `patch`
    Patch,
    /// `merge`
    Merge,
    /// `incr`
    Incr,
    /// `lock`
    Lock,
    /// `unlock`
    Unlock,
    /// Any name this hub does not implement.
    Other,
}

impl Method {
    /// All variants, in discriminant order.
    pub const ALL: [Method; 16] = [
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
        Method::Patch,
        Method::Merge,
        Method::Incr,
        Method::Lock,
        Method::Unlock,
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
            "patch" => Method::Patch,
            "merge" => Method::Merge,
            "incr" => Method::Incr,
            "lock" => Method::Lock,
            "unlock" => Method::Unlock,
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
            Method::Patch => "patch",
            Method::Merge => "merge",
            Method::Incr => "incr",
            Method::Lock => "lock",
            Method::Unlock => "unlock",
            Method::Other => "other",
        }
    }
}

/// A request's params as [`call`] takes them: the text of the params
/// object, or, for the hottest methods, the params already decoded in the
/// same pass that read the request's envelope (see [`ParamsSeed`]). A
/// decoded variant is only ever paired with its own method.
pub enum Params<'a> {
    /// The params object's text (`{}` when the request had none).
    Text(&'a str),
    /// The params of a `get`.
    Get(KeyParams<'a>),
    /// The params of an `update`.
    Update(UpdateParams<'a>),
}

/// Reads a request's `params` member once its method is known: decodes the
/// params of `get` and `update` on the spot (which saves scanning them
/// twice), and keeps any other method's params as text. It fails wherever
/// decoding the params would: the caller then reads the request again with
/// the params as text, and the method reports the error as usual.
pub struct ParamsSeed(pub Method);

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = Params<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.0 {
            // Objects only (a derived struct would also take an array).
            Method::Get => d.deserialize_map(ObjectOf::new(Params::Get)),
            Method::Update => d.deserialize_map(ObjectOf::new(Params::Update)),
            _ => <&RawValue>::deserialize(d).map(|raw| Params::Text(raw.get())),
        }
    }
}

/// Decodes a JSON object into `T`, then wraps it.
struct ObjectOf<T, F> {
    wrap: F,
    of: std::marker::PhantomData<fn() -> T>,
}

impl<'de, T, F> ObjectOf<T, F>
where
    T: Deserialize<'de>,
    F: FnOnce(T) -> Params<'de>,
{
    fn new(wrap: F) -> Self {
        Self {
            wrap,
            of: std::marker::PhantomData,
        }
    }
}

impl<'de, T, F> Visitor<'de> for ObjectOf<T, F>
where
    T: Deserialize<'de>,
    F: FnOnce(T) -> Params<'de>,
{
    type Value = Params<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of named parameters")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(self.wrap)
    }
}

/// Runs `method` with `params` and appends the result JSON to `out`. On
/// error, `out` may hold partial output; the caller discards it. Only
/// `lock` ever awaits (for a lock held by someone else).
pub async fn call(
    session: &mut Session,
    method: Method,
    name: &str,
    params: Params<'_>,
    out: &mut String,
) -> Result<(), RpcError> {
    let params = match params {
        Params::Get(p) => return get(session, p, out),
        Params::Update(p) => return update(session, p, out),
        Params::Text(text) => text,
    };
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
        Method::Patch => patch(session, decode(params)?, out),
        Method::Merge => merge(session, decode(params)?, out),
        Method::Incr => incr(session, decode(params)?, out),
        Method::Lock => lock(session, decode(params)?, out).await,
        Method::Unlock => unlock(session, decode(params)?, out),
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

fn check_value(session: &Session, raw: &RawValue) -> Result<Arc<str>, RpcError> {
    let value = compact(raw.get());
    let max = session.hub.config.max_value_bytes;
    if value.len() > max {
        return Err(RpcError::invalid_params(format!(
            "value is {} bytes as compact JSON, over the {max}-byte limit",
            value.len()
        )));
    }
    if may_be_unrepresentable(&value) {
        // Raw JSON accepts lone surrogate escapes and numbers out of f64's
        // range; refuse them, or patch/merge/incr could not read them back.
        from_str_prechecked::<Value>(&value)
            .map_err(|e| RpcError::invalid_params(format!("value cannot be stored: {e}")))?;
    }
    Ok(Arc::from(value.as_ref()))
}

/// Cheap screen for what raw JSON validation lets through but a full parse
/// refuses: `\u` escapes (lone surrogates) and numbers with an exponent or
/// more than 17 digits (out of range). Most values have neither.
fn may_be_unrepresentable(text: &str) -> bool {
    let b = text.as_bytes();
    // Each case below needs a digit or a backslash; most values (strings of
    // text) have neither, which a branch-free pass finds at vector speed.
    if !b
        .iter()
        .fold(false, |seen, &c| seen | c.is_ascii_digit() | (c == b'\\'))
    {
        return false;
    }
    let mut digits = 0;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                digits += 1;
                if digits > 17 {
                    return true;
                }
            }
            b'e' | b'E' if i > 0 && (b[i - 1].is_ascii_digit() || b[i - 1] == b'.') => return true,
            b'u' if i > 0 && b[i - 1] == b'\\' => return true,
            _ => digits = 0,
        }
    }
    false
}

fn check_ttl(ttl_ms: Option<u64>) -> Result<(), RpcError> {
    match ttl_ms {
        Some(0) => Err(RpcError::invalid_params("ttl_ms must be at least 1")),
        _ => Ok(()),
    }
}

/// Parses a stored value (compact JSON whose depth was bounded when written).
fn parse_stored(text: &str) -> Result<Value, RpcError> {
    from_str_prechecked(text).map_err(|e| {
        RpcError::new(
            code::INTERNAL_ERROR,
            format!("stored value unreadable: {e}"),
        )
    })
}

/// Serializes a computed value and applies the value limits to it.
fn finish_value(session: &Session, doc: &Value) -> Result<Arc<str>, RpcError> {
    let text = serde_json::to_string(doc)
        .map_err(|e| RpcError::new(code::INTERNAL_ERROR, format!("cannot encode value: {e}")))?;
    let max = session.hub.config.max_value_bytes;
    if text.len() > max {
        return Err(RpcError::invalid_params(format!(
            "the resulting value is {} bytes as compact JSON, over the {max}-byte limit; nothing was changed",
            text.len()
        )));
    }
    let depth = session.hub.config.max_nesting;
    if deeper_than(text.as_bytes(), depth) {
        return Err(RpcError::invalid_params(format!(
            "the resulting value nests deeper than the limit of {depth}; nothing was changed"
        )));
    }
    Ok(Arc::from(text))
}

fn modify_error(key: &str, if_rev: Option<u64>, e: ModifyError<RpcError>) -> RpcError {
    match e {
        ModifyError::Store(e) => store_error(key, if_rev, e),
        ModifyError::Op(e) => e,
    }
}

/// Writes `{"value":V,"rev":R}` plus `"created":B` when asked.
fn push_value_rev(out: &mut String, value: &str, rev: u64, created: Option<bool>) {
    out.reserve(value.len() + 40);
    out.push_str("{\"value\":");
    out.push_str(value);
    out.push_str(",\"rev\":");
    push_u64(out, rev);
    if let Some(c) = created {
        out.push_str(",\"created\":");
        push_bool(out, c);
    }
    out.push('}');
}

fn store_error(key: &str, if_rev: Option<u64>, e: StoreError) -> RpcError {
    match e {
        StoreError::NotFound => RpcError::not_found(key),
        StoreError::RevMismatch { current } => {
            RpcError::rev_mismatch(key, if_rev.unwrap_or_default(), current)
        }
    }
}

/// Writes a number in decimal (without the formatting machinery of `write!`,
/// which showed in the profile of the hottest responses).
fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

fn push_bool(out: &mut String, b: bool) {
    out.push_str(if b { "true" } else { "false" });
}

fn memoize(s: &mut Session, p: MemoizeParams, out: &mut String) -> Result<(), RpcError> {
    check_key(s, &p.key)?;
    check_ttl(p.ttl_ms)?;
    let value = check_value(s, p.value)?;
    let m = s.hub.store.memoize(&p.key, value, p.ttl_ms);
    push_value_rev(out, &m.value, m.rev, Some(m.created));
    Ok(())
}

fn get(s: &mut Session, p: KeyParams, out: &mut String) -> Result<(), RpcError> {
    check_key(s, &p.key)?;
    let e = s
        .hub
        .store
        .get(&p.key)
        .ok_or_else(|| RpcError::not_found(&p.key))?;
    push_value_rev(out, &e.value, e.rev, None);
    Ok(())
}

fn update(s: &mut Session, p: UpdateParams, out: &mut String) -> Result<(), RpcError> {
    check_key(s, &p.key)?;
    check_ttl(p.ttl_ms)?;
    let value = check_value(s, p.value)?;
    let w = s
        .hub
        .store
        .update(&p.key, value, p.if_rev, p.ttl_ms)
        .map_err(|e| store_error(&p.key, p.if_rev, e))?;
    out.push_str("{\"rev\":");
    push_u64(out, w.rev);
    out.push_str(",\"created\":");
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
    out.push_str("{\"rev\":");
    push_u64(out, rev);
    out.push('}');
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
        "role": s.role().name(),
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
        let _ = write!(out, ",\"rev\":{},\"bytes\":{}", k.rev, k.bytes);
        if let Some(t) = k.expires_at_ms {
            let _ = write!(out, ",\"expires_at_ms\":{t}");
        }
        out.push('}');
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
    let locks = hub.locks.counts();
    let v = json!({
        "keys": hub.store.len(),
        "connections": hub.metrics.connections.get(),
        "subscriptions": hub.store.pubsub().len(),
        "rev": hub.store.rev(),
        "uptime_ms": u64::try_from(hub.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "epoch": hub.store.epoch(),
        "version": env!("CARGO_PKG_VERSION"),
        "connection_subscriptions": s.subscription_count(),
        "locks_held": locks.held,
        "lock_waiters": locks.waiting,
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

fn patch(s: &mut Session, p: PatchParams, out: &mut String) -> Result<(), RpcError> {
    check_key(s, &p.key)?;
    check_ttl(p.ttl_ms)?;
    let ops: json_patch::Patch = from_str_prechecked(p.ops.get()).map_err(|e| {
        RpcError::invalid_params(format!("ops is not a well-formed RFC 6902 patch: {e}"))
    })?;
    let key = &*p.key;
    let (value, w) = s
        .hub
        .store
        .modify(key, p.if_rev, p.ttl_ms, |current| {
            let text = current.ok_or_else(|| RpcError::not_found(key))?;
            let mut doc = parse_stored(text)?;
            // On failure `doc` is a scratch copy, so no undo is needed.
            json_patch::patch_unsafe(&mut doc, &ops.0)
                .map_err(|e| RpcError::patch_failed(key, e.operation, e.kind))?;
            finish_value(s, &doc)
        })
        .map_err(|e| modify_error(key, p.if_rev, e))?;
    push_value_rev(out, &value, w.rev, None);
    Ok(())
}

fn merge(s: &mut Session, p: MergeParams, out: &mut String) -> Result<(), RpcError> {
    check_key(s, &p.key)?;
    check_ttl(p.ttl_ms)?;
    let patch: Value = from_str_prechecked(p.value.get()).map_err(RpcError::invalid_params)?;
    let key = &*p.key;
    let (value, w) = s
        .hub
        .store
        .modify(key, p.if_rev, p.ttl_ms, |current| {
            let mut doc = match current {
                Some(text) => parse_stored(text)?,
                None => Value::Null,
            };
            json_patch::merge(&mut doc, &patch);
            finish_value(s, &doc)
        })
        .map_err(|e| modify_error(key, p.if_rev, e))?;
    push_value_rev(out, &value, w.rev, Some(w.created));
    Ok(())
}

fn incr(s: &mut Session, p: IncrParams, out: &mut String) -> Result<(), RpcError> {
    check_key(s, &p.key)?;
    check_ttl(p.ttl_ms)?;
    let by = p.by.unwrap_or_else(|| 1.into());
    let key = &*p.key;
    let (value, w) = s
        .hub
        .store
        .modify(key, p.if_rev, p.ttl_ms, |current| {
            let held = match current {
                None => serde_json::Number::from(0),
                Some(text) => match parse_stored(text)? {
                    Value::Number(n) => n,
                    other => {
                        return Err(RpcError::not_a_number(
                            key,
                            format!("the value held is {}, not a number", json_kind(&other)),
                        ))
                    }
                },
            };
            let sum = add_numbers(&held, &by).map_err(|why| RpcError::not_a_number(key, why))?;
            finish_value(s, &Value::Number(sum))
        })
        .map_err(|e| modify_error(key, p.if_rev, e))?;
    push_value_rev(out, &value, w.rev, Some(w.created));
    Ok(())
}

/// `a + b`: i64 arithmetic when both are integers (overflow is an error),
/// f64 otherwise (a non-finite result is an error).
fn add_numbers(
    a: &serde_json::Number,
    b: &serde_json::Number,
) -> Result<serde_json::Number, String> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x
            .checked_add(y)
            .map(serde_json::Number::from)
            .ok_or_else(|| {
                format!("{x} + {y} overflows a 64-bit signed integer; the value is unchanged")
            });
    }
    let is_int = |n: &serde_json::Number| n.is_i64() || n.is_u64();
    if is_int(a) && is_int(b) {
        return Err(format!(
            "{a} + {b}: integer arithmetic is 64-bit signed and {} is outside that range; the value is unchanged",
            if a.is_i64() { b } else { a }
        ));
    }
    let (x, y) = (
        a.as_f64().unwrap_or(f64::NAN),
        b.as_f64().unwrap_or(f64::NAN),
    );
    serde_json::Number::from_f64(x + y)
        .ok_or_else(|| format!("{x:?} + {y:?} is not a finite number; the value is unchanged"))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_lock_name(s: &Session, name: &str) -> Result<(), RpcError> {
    let max = s.hub.config.max_key_bytes;
    if name.is_empty() {
        return Err(RpcError::invalid_params("lock name must not be empty"));
    }
    if name.len() > max {
        return Err(RpcError::invalid_params(format!(
            "lock name is {} bytes, over the {max}-byte limit",
            name.len()
        )));
    }
    Ok(())
}

async fn lock(s: &mut Session, p: LockParams<'_>, out: &mut String) -> Result<(), RpcError> {
    check_lock_name(s, &p.name)?;
    check_ttl(p.ttl_ms)?;
    let wait_ms = p.wait_ms.unwrap_or(0);
    let ttl = p.ttl_ms.map(Duration::from_millis);
    s.note_lock_use();
    let grant = s
        .hub
        .locks
        .acquire(&p.name, s.conn_id(), ttl, Duration::from_millis(wait_ms))
        .await
        .ok_or_else(|| RpcError::lock_timeout(&p.name, wait_ms))?;
    out.push_str("{\"token\":");
    push_str_literal(out, &grant.token);
    let _ = write!(out, ",\"fence\":{}}}", grant.fence);
    Ok(())
}

fn unlock(s: &mut Session, p: UnlockParams, out: &mut String) -> Result<(), RpcError> {
    check_lock_name(s, &p.name)?;
    if !s.hub.locks.release(&p.name, &p.token) {
        return Err(RpcError::lock_not_held(&p.name));
    }
    out.push_str("true");
    Ok(())
}
