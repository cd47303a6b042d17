//! `get` and `update` requests in the exact shape memhub's clients send,
//! recognized by comparing bytes before the general JSON-RPC pass.
//!
//! The shapes are
//!
//! ```text
//! {"jsonrpc":"2.0","id":N,"method":"get","params":{"key":"K"}}
//! {"jsonrpc":"2.0","id":N,"method":"update","params":{"key":"K","value":V}}
//! ```
//!
//! with no whitespace, the members in this order, `N` a non-negative integer
//! and `K` a string without escapes or control characters: what the
//! JavaScript client, the Rust client and `memhub bench` write. Such a frame
//! means exactly what serde_json reads from it (a property test in
//! `dispatch` holds the two together), so dispatch takes the parts found here
//! and skips its serde pass over the envelope, about a third of a `get`'s
//! instructions. `V` is only cut out here: dispatch still has serde_json
//! read it, since a value may be any JSON. Anything else, including the same
//! request with other spacing, member order, escapes or extra params,
//! returns `None` and takes the general path, which owns every error.

use crate::jsontext::deeper_than;

/// The parts of a recognized request, borrowed from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Canonical<'a> {
    /// The id's text: digits, no leading zero.
    pub id: &'a str,
    /// The method and its params.
    pub call: Call<'a>,
}

/// A recognized method with its params.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call<'a> {
    /// `get` of a key (its text is its value: no escapes).
    Get { key: &'a str },
    /// `update` of a key with a value's text, not yet checked to be JSON.
    Update { key: &'a str, value: &'a str },
}

const HEAD: &str = r#"{"jsonrpc":"2.0","id":"#;
const GET: &str = r#","method":"get","params":{"key":""#;
const UPDATE: &str = r#","method":"update","params":{"key":""#;
const VALUE: &str = r#"","value":"#;

impl Canonical<'_> {
    /// True if the whole frame nests no deeper than `max_depth`: the shape
    /// itself is two objects deep, around the value's own depth.
    pub fn nests_within(&self, max_depth: usize) -> bool {
        match (self.call, max_depth.checked_sub(2)) {
            (_, None) => false,
            (Call::Get { .. }, Some(_)) => true,
            (Call::Update { value, .. }, Some(left)) => !deeper_than(value.as_bytes(), left),
        }
    }
}

/// The parts of `text` if it is a `get` or `update` in the canonical shape.
pub(super) fn recognize(text: &str) -> Option<Canonical<'_>> {
    let rest = text.strip_prefix(HEAD)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (id, rest) = rest.split_at(digits);
    if id.is_empty() || (id.len() > 1 && id.starts_with('0')) {
        return None;
    }
    let body = rest.strip_suffix("}}")?;
    if let Some(quoted) = body.strip_prefix(GET) {
        let key = quoted.strip_suffix('"')?;
        return plain(key).then_some(Canonical {
            id,
            call: Call::Get { key },
        });
    }
    let rest = body.strip_prefix(UPDATE)?;
    // The key ends at the first byte that is a quote, a backslash or a
    // control byte. Unless it is the closing quote (which `VALUE` starts
    // with), the key needs an escape and the general path decides. One
    // short loop: keys are short and `str::find` costs a searcher's setup.
    let end = rest
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < 0x20)?;
    let (key, rest) = rest.split_at(end);
    let value = rest.strip_prefix(VALUE)?;
    let spaced = |b: Option<u8>| b.is_none_or(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if spaced(value.bytes().next()) || spaced(value.bytes().last()) {
        return None;
    }
    Some(Canonical {
        id,
        call: Call::Update { key, value },
    })
}

/// True if a JSON string with these contents needs no escape.
fn plain(s: &str) -> bool {
    !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shapes_our_clients_send_are_recognized() {
        assert_eq!(
            recognize(r#"{"jsonrpc":"2.0","id":17,"method":"get","params":{"key":"a/b c:ü"}}"#),
            Some(Canonical {
                id: "17",
                call: Call::Get { key: "a/b c:ü" }
            })
        );
        assert_eq!(
            recognize(
                r#"{"jsonrpc":"2.0","id":0,"method":"update","params":{"key":"k","value":{"a":[1,"}}"]}}}"#
            ),
            Some(Canonical {
                id: "0",
                call: Call::Update {
                    key: "k",
                    value: r#"{"a":[1,"}}"]}"#
                }
            })
        );
    }

    #[test]
    fn anything_else_takes_the_general_path() {
        for text in [
            r#"{"jsonrpc":"2.0","id":01,"method":"get","params":{"key":"k"}}"#,
            r#"{"jsonrpc":"2.0","id":-1,"method":"get","params":{"key":"k"}}"#,
            r#"{"jsonrpc":"2.0","id":"1","method":"get","params":{"key":"k"}}"#,
            r#"{"jsonrpc":"2.0","method":"get","params":{"key":"k"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"get","params":{"key":"k\"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"get","params":{"key":"k\u0041"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"get","params":{"key":"k","x":1}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"get","params":{"key":"k"} }"#,
            r#"{"id":1,"jsonrpc":"2.0","method":"get","params":{"key":"k"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"update","params":{"key":"k\"","value":1}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"update","params":{"key":"k","value": 1}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"update","params":{"key":"k","value":}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"update","params":{"value":1,"key":"k"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"delete","params":{"key":"k"}}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"get\",\"params\":{\"key\":\"a\tb\"}}",
        ] {
            assert_eq!(recognize(text), None, "{text}");
        }
    }
}
