//! From one text frame to its response text: JSON-RPC 2.0 framing rules.
//!
//! This module owns the envelope: nesting limit, parse errors, batches and
//! their size limit, notifications (no `id`, no answer), id validation and
//! echo, `jsonrpc` and `params` shape checks, and metrics per request. It
//! hands each well-formed request to [`methods::call`] and never looks inside
//! `params` itself: when the method came first, [`methods::ParamsSeed`]
//! reads them in the same pass as the envelope.

use std::borrow::Cow;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::error::Category;
use serde_json::value::RawValue;

use super::canonical::{self, Call, Canonical};
use super::methods::{self, Method, Params, ParamsSeed};
use super::session::Session;
use crate::jsontext::{deeper_than, from_str_prechecked, from_str_prechecked_seed};
use crate::protocol::{KeyParams, RpcError, UpdateParams};

/// The members of a request object. `id` is kept as its JSON text (read
/// as a `RawValue` by serde, or the digits the canonical path found), so
/// that its presence and type can be judged separately (absent vs `null`
/// matters) and it is echoed byte for byte; `jsonrpc` and `method` are read as
/// whatever JSON they hold ([`Member`]), which costs a fraction of keeping
/// them raw and parsing them again; `params` is read by [`ParamsSeed`] when
/// the method came first (the usual order) and kept as text otherwise.
struct RawRequest<'a> {
    jsonrpc: Option<Member<'a>>,
    method: Option<Member<'a>>,
    params: Option<Params<'a>>,
    id: Option<&'a str>,
}

/// Reads a request object. With `decode_params`, the params of a method
/// that came before them are decoded in the same pass; that pass fails
/// wherever decoding them would, and the request is then read again
/// without it, so that the method reports the error.
struct RequestSeed {
    decode_params: bool,
}

impl<'de> DeserializeSeed<'de> for RequestSeed {
    type Value = RawRequest<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed {
    type Value = RawRequest<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON-RPC request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut req = RawRequest {
            jsonrpc: None,
            method: None,
            params: None,
            id: None,
        };
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Jsonrpc => once(&mut req.jsonrpc, "jsonrpc", || {
                    map.next_value_seed(MemberSeed)
                })?,
                Field::Method => once(&mut req.method, "method", || {
                    map.next_value_seed(MemberSeed)
                })?,
                Field::Id => once(&mut req.id, "id", || {
                    map.next_value::<&RawValue>().map(RawValue::get)
                })?,
                Field::Params => {
                    // A method not known yet (or not decoding) reads the
                    // params as text, as `Other` does.
                    let method = match &req.method {
                        Some(m) if self.decode_params => m.text().map(Method::from_name),
                        _ => None,
                    };
                    let seed = ParamsSeed(method.unwrap_or(Method::Other));
                    once(&mut req.params, "params", || map.next_value_seed(seed))?
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(req)
    }
}

/// Fills `slot` with `read()`, or fails as serde does for a member given twice.
fn once<T, E: serde::de::Error>(
    slot: &mut Option<T>,
    name: &'static str,
    read: impl FnOnce() -> Result<T, E>,
) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(read()?);
    Ok(())
}

/// A request member's name.
enum Field {
    Jsonrpc,
    Method,
    Params,
    Id,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, v: &str) -> Result<Field, E> {
        Ok(match v {
            "jsonrpc" => Field::Jsonrpc,
            "method" => Field::Method,
            "params" => Field::Params,
            "id" => Field::Id,
            _ => Field::Other,
        })
    }
}

/// Reads a member as [`Member`].
struct MemberSeed;

impl<'de> DeserializeSeed<'de> for MemberSeed {
    type Value = Member<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(MemberVisitor)
    }
}

/// The value of `jsonrpc` or `method`: a string, or any other JSON value
/// (skipped; the request is then invalid, not unparseable).
enum Member<'a> {
    Text(Cow<'a, str>),
    NotText,
}

impl<'a> Member<'a> {
    fn text(&self) -> Option<&str> {
        match self {
            Member::Text(t) => Some(t),
            Member::NotText => None,
        }
    }
}

struct MemberVisitor;

impl<'de> Visitor<'de> for MemberVisitor {
    type Value = Member<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Member::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Member::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Member::NotText)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Member::NotText)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Member::NotText)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Member::NotText)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Member::NotText)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Member::NotText)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Member::NotText)
    }
}

const NULL_ID: &str = "null";

/// Handles one text frame; returns the response text, or `None` when the
/// frame consisted only of notifications.
pub async fn handle_frame(session: &mut Session, text: &str) -> Option<String> {
    let max_depth = session.hub.config.max_nesting;
    // The canonical shape knows its own depth: no scan of the whole frame.
    let canonical = canonical::recognize(text).filter(|c| c.nests_within(max_depth));
    if let Some(req) = canonical.and_then(from_canonical) {
        return handle_request(session, req).await;
    }
    if deeper_than(text.as_bytes(), max_depth) {
        session.hub.metrics.request(Method::Other, false);
        return Some(error_response(
            NULL_ID,
            &RpcError::parse_error(format!(
                "the frame nests arrays/objects deeper than the limit of {max_depth}"
            )),
        ));
    }
    if text.trim_start().starts_with('[') {
        handle_batch(session, text).await
    } else {
        match parse_general(text) {
            Ok(req) => handle_request(session, req).await,
            Err(err) => {
                session.hub.metrics.request(Method::Other, false);
                Some(error_response(NULL_ID, &err))
            }
        }
    }
}

/// Reads one request (a batch member): the canonical shape when it is
/// one, else the general pass.
fn parse(text: &str) -> Result<RawRequest<'_>, RpcError> {
    match canonical::recognize(text).and_then(from_canonical) {
        Some(req) => Ok(req),
        None => parse_general(text),
    }
}

/// [`parse`] without the canonical shortcut: serde_json's pass over the
/// envelope, which owns every error.
fn parse_general(text: &str) -> Result<RawRequest<'_>, RpcError> {
    // Anything but an object is not a request (serde would also read an
    // array positionally into the struct); bad syntax is still -32700.
    if !text.trim_start().starts_with('{') {
        return Err(match syntax_error(text) {
            Some(e) => RpcError::parse_error(e),
            None => RpcError::invalid_request("a request must be a JSON object"),
        });
    }
    // One pass decodes the params as well; a request it refuses is read
    // again with its params as text, for the precise error.
    if let Ok(req) = from_str_prechecked_seed(
        text,
        RequestSeed {
            decode_params: true,
        },
    ) {
        return Ok(req);
    }
    let raw_pass = RequestSeed {
        decode_params: false,
    };
    from_str_prechecked_seed(text, raw_pass).map_err(|e| match e.classify() {
        // A type error can surface before a later syntax error; syntax wins.
        Category::Data => match syntax_error(text) {
            Some(syntax) => RpcError::parse_error(syntax),
            None => RpcError::invalid_request(e),
        },
        _ => RpcError::parse_error(e),
    })
}

/// A request recognized by [`canonical`], as the serde pass would have read
/// it; `None` if its value is not one JSON value (the serde pass then
/// reports why).
fn from_canonical(c: Canonical<'_>) -> Option<RawRequest<'_>> {
    let (method, params) = match c.call {
        Call::Get { key } => (
            "get",
            Params::Get(KeyParams {
                key: Cow::Borrowed(key),
            }),
        ),
        Call::Update { key, value } => (
            "update",
            Params::Update(UpdateParams {
                key: Cow::Borrowed(key),
                value: serde_json::from_str(value).ok()?,
                ttl_ms: None,
                if_rev: None,
            }),
        ),
    };
    Some(RawRequest {
        jsonrpc: Some(Member::Text(Cow::Borrowed("2.0"))),
        method: Some(Member::Text(Cow::Borrowed(method))),
        params: Some(params),
        id: Some(c.id),
    })
}

/// The syntax error in `text`, if it is not well-formed JSON (error path only).
fn syntax_error(text: &str) -> Option<serde_json::Error> {
    from_str_prechecked::<serde::de::IgnoredAny>(text).err()
}

async fn handle_batch(session: &mut Session, text: &str) -> Option<String> {
    let items = match from_str_prechecked::<Vec<&RawValue>>(text) {
        Ok(items) => items,
        Err(e) => {
            session.hub.metrics.request(Method::Other, false);
            return Some(error_response(NULL_ID, &RpcError::parse_error(e)));
        }
    };
    if items.is_empty() {
        session.hub.metrics.request(Method::Other, false);
        return Some(error_response(
            NULL_ID,
            &RpcError::invalid_request("an empty batch is not a request"),
        ));
    }
    let max = session.hub.config.max_batch;
    if items.len() > max {
        session.hub.metrics.request(Method::Other, false);
        return Some(error_response(
            NULL_ID,
            &RpcError::limit_exceeded(
                "batch",
                max,
                format!(
                    "the batch holds {} requests, over the limit of {max}; none was run",
                    items.len()
                ),
            ),
        ));
    }
    // The reply is one frame held in memory whole: once it has outgrown the
    // message limit, the rest of the batch is answered "not run" instead of
    // running, so a batch of large reads cannot build a reply of
    // max_batch × max_value bytes. One reply overshoots by at most one result.
    let budget = session.hub.config.max_message_bytes;
    let mut out = String::new();
    for item in items {
        let response = match parse(item.get()) {
            Ok(req) if out.len() > budget => not_run(session, &req, out.len(), budget),
            Ok(req) => handle_request(session, req).await,
            Err(err) => {
                session.hub.metrics.request(Method::Other, false);
                Some(error_response(NULL_ID, &err))
            }
        };
        if let Some(r) = response {
            out.push(if out.is_empty() { '[' } else { ',' });
            out.push_str(&r);
        }
    }
    if out.is_empty() {
        None
    } else {
        out.push(']');
        Some(out)
    }
}

/// The answer to a batch member skipped because the batch's reply already
/// holds `held` bytes, over `budget`: a `-32011` error for a request with a
/// usable id, nothing for a notification.
fn not_run(session: &Session, req: &RawRequest<'_>, held: usize, budget: usize) -> Option<String> {
    session.hub.metrics.request(Method::Other, false);
    let id = echoable_id(req.id?).unwrap_or(NULL_ID);
    Some(error_response(
        id,
        &RpcError::limit_exceeded(
            "response_bytes",
            budget,
            format!(
                "not run: this batch's reply already holds {held} bytes, over the limit of {budget} \
                 (the message size limit); send the rest in another batch"
            ),
        ),
    ))
}

/// The id's text, to echo in the response, if it is a string, a number or
/// `null` (it is already known to be well-formed JSON).
fn echoable_id(raw: &str) -> Option<&str> {
    match raw.as_bytes().first() {
        Some(b'"' | b'-' | b'0'..=b'9' | b'n') => Some(raw),
        _ => None,
    }
}

/// Validates the envelope and runs the method. Invalid requests are always
/// answered (with `id: null` when the id itself is unusable); valid
/// notifications never are.
async fn handle_request(session: &mut Session, req: RawRequest<'_>) -> Option<String> {
    let id = match req.id {
        None => None,
        Some(raw) => match echoable_id(raw) {
            Some(id) => Some(id),
            None => {
                session.hub.metrics.request(Method::Other, false);
                return Some(error_response(
                    NULL_ID,
                    &RpcError::invalid_request("id must be a string, a number or null"),
                ));
            }
        },
    };
    let reply_id = id.unwrap_or(NULL_ID);
    let invalid = |session: &Session, msg: &str| {
        session.hub.metrics.request(Method::Other, false);
        Some(error_response(reply_id, &RpcError::invalid_request(msg)))
    };
    if req.jsonrpc.as_ref().and_then(Member::text) != Some("2.0") {
        return invalid(session, "\"jsonrpc\" must be \"2.0\"");
    }
    let Some(name) = req.method.as_ref().and_then(Member::text) else {
        return invalid(session, "\"method\" must be a string");
    };
    let method = Method::from_name(name);
    let params = match req.params {
        None | Some(Params::Text("null")) => Ok(Params::Text("{}")),
        Some(Params::Text(p)) if p.starts_with('{') => Ok(Params::Text(p)),
        Some(Params::Text(p)) if p.starts_with('[') => Err(RpcError::invalid_params(
            "params must be an object of named parameters; positional arrays are not supported",
        )),
        Some(Params::Text(_)) => return invalid(session, "\"params\" must be an object"),
        Some(decoded) => Ok(decoded),
    };
    let mut out = session.response_buffer();
    out.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    out.push_str(reply_id);
    out.push_str(",\"result\":");
    // The role is checked before the params: a read token learns nothing
    // about a write method beyond "forbidden".
    let result = if !session.role().allows(method) {
        Err(RpcError::forbidden(name))
    } else {
        match params {
            Ok(params) => methods::call(session, method, name, params, &mut out).await,
            Err(e) => Err(e),
        }
    };
    session.hub.metrics.request(method, result.is_ok());
    let reply = match (id, result) {
        (None, _) => None,
        (Some(_), Ok(())) => {
            out.push('}');
            // Copied out at its exact size: a queued response then holds no
            // spare capacity that the outbox's byte budget does not see, and
            // becomes a frame without another allocation.
            Some(String::from(out.as_str()))
        }
        (Some(id), Err(err)) => Some(error_response(id, &err)),
    };
    session.recycle(out);
    reply
}

/// The text of an error response.
pub fn error_response(id: &str, err: &RpcError) -> String {
    let mut out = String::with_capacity(128 + err.message.len());
    out.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    out.push_str(id);
    out.push_str(",\"error\":");
    // An RpcError (a number, a string and a JSON value) always serializes.
    out.push_str(&serde_json::to_string(err).unwrap_or_default());
    out.push('}');
    out
}

/// The response to a binary frame.
pub fn binary_frame_error() -> String {
    error_response(
        NULL_ID,
        &RpcError::invalid_request(
            "binary frames are not accepted; send each JSON-RPC message as a text frame",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a parsed request holds, as comparable text.
    fn describe(r: &RawRequest<'_>) -> String {
        let member = |m: &Option<Member<'_>>| match m {
            None => "absent".to_string(),
            Some(m) => format!("{:?}", m.text()),
        };
        let params = match &r.params {
            None => "absent".to_string(),
            Some(Params::Text(t)) => format!("text {t}"),
            Some(Params::Get(p)) => format!("get {:?}", p.key),
            Some(Params::Update(p)) => format!(
                "update {:?} {} {:?} {:?}",
                p.key,
                p.value.get(),
                p.ttl_ms,
                p.if_rev
            ),
        };
        format!(
            "jsonrpc {} method {} id {:?} params {params}",
            member(&r.jsonrpc),
            member(&r.method),
            r.id
        )
    }

    fn serde_pass(text: &str) -> Option<String> {
        let seed = RequestSeed {
            decode_params: true,
        };
        from_str_prechecked_seed(text, seed)
            .ok()
            .map(|r| describe(&r))
    }

    fn value_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,8}".prop_map(serde_json::Value::from),
        ];
        let json = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z}\"]{0,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        prop_oneof![
            4 => json.prop_map(|v| v.to_string()),
            // Texts that only look like a value's end.
            1 => prop::sample::select(vec![
                "1}}", "1,\"ttl_ms\":5", "{\"a\":1}}", " 1", "1 ", "", "[1,", "\"x\"}", "nul",
            ])
            .prop_map(str::to_string),
        ]
    }

    proptest! {
        /// Whatever the canonical recognizer accepts, serde_json reads the
        /// same way; and the shape our clients send is accepted.
        #[test]
        fn the_canonical_path_reads_what_serde_reads(
            id in prop_oneof![any::<u64>().prop_map(|n| n.to_string()), "-?0[0-9]{0,2}|[0-9]{1,25}"],
            key in prop_oneof![".{0,12}", "[a-z:/]{1,12}"],
            update in any::<bool>(),
            value in value_text(),
            max_depth in 0usize..6,
        ) {
            let quoted = serde_json::Value::from(key.as_str()).to_string();
            let text = if update {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"update","params":{{"key":{quoted},"value":{value}}}}}"#)
            } else {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"get","params":{{"key":{quoted}}}}}"#)
            };
            if let Some(c) = canonical::recognize(&text) {
                prop_assert_eq!(
                    c.nests_within(max_depth),
                    !deeper_than(text.as_bytes(), max_depth),
                    "depth limit {}: {}", max_depth, text
                );
            }
            let fast = canonical::recognize(&text).and_then(from_canonical).map(|r| describe(&r));
            if let Some(fast) = &fast {
                prop_assert_eq!(Some(fast.clone()), serde_pass(&text), "{}", text);
            }
            let plain_key = quoted.len() == key.len() + 2 && !key.chars().any(char::is_control);
            let plain_id = id == "0" || (!id.starts_with('0') && !id.starts_with('-'));
            let whole_value = serde_json::from_str::<&RawValue>(&value).is_ok_and(|v| v.get() == value);
            if plain_key && plain_id && (!update || whole_value) {
                prop_assert!(fast.is_some(), "not recognized: {}", text);
            }
        }
    }
}
