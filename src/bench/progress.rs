//! The live progress line (stderr, only when asked for).

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Counter, Plan};

const TICK: Duration = Duration::from_millis(250);

/// A running progress line; dropped or finished, it disappears.
pub(crate) struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// A spinner whose message `render` recomputes four times a second;
    /// `None` when progress is off.
    pub fn start<F>(enabled: bool, mut render: F) -> Option<Self>
    where
        F: FnMut() -> String + Send + 'static,
    {
        if !enabled {
            return None;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
            bar.set_style(style);
        }
        bar.set_message(render());
        let b = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                b.set_message(render());
                b.tick();
            }
        });
        Some(Self { bar, ticker })
    }

    /// A bar counting to `len` (used while filling the keyspace).
    pub fn bar(enabled: bool, len: u64, what: &str) -> Option<ProgressBar> {
        if !enabled {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{msg} {pos}/{len} [{elapsed}]") {
            bar.set_style(style);
        }
        bar.set_message(what.to_string());
        Some(bar)
    }

    /// Removes the line.
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// A renderer for request/response modes: ops/s over the last tick, total
/// errors, and the phase.
pub(crate) fn rate_line(
    label: String,
    plan: Arc<Plan>,
    counters: Vec<Arc<Counter>>,
    extra: Option<(String, Vec<Arc<Counter>>)>,
) -> impl FnMut() -> String + Send + 'static {
    let mut last = Instant::now();
    let mut last_ops = 0u64;
    let mut last_extra = 0u64;
    move || {
        let now = Instant::now();
        let dt = now.duration_since(last).as_secs_f64().max(1e-3);
        let ops: u64 = counters.iter().map(|c| c.ops()).sum();
        let errors: u64 = counters.iter().map(|c| c.errors()).sum();
        let rate = (ops - last_ops.min(ops)) as f64 / dt;
        last_ops = ops;
        let mut line = format!("{label}: {rate:>10.0} ops/s  {errors} errors");
        if let Some((name, extra)) = &extra {
            let n: u64 = extra.iter().map(|c| c.ops()).sum();
            let r = (n - last_extra.min(n)) as f64 / dt;
            last_extra = n;
            line.push_str(&format!("  {r:>10.0} {name}/s"));
        }
        last = now;
        if now < plan.warm_end {
            line.push_str("  (warming up)");
        } else {
            let t = now.duration_since(plan.warm_end).as_secs_f64();
            match plan.end {
                Some(end) => {
                    let total = end.duration_since(plan.warm_end).as_secs_f64();
                    line.push_str(&format!("  {t:.1}/{total:.1} s"));
                }
                None => line.push_str(&format!("  {t:.1} s")),
            }
        }
        line
    }
}
