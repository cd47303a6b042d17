//! Who is calling: access tokens and the role each one grants.
//!
//! A hub with tokens configured admits a WebSocket only if the upgrade
//! presents one (`Authorization: Bearer T`, or `?token=T` for browsers,
//! which cannot set headers on a WebSocket). A `write` token may call every
//! method; a `read` token only the methods that change nothing. Tokens are
//! compared in constant time and never appear in logs or `Debug` output.

use std::fmt;
use std::path::Path;

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use super::methods::Method;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every method.
    Write,
    /// `get`, `is_memoized`, `keys`, `stats`, `version`, `subscribe`, `unsubscribe`.
    Read,
}

impl Role {
    /// The role's name on the wire (`version`'s `role`): "write" or "read".
    pub fn name(self) -> &'static str {
        match self {
            Role::Write => "write",
            Role::Read => "read",
        }
    }

    /// True if this role may call `method` (unknown methods are allowed
    /// through so they answer "method not found").
    pub fn allows(self, method: Method) -> bool {
        match self {
            Role::Write => true,
            Role::Read => matches!(
                method,
                Method::Get
                    | Method::IsMemoized
                    | Method::Keys
                    | Method::Stats
                    | Method::Version
                    | Method::Subscribe
                    | Method::Unsubscribe
                    | Method::Other
            ),
        }
    }
}

/// The configured tokens. Empty means the hub is open (subject to protected mode).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<(String, Role)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} configured, redacted)", self.entries.len())
    }
}

impl Tokens {
    /// No tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token; refuses empty tokens and tokens with whitespace.
    pub fn add(&mut self, token: &str, role: Role) -> Result<(), String> {
        if token.is_empty() {
            return Err("a token must not be empty".into());
        }
        if token.chars().any(char::is_whitespace) {
            return Err("a token must not contain whitespace".into());
        }
        self.entries.push((token.to_string(), role));
        Ok(())
    }

    /// Reads `role token` lines (`write` or `read`; blank lines and `#`
    /// comments ignored). Errors name the line and never echo a token.
    pub fn add_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(role), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!(
                    "{}:{}: expected `write TOKEN` or `read TOKEN`",
                    path.display(),
                    n + 1
                ));
            };
            let role = match role {
                "write" => Role::Write,
                "read" => Role::Read,
                other => {
                    return Err(format!(
                        "{}:{}: unknown role {other:?} (use `write` or `read`)",
                        path.display(),
                        n + 1
                    ))
                }
            };
            self.add(token, role)
                .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        }
        Ok(())
    }

    /// True when no token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role `presented` grants, if it is a configured token. Compares
    /// against every token in constant time per byte, without early exit.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let mut found = None;
        for (token, role) in &self.entries {
            if bool::from(token.as_bytes().ct_eq(presented.as_bytes())) && found.is_none() {
                found = Some(*role);
            }
        }
        found
    }
}

/// The token an upgrade request presents: `Authorization: Bearer T`, else
/// the `token` query parameter.
pub fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        // The scheme name is case-insensitive (RFC 9110).
        if let Some((scheme, t)) = v.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(t.trim().to_string());
            }
        }
    }
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// Body of the 401 answer.
pub const UNAUTHORIZED: &str = "\
memhub requires an access token: send `Authorization: Bearer TOKEN` with the \
WebSocket upgrade, or add `?token=TOKEN` to the URL (browsers cannot set the \
header). The token presented, if any, is not valid.
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_lookup() {
        let mut t = Tokens::new();
        t.add("w-secret", Role::Write).unwrap();
        t.add("r-secret", Role::Read).unwrap();
        assert!(t.add("", Role::Read).is_err());
        assert!(t.add("a b", Role::Read).is_err());
        assert_eq!(t.role_of("w-secret"), Some(Role::Write));
        assert_eq!(t.role_of("r-secret"), Some(Role::Read));
        assert_eq!(t.role_of("w-secre"), None);
        assert_eq!(t.role_of(""), None);
        assert!(!format!("{t:?}").contains("secret"));
        assert!(Role::Read.allows(Method::Get));
        assert!(!Role::Read.allows(Method::Update));
        assert!(!Role::Read.allows(Method::Lock));
        assert!(Role::Write.allows(Method::Unlock));
    }

    #[test]
    fn token_from_header_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(
            presented_token(&h, Some("a=1&token=q%20t")),
            Some("q t".into())
        );
        assert_eq!(presented_token(&h, None), None);
        h.insert(header::AUTHORIZATION, "Bearer hdr".parse().unwrap());
        assert_eq!(presented_token(&h, Some("token=q")), Some("hdr".into()));
        h.insert(header::AUTHORIZATION, "BEARER up".parse().unwrap());
        assert_eq!(presented_token(&h, None), Some("up".into()));
    }

    #[test]
    fn token_file() {
        let dir = std::env::temp_dir().join(format!("memhub-tokens-{}", std::process::id()));
        std::fs::write(&dir, "# comment\n\nwrite abc\nread def\n").unwrap();
        let mut t = Tokens::new();
        t.add_file(&dir).unwrap();
        assert_eq!(t.role_of("def"), Some(Role::Read));
        std::fs::write(&dir, "admin abc\n").unwrap();
        let err = Tokens::new().add_file(&dir).unwrap_err();
        assert!(err.contains(":1:") && !err.contains("abc"), "{err}");
        let _ = std::fs::remove_file(&dir);
    }
}
