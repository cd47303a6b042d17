//! `memhub bench --mode chaos --spawn --seconds 5` through the library: the
//! soak must PASS, with every kind of abuse actually thrown at the hub, the
//! known keys intact and the RSS measured. (The 60-second version runs in
//! `just test` as the `soak-60s` step; `just soak` runs the long one.)

use std::time::Duration;

use memhub::bench::{run, BenchConfig, Mode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_passes() {
    let cfg = BenchConfig {
        mode: Mode::Chaos,
        spawn: true,
        duration: Some(Duration::from_secs(5)),
        ..BenchConfig::default()
    };
    // A FAIL is an error whose message lists the failures (the report was
    // printed to stdout just before).
    let report = match run(&cfg).await {
        Ok(r) => r,
        Err(e) => panic!("{e:#}"),
    };
    let line = report.to_json_line();
    println!("{}", report.human());
    let Some(c) = &report.chaos else {
        panic!("no chaos figures: {line}")
    };
    assert!(c.passed, "{line}");
    assert!(c.failures.is_empty(), "{line}");
    assert_eq!(c.unexpected_errors, 0, "{line}");
    assert_eq!(report.errors, 0, "{line}");
    assert!(c.known_keys_intact, "{line}");
    assert_eq!(c.known_keys, 1000, "{line}");
    assert_eq!(c.known_keys_intact_count, 1000, "{line}");
    assert!(c.hub_answering, "{line}");
    // Every kind of traffic and abuse happened.
    for kind in [
        "get",
        "get-known",
        "update",
        "incr",
        "patch",
        "subscribe",
        "unsubscribe",
        "events-received",
        "lock",
        "lock-holder-vanished",
        "reset-mid-request",
        "reset-mid-subscription",
        "storm-connections",
        "oversized-text",
        "garbage-deep-arrays",
        "garbage-binary",
    ] {
        assert!(
            c.ops.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}: {line}"
        );
    }
    for kind in [
        "close-1009",
        "parse-error(-32700)",
        "invalid-request(-32600)",
    ] {
        assert!(
            c.expected_errors.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}: {line}"
        );
    }
    // The hub went back to where it was.
    let Some(after) = c.after else {
        panic!("no hub state after: {line}")
    };
    assert_eq!(after.connections, c.baseline.connections, "{line}");
    assert_eq!(after.subscriptions, 0, "{line}");
    assert_eq!(after.locks_held, 0, "{line}");
    assert_eq!(after.lock_waiters, 0, "{line}");
    // In-process: the RSS was read before and after.
    assert!(c.rss_before_bytes.is_some_and(|b| b > 0), "{line}");
    assert!(c.rss_after_bytes.is_some_and(|b| b > 0), "{line}");
    assert!(
        c.rss_growth_limit_bytes.is_some_and(|l| l >= 32 << 20),
        "{line}"
    );
    // The JSON report carries the verdict.
    let parsed: serde_json::Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => panic!("not JSON: {e}: {line}"),
    };
    assert_eq!(parsed["mode"], "chaos");
    assert_eq!(parsed["chaos"]["passed"], true);
    assert!(report.human().contains("PASS"));
}
