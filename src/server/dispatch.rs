//! From one text frame to its response text: JSON-RPC 2.0 framing rules.
//!
//! This module owns the envelope: nesting limit, parse errors, batches and
//! their size limit, notifications (no `id`, no answer), id validation and
//! echo, `jsonrpc` and `params` shape checks, and metrics per request. It
//! hands each well-formed request to [`methods::call`] and never looks inside
//! `params` itself.

use std::borrow::Cow;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::error::Category;
use serde_json::value::RawValue;

use super::methods::{self, Method};
use super::session::Session;
use crate::jsontext::{from_str_prechecked, nesting_depth};
use crate::protocol::RpcError;

/// The members of a request object. `id` and `params` are kept raw, so
/// that their presence and type can be judged separately (absent vs `null`
/// matters for `id`) and `id` is echoed byte for byte; `jsonrpc` and
/// `method` are read as whatever JSON they hold ([`Member`]), which costs a
/// fraction of keeping them raw and parsing them again.
#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow, default, deserialize_with = "member")]
    jsonrpc: Option<Member<'a>>,
    #[serde(borrow, default, deserialize_with = "member")]
    method: Option<Member<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

/// A member that is present (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A present member read as a string if it is one.
fn member<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Member<'de>>, D::Error> {
    d.deserialize_any(MemberVisitor).map(Some)
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
    if nesting_depth(text.as_bytes(), max_depth) > max_depth {
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
        match parse(text) {
            Ok(req) => handle_request(session, req).await,
            Err(err) => {
                session.hub.metrics.request(Method::Other, false);
                Some(error_response(NULL_ID, &err))
            }
        }
    }
}

fn parse(text: &str) -> Result<RawRequest<'_>, RpcError> {
    // Anything but an object is not a request (serde would also read an
    // array positionally into the struct); bad syntax is still -32700.
    if !text.trim_start().starts_with('{') {
        return Err(match syntax_error(text) {
            Some(e) => RpcError::parse_error(e),
            None => RpcError::invalid_request("a request must be a JSON object"),
        });
    }
    from_str_prechecked::<RawRequest>(text).map_err(|e| match e.classify() {
        // A type error can surface before a later syntax error; syntax wins.
        Category::Data => match syntax_error(text) {
            Some(syntax) => RpcError::parse_error(syntax),
            None => RpcError::invalid_request(e),
        },
        _ => RpcError::parse_error(e),
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
/// `null` (serde has already checked that it is well-formed JSON).
fn echoable_id(raw: &RawValue) -> Option<&str> {
    match raw.get().as_bytes().first() {
        Some(b'"' | b'-' | b'0'..=b'9' | b'n') => Some(raw.get()),
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
    let params = match req.params.map(RawValue::get) {
        None | Some("null") => Ok("{}"),
        Some(p) if p.starts_with('{') => Ok(p),
        Some(p) if p.starts_with('[') => Err(RpcError::invalid_params(
            "params must be an object of named parameters; positional arrays are not supported",
        )),
        Some(_) => return invalid(session, "\"params\" must be an object"),
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
