//! Byte-level helpers over JSON text that serde_json has validated (or will).
//!
//! Values are kept as compact JSON text, never as trees; these helpers let the
//! hub measure nesting, strip insignificant whitespace and append escaped
//! strings without building a `serde_json::Value`. They never allocate a tree
//! and never judge validity beyond what their doc says.

/// The index of the quote closing the string whose contents start at
/// `from` (just past its opening quote), skipping escaped characters; `None`
/// if the string never closes. Jumps between quotes and backslashes with
/// memchr, so a long string costs a vector scan, not a branch per byte.
fn string_end(text: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', text.get(from..)?)?;
        if text[at] == b'"' {
            return Some(at);
        }
        // A backslash: skip it and the byte it escapes.
        from = at + 2;
    }
}

/// True if `text` nests arrays/objects deeper than `limit`, ignoring
/// brackets inside strings. The depth is at most the number of opening
/// brackets, which is at most the length: a text no longer than `limit`, or
/// with at most `limit` opening brackets in all (most requests and values),
/// is answered without the string-aware scan of [`nesting_depth`].
pub fn deeper_than(text: &[u8], limit: usize) -> bool {
    text.len() > limit
        && memchr::memchr2_iter(b'[', b'{', text).count() > limit
        && nesting_depth(text, limit) > limit
}

/// The deepest array/object nesting in `text`, ignoring brackets inside
/// strings. Stops counting (and returns a value above `limit`) as soon as the
/// depth exceeds `limit`, so a hostile frame costs at most one linear scan.
pub fn nesting_depth(text: &[u8], limit: usize) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => match string_end(text, i + 1) {
                Some(end) => i = end,
                None => return max,
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    max = depth;
                    if max > limit {
                        return max;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The index of the first whitespace byte outside strings at or after `i`.
fn next_whitespace(bytes: &[u8], mut i: usize) -> Option<usize> {
    while let Some(&b) = bytes.get(i) {
        if b == b'"' {
            i = string_end(bytes, i + 1)?;
        } else if is_json_whitespace(b) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Returns `text` (valid JSON) without whitespace outside strings: the
/// compact form whose length the value-size limit and `keys`' `bytes` use.
/// Borrows when `text` is already compact, which is the common case.
pub fn compact(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    // Most values hold no whitespace byte at all, which a branch-free pass
    // finds at vector speed; only the others need the string-aware scan.
    if !bytes
        .iter()
        .fold(false, |seen, &b| seen | is_json_whitespace(b))
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let Some(first) = next_whitespace(bytes, 0) else {
        return std::borrow::Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    // Only ASCII whitespace is dropped, so every kept run is a valid str slice.
    let mut run_start = 0;
    let mut ws = Some(first);
    while let Some(at) = ws {
        out.push_str(&text[run_start..at]);
        run_start = at + 1;
        ws = next_whitespace(bytes, run_start);
    }
    out.push_str(&text[run_start..]);
    std::borrow::Cow::Owned(out)
}

/// Deserializes `text` without serde_json's fixed recursion limit of 128.
/// Only for text whose nesting the caller has already bounded with
/// [`nesting_depth`] (the hub checks every frame against its configured
/// limit before parsing), so the configured limit is the one that applies.
pub fn from_str_prechecked<'a, T: serde::Deserialize<'a>>(text: &'a str) -> serde_json::Result<T> {
    from_str_prechecked_seed(text, std::marker::PhantomData::<T>)
}

/// [`from_str_prechecked`] with a seed that carries state into the
/// deserialization (same precondition: nesting already bounded).
pub fn from_str_prechecked_seed<'a, S: serde::de::DeserializeSeed<'a>>(
    text: &'a str,
    seed: S,
) -> serde_json::Result<S::Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let value = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Appends `s` as a JSON string literal (quoted and escaped) to `out`.
pub fn push_str_literal(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut run_start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[run_start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        run_start = i + 1;
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(br#"{"a":"[[[{{{"}"#, 100), 1);
        assert_eq!(nesting_depth(br#"[[["\"]]]"]]]"#, 100), 3);
        assert_eq!(nesting_depth(b"1", 100), 0);
    }

    #[test]
    fn depth_stops_past_limit() {
        let deep = "[".repeat(10_000);
        assert_eq!(nesting_depth(deep.as_bytes(), 5), 6);
    }

    #[test]
    fn compact_strips_only_outside_strings() {
        assert_eq!(compact("[1, 2]"), "[1,2]");
        assert_eq!(
            compact(" { \"a b\" : [ \"c\\\" d\" ] }\n"),
            "{\"a b\":[\"c\\\" d\"]}"
        );
        assert!(matches!(compact("[1,2]"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(compact("\"é ü\""), "\"é ü\"");
    }

    /// The byte-at-a-time scans these functions replaced, as the reference.
    fn reference_depth(text: &[u8], limit: usize) -> usize {
        let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
        for &b in text {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                    if max > limit {
                        return max;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    fn reference_compact(text: &str) -> String {
        let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
        for c in text.chars() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                }
            } else if c == '"' {
                in_string = true;
            } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
                continue;
            }
            out.push(c);
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn scans_agree_with_the_byte_at_a_time_reference(
            text in "[\\[\\]{}\"\\\\ \t\nab1é,:]{0,40}",
            limit in 0usize..6,
        ) {
            proptest::prop_assert_eq!(
                nesting_depth(text.as_bytes(), limit),
                reference_depth(text.as_bytes(), limit)
            );
            proptest::prop_assert_eq!(
                deeper_than(text.as_bytes(), limit),
                reference_depth(text.as_bytes(), limit) > limit
            );
            proptest::prop_assert_eq!(compact(&text).into_owned(), reference_compact(&text));
        }
    }

    #[test]
    fn str_literal_round_trips() {
        for s in ["plain", "quo\"te", "back\\slash", "nl\n\u{1}\u{1f}", "ünï"] {
            let mut out = String::new();
            push_str_literal(&mut out, s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s);
        }
    }
}
