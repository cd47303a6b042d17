//! What a run measured, for people and for machines.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Mode;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value seen.
    pub max: f64,
}

impl Latency {
    /// Percentiles of a histogram of nanoseconds (all zero when empty).
    pub fn from_nanos(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        Self {
            mean: (h.mean() / 100.0).round() / 10.0,
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// The fan-out part of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FanoutReport {
    /// Subscriber connections.
    pub subscribers: usize,
    /// Events received by all subscribers for updates published in the
    /// measured period.
    pub deliveries: u64,
    /// `deliveries` per measured second.
    pub deliveries_per_sec: f64,
    /// Publish → delivery latency (from the timestamp in the value).
    pub latency_us: Latency,
    /// True when any subscriber missed an event (a gap in the sequence, a
    /// `lagged` event, or an event still missing when the run ended).
    pub missed: bool,
    /// Events missed, summed over subscribers (a `lagged` event with no
    /// visible gap counts as one).
    pub missed_events: u64,
    /// `lagged` events received, summed over subscribers.
    pub lagged: u64,
}

/// What one run of `memhub bench` measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The workload.
    pub mode: Mode,
    /// The hub measured.
    pub url: String,
    /// True when the hub was started in-process (`--spawn`).
    pub spawned: bool,
    /// Load connections (1, the publisher, in the fan-out modes).
    pub clients: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Characters per written value.
    pub value_size: usize,
    /// Distinct keys.
    pub keyspace: u64,
    /// Measured operations that succeeded (requests, publishes, or
    /// connection cycles).
    pub ops: u64,
    /// Measured seconds (warmup excluded).
    pub seconds: f64,
    /// `ops / seconds`.
    pub ops_per_sec: f64,
    /// Error responses and failed operations in the measured period.
    pub errors: u64,
    /// Request latency (for `connect`: open + `version` answered).
    pub latency_us: Latency,
    /// Fan-out figures, in the fan-out modes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout: Option<FanoutReport>,
    /// Soak figures and the verdict, in `chaos` mode only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chaos: Option<ChaosReport>,
    /// Memory per idle connection, in `idle` mode only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleReport>,
}

/// The `idle` part of a report: what open, quiet connections cost the hub.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IdleReport {
    /// Connections held open.
    pub connections: usize,
    /// Hub RSS before they were opened.
    pub rss_before_bytes: u64,
    /// Hub RSS with all of them open and answered.
    pub rss_after_bytes: u64,
    /// `(after - before) / connections`.
    pub bytes_per_connection: f64,
}

/// The hub-wide numbers of `stats` that must return to their baseline once
/// the chaos connections are gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HubState {
    /// Open WebSocket connections.
    pub connections: u64,
    /// Live subscriptions.
    pub subscriptions: u64,
    /// Locks held.
    pub locks_held: u64,
    /// `lock` requests waiting.
    pub lock_waiters: u64,
    /// Keys stored.
    pub keys: u64,
}

impl std::fmt::Display for HubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connections, {} subscriptions, {} locks held, {} lock waiters",
            self.connections, self.subscriptions, self.locks_held, self.lock_waiters
        )
    }
}

/// The `chaos` part of a report: what was thrown at the hub, what came back,
/// and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChaosReport {
    /// True when nothing below failed.
    pub passed: bool,
    /// Why the run failed (empty when it passed).
    pub failures: Vec<String>,
    /// Seconds of chaos before the measured period (not in `ops`).
    pub warmup_seconds: f64,
    /// Operations of the measured period by kind: requests by method,
    /// events received, connections reset, oversized and garbage messages
    /// sent, storm connections, lock hand-overs.
    pub ops: BTreeMap<String, u64>,
    /// Errors and closes that were the right answer (a `get` of an absent
    /// key, a busy lock, a garbage frame's error, close 1009, `lagged`),
    /// by kind, in the measured period.
    pub expected_errors: BTreeMap<String, u64>,
    /// Everything that should not have happened, warmup included: a valid
    /// request that failed, a connection that should have lived and died, a
    /// wrong answer, an event out of order, no 1009, a lock not passed on.
    pub unexpected_errors: u64,
    /// The first few unexpected errors, described.
    pub unexpected_samples: Vec<String>,
    /// Known keys written before the chaos (`chaos:known:{n}`).
    pub known_keys: u64,
    /// Known keys found afterwards with their value and rev unchanged.
    pub known_keys_intact_count: u64,
    /// True when every known key is intact and no other key appeared under
    /// the prefix.
    pub known_keys_intact: bool,
    /// False when the hub stopped answering (a `stats` call timed out or the
    /// hub refused new connections).
    pub hub_answering: bool,
    /// Whose RSS was measured: `in-process` (`--spawn`: this process, hub
    /// and load together), `pid N`, or absent when not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_source: Option<String>,
    /// RSS after the known keys and the warmup, with the hub back at its
    /// baseline.
    pub rss_before_bytes: Option<u64>,
    /// RSS after the chaos, with the hub back at its baseline.
    pub rss_after_bytes: Option<u64>,
    /// `rss_after_bytes - rss_before_bytes`.
    pub rss_growth_bytes: Option<i64>,
    /// The growth allowed: max(16 MiB, 25 % of the RSS before).
    pub rss_growth_limit_bytes: Option<u64>,
    /// Hub state before the warmup.
    pub baseline: HubState,
    /// Hub state after the chaos (absent when `stats` failed).
    pub after: Option<HubState>,
    /// Most connections `stats` reported during the measured period.
    pub max_connections_seen: u64,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn signed_mib(bytes: i64) -> String {
    let sign = if bytes < 0 { "-" } else { "+" };
    format!("{sign}{}", mib(bytes.unsigned_abs()))
}

fn counts_line(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ChaosReport {
    fn human(&self, s: &mut String) {
        s.push_str(&format!("  operations: {}\n", counts_line(&self.ops)));
        s.push_str(&format!(
            "  expected errors: {}\n",
            counts_line(&self.expected_errors)
        ));
        s.push_str(&format!(
            "  unexpected errors: {}\n",
            self.unexpected_errors
        ));
        for e in &self.unexpected_samples {
            s.push_str(&format!("    - {e}\n"));
        }
        s.push_str(&format!(
            "  known keys intact: {} ({}/{})\n",
            self.known_keys_intact, self.known_keys_intact_count, self.known_keys
        ));
        s.push_str(&format!(
            "  hub answering: {}; hub state before: {}\n",
            self.hub_answering, self.baseline
        ));
        match &self.after {
            Some(a) => s.push_str(&format!(
                "  hub state after: {a} (at most {} connections during the run)\n",
                self.max_connections_seen
            )),
            None => s.push_str("  hub state after: unknown (stats failed)\n"),
        }
        match (
            &self.rss_source,
            self.rss_before_bytes,
            self.rss_after_bytes,
            self.rss_growth_bytes,
            self.rss_growth_limit_bytes,
        ) {
            (Some(src), Some(b), Some(a), Some(g), Some(l)) => s.push_str(&format!(
                "  RSS ({src}): before {}, after {}, growth {} (limit {})\n",
                mib(b),
                mib(a),
                signed_mib(g),
                mib(l)
            )),
            (Some(src), ..) => s.push_str(&format!("  RSS ({src}): could not be read\n")),
            (None, ..) => s.push_str(
                "  RSS: not measured (use --spawn, or --pid with the hub's process id)\n",
            ),
        }
        if self.passed {
            s.push_str("PASS\n");
        } else {
            s.push_str("FAIL\n");
            for f in &self.failures {
                s.push_str(&format!("  - {f}\n"));
            }
        }
    }
}

/// Rounds a rate to one decimal.
pub(crate) fn rate(n: u64, seconds: f64) -> f64 {
    ((n as f64 / seconds) * 10.0).round() / 10.0
}

impl Report {
    /// The report as one line of JSON (no trailing newline).
    pub fn to_json_line(&self) -> String {
        // Plain numbers, strings and bools: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The report as a few lines for people.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let target = if self.spawned {
            format!("{} (in-process hub)", self.url)
        } else {
            self.url.clone()
        };
        s.push_str(&format!("memhub bench {} against {target}\n", self.mode));
        match self.mode {
            Mode::Fanout | Mode::PrefixFanout | Mode::RedisFanout => {
                let subs = self.fanout.as_ref().map_or(0, |f| f.subscribers);
                s.push_str(&format!(
                    "  1 publisher, pipeline {}, {subs} subscribers, {}-character values\n",
                    self.pipeline, self.value_size
                ));
            }
            Mode::Connect | Mode::Idle => {
                s.push_str(&format!("  {} clients\n", self.clients));
            }
            Mode::Chaos => {
                let warmup = self.chaos.as_ref().map_or(0.0, |c| c.warmup_seconds);
                s.push_str(&format!(
                    "  {} valid clients, pipeline {}, {}-character pads; {warmup:.1} s of warmup chaos before the measured period\n",
                    self.clients, self.pipeline, self.value_size
                ));
            }
            _ => {
                s.push_str(&format!(
                    "  {} clients, pipeline {}, {} keys, {}-character values\n",
                    self.clients, self.pipeline, self.keyspace, self.value_size
                ));
            }
        }
        let (what, errors) = match self.mode {
            Mode::Fanout | Mode::PrefixFanout | Mode::RedisFanout => ("publishes", "errors"),
            Mode::Connect | Mode::Idle => ("connections", "errors"),
            Mode::Chaos => ("operations", "unexpected errors"),
            _ => ("requests", "errors"),
        };
        s.push_str(&format!(
            "  {} {what} in {:.2} s: {} per second, {} {errors}\n",
            self.ops,
            self.seconds,
            thousands(self.ops_per_sec),
            self.errors
        ));
        let latency = if self.mode == Mode::Chaos {
            "  valid request latency µs  "
        } else {
            "  latency µs  "
        };
        s.push_str(&format!("{latency}{}\n", latency_line(&self.latency_us)));
        if let Some(f) = &self.fanout {
            s.push_str(&format!(
                "  {} deliveries: {} per second; missed: {}\n",
                f.deliveries,
                thousands(f.deliveries_per_sec),
                if f.missed {
                    format!("{} events ({} lagged)", f.missed_events, f.lagged)
                } else {
                    "none".to_string()
                }
            ));
            s.push_str(&format!("  delivery µs {}\n", latency_line(&f.latency_us)));
        }
        if let Some(c) = &self.chaos {
            c.human(&mut s);
        }
        if let Some(i) = &self.idle {
            s.push_str(&format!(
                "  hub RSS: {} before, {} with {} connections open: {:.1} KiB per connection\n",
                mib(i.rss_before_bytes),
                mib(i.rss_after_bytes),
                i.connections,
                i.bytes_per_connection / 1024.0
            ));
        }
        s
    }

    /// Prints the report to stdout: one JSON line, or [`Report::human`].
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.to_json_line());
        } else {
            self.print_human();
        }
    }

    /// Prints [`Report::human`] to stdout.
    pub fn print_human(&self) {
        print!("{}", self.human());
    }
}

fn latency_line(l: &Latency) -> String {
    format!(
        "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (mean {:.1})",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    )
}

/// `1234567.8` → `1,234,568`.
fn thousands(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }

    #[test]
    fn json_is_one_line() {
        let r = Report {
            mode: Mode::PrefixFanout,
            url: "ws://x/ws".into(),
            spawned: false,
            clients: 1,
            pipeline: 1,
            value_size: 100,
            keyspace: 1,
            ops: 10,
            seconds: 1.0,
            ops_per_sec: 10.0,
            errors: 0,
            latency_us: Latency::default(),
            fanout: Some(FanoutReport {
                subscribers: 2,
                deliveries: 20,
                deliveries_per_sec: 20.0,
                latency_us: Latency::default(),
                missed: false,
                missed_events: 0,
                lagged: 0,
            }),
            chaos: None,
            idle: None,
        };
        let line = r.to_json_line();
        assert!(!line.contains('\n'));
        assert!(line.contains("\"mode\":\"prefix-fanout\""));
        assert!(line.contains("\"deliveries_per_sec\":20.0"));
        assert!(r.human().contains("missed: none"));
    }
}
