//! `memhub bench` modes against an in-process hub: each runs ~0.3 s and must
//! complete with operations and without errors or missed events.

use std::time::Duration;

use memhub::bench::{run, BenchConfig, Mode, Report};

fn small(mode: Mode) -> BenchConfig {
    BenchConfig {
        mode,
        clients: 4,
        pipeline: 4,
        duration: Some(Duration::from_millis(300)),
        warmup: Duration::from_millis(50),
        keyspace: 100,
        value_size: 32,
        subscribers: 8,
        spawn: true,
        ..BenchConfig::default()
    }
}

async fn check(cfg: BenchConfig) -> Report {
    let report = match run(&cfg).await {
        Ok(r) => r,
        Err(e) => panic!("{} failed: {e:#}", cfg.mode),
    };
    let line = report.to_json_line();
    println!("{line}");
    assert!(report.ops > 0, "{line}");
    assert_eq!(report.errors, 0, "{line}");
    assert!(report.seconds > 0.0 && report.ops_per_sec > 0.0, "{line}");
    // Nothing on a socket answers within a microsecond.
    assert!(report.latency_us.p50 >= 1.0, "{line}");
    assert!(report.latency_us.mean >= 1.0, "{line}");
    assert!(report.latency_us.max >= report.latency_us.p99, "{line}");
    let parsed: serde_json::Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => panic!("not JSON: {e}: {line}"),
    };
    assert_eq!(parsed["mode"], cfg.mode.to_string());
    assert!(!report.human().is_empty());
    report
}

async fn check_fanout(cfg: BenchConfig) {
    let report = check(cfg).await;
    let line = report.to_json_line();
    let Some(f) = &report.fanout else {
        panic!("no fan-out figures: {line}")
    };
    assert!(!f.missed, "{line}");
    assert_eq!(f.missed_events, 0, "{line}");
    assert!(f.deliveries > 0 && f.deliveries_per_sec > 0.0, "{line}");
    assert!(f.latency_us.p50 >= 1.0, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get() {
    check(small(Mode::Get)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update() {
    check(small(Mode::Update)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed() {
    check(small(Mode::Mixed)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memoize() {
    check(small(Mode::Memoize)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr() {
    check(small(Mode::Incr)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect() {
    check(small(Mode::Connect)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys() {
    check(small(Mode::Keys)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle() {
    let report = check(BenchConfig {
        clients: 50,
        ..small(Mode::Idle)
    })
    .await;
    let Some(i) = report.idle else {
        panic!("no idle figures")
    };
    assert_eq!(i.connections, 50);
    assert!(i.rss_before_bytes > 0 && i.rss_after_bytes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fanout_needs_a_redis_url() {
    let cfg = small(Mode::RedisFanout);
    assert!(run(&cfg).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout() {
    check_fanout(small(Mode::Fanout)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_fanout() {
    check_fanout(small(Mode::PrefixFanout)).await;
}

/// A request budget ends the run by itself, exactly on the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_budget() {
    let cfg = BenchConfig {
        duration: None,
        requests: Some(500),
        ..small(Mode::Update)
    };
    let report = check(cfg).await;
    assert_eq!(report.ops, 500, "{}", report.to_json_line());
}

/// A JSON-RPC error response counts as an error and the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted() {
    // A hub whose value limit (10 bytes) refuses every 32-character write.
    let server = memhub::MemService::new("127.0.0.1", 0)
        .with_config(memhub::ServerConfig {
            max_value_bytes: 10,
            ..memhub::ServerConfig::default()
        })
        .bind()
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let url = format!("ws://{}/ws", server.local_addr());
    let stop = server.shutdown_handle();
    let hub = tokio::spawn(server.run());
    let cfg = BenchConfig {
        url,
        spawn: false,
        ..small(Mode::Update)
    };
    let report = match run(&cfg).await {
        Ok(r) => r,
        Err(e) => panic!("{e:#}"),
    };
    assert!(report.errors > 0, "{}", report.to_json_line());
    assert_eq!(report.ops, 0, "{}", report.to_json_line());
    stop.shutdown();
    let _ = hub.await;
}

/// An unreachable hub is an error, not a report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_hub_fails() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(1);
    drop(listener);
    for mode in [Mode::Get, Mode::Fanout, Mode::Connect] {
        let cfg = BenchConfig {
            url: format!("ws://127.0.0.1:{port}/ws"),
            spawn: false,
            ..small(mode)
        };
        assert!(run(&cfg).await.is_err(), "{mode}");
    }
}

/// For the record: `get` with 50 clients, 1 and 16 in flight, 5 s each.
/// `cargo test --release --test bench -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn measure_get() {
    for pipeline in [1, 16] {
        let cfg = BenchConfig {
            mode: Mode::Get,
            clients: 50,
            pipeline,
            duration: Some(Duration::from_secs(5)),
            spawn: true,
            ..BenchConfig::default()
        };
        let report = check(cfg).await;
        report.print_human();
    }
}
