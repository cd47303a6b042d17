//! Who may open a WebSocket: the protected-mode rule.
//!
//! Pure decisions over addresses and settings, so they can be unit-tested
//! without sockets. The HTTP layer turns a refusal into a 403 response.

use std::net::IpAddr;

/// Body of the 403 answer to a refused upgrade: what happened and how to fix it.
pub const PROTECTED_MODE_REFUSAL: &str = "\
memhub is running in protected mode: it is bound to a non-loopback address \
and has no authentication configured, so it accepts WebSocket connections \
only from this machine (loopback addresses).

To let other hosts connect, either
  * configure access tokens (`--token TOKEN`, `--read-token TOKEN` or \
`--token-file PATH`; clients then send `Authorization: Bearer TOKEN`), or
  * restart it with `--protected-mode off` (or MEMHUB_PROTECTED_MODE=off) if \
every host that can reach this port is trusted, or
  * bind it to 127.0.0.1 and put an authenticating proxy in front of it.
";

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// True if protected mode lets a peer at `peer` upgrade on a hub bound to
/// `bind`: protected mode off, authentication configured, a loopback bind
/// (only local peers can reach it), or a loopback peer.
pub fn protected_mode_allows(
    protected: bool,
    auth_configured: bool,
    bind: IpAddr,
    peer: IpAddr,
) -> bool {
    !protected || auth_configured || is_loopback(bind) || is_loopback(peer)
}

/// True if a WebSocket upgrade carrying `origin` may proceed: no `Origin`
/// (a non-browser client), the hub's own origin (`http://` or `https://`
/// plus the request's `Host`), an allow-listed origin, or an allow-list
/// holding `*`. Comparison ignores ASCII case, as origins do.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim_end_matches('/');
    if let Some(host) = host {
        for scheme in ["http://", "https://"] {
            if origin.len() == scheme.len() + host.len()
                && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
                && origin[scheme.len()..].eq_ignore_ascii_case(host)
            {
                return true;
            }
        }
    }
    allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Body of the 403 answer to an upgrade from a foreign browser origin.
pub fn origin_refusal(origin: &str) -> String {
    format!(
        "memhub refused a WebSocket upgrade from origin {origin:?}: browsers may connect only \
         from the hub's own origin or an origin allowed with --allow-origin \
         (MEMHUB_ALLOW_ORIGIN). This protects the hub from cross-site WebSocket hijacking \
         by pages the user happens to visit.\n"
    )
}

/// True if binding to `bind` exposes the hub beyond this machine.
pub fn exposes_beyond_loopback(bind: IpAddr) -> bool {
    !is_loopback(bind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn protected_mode_rule() {
        let any4 = ip("0.0.0.0");
        let lan = ip("192.0.2.7");
        let remote = ip("198.51.100.9");
        // Exposed bind, no auth: only loopback peers.
        assert!(protected_mode_allows(true, false, any4, ip("127.0.0.1")));
        assert!(protected_mode_allows(true, false, any4, ip("127.8.9.10")));
        assert!(protected_mode_allows(true, false, ip("::"), ip("::1")));
        assert!(protected_mode_allows(
            true,
            false,
            ip("::"),
            ip("::ffff:127.0.0.1")
        ));
        assert!(!protected_mode_allows(true, false, any4, remote));
        assert!(!protected_mode_allows(true, false, lan, remote));
        assert!(!protected_mode_allows(
            true,
            false,
            ip("::"),
            ip("2001:db8::1")
        ));
        // Loopback bind: anything that reaches it is local.
        assert!(protected_mode_allows(true, false, ip("127.0.0.1"), remote));
        // Protected mode off, or auth configured: everyone.
        assert!(protected_mode_allows(false, false, any4, remote));
        assert!(protected_mode_allows(true, true, any4, remote));
        assert!(exposes_beyond_loopback(any4));
    }

    #[test]
    fn origin_rule() {
        let host = Some("127.0.0.1:18813");
        assert!(origin_allowed(None, host, &[]));
        assert!(origin_allowed(Some("http://127.0.0.1:18813"), host, &[]));
        assert!(origin_allowed(Some("HTTPS://127.0.0.1:18813"), host, &[]));
        assert!(!origin_allowed(Some("http://evil.example"), host, &[]));
        assert!(!origin_allowed(Some("http://127.0.0.1:18814"), host, &[]));
        assert!(!origin_allowed(Some("null"), host, &[]));
        assert!(!origin_allowed(Some("http://127.0.0.1:18813"), None, &[]));
        let list = vec!["https://app.example".to_string()];
        assert!(origin_allowed(Some("https://app.example"), host, &list));
        assert!(!origin_allowed(Some("http://app.example"), host, &list));
        assert!(origin_allowed(
            Some("http://anything"),
            host,
            &["*".to_string()]
        ));
        assert!(!exposes_beyond_loopback(ip("::1")));
    }
}
