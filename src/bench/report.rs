//! What a run measured, for people and for machines.

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
            Mode::Fanout | Mode::PrefixFanout => {
                let subs = self.fanout.as_ref().map_or(0, |f| f.subscribers);
                s.push_str(&format!(
                    "  1 publisher, pipeline {}, {subs} subscribers, {}-character values\n",
                    self.pipeline, self.value_size
                ));
            }
            Mode::Connect => {
                s.push_str(&format!("  {} clients\n", self.clients));
            }
            _ => {
                s.push_str(&format!(
                    "  {} clients, pipeline {}, {} keys, {}-character values\n",
                    self.clients, self.pipeline, self.keyspace, self.value_size
                ));
            }
        }
        let what = match self.mode {
            Mode::Fanout | Mode::PrefixFanout => "publishes",
            Mode::Connect => "connections",
            _ => "requests",
        };
        s.push_str(&format!(
            "  {} {what} in {:.2} s: {} per second, {} errors\n",
            self.ops,
            self.seconds,
            thousands(self.ops_per_sec),
            self.errors
        ));
        s.push_str(&format!(
            "  latency µs  {}\n",
            latency_line(&self.latency_us)
        ));
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
        s
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
        };
        let line = r.to_json_line();
        assert!(!line.contains('\n'));
        assert!(line.contains("\"mode\":\"prefix-fanout\""));
        assert!(line.contains("\"deliveries_per_sec\":20.0"));
        assert!(r.human().contains("missed: none"));
    }
}
