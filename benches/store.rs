//! Micro-benchmarks of the keyspace and of event encoding: the work every
//! request and every notification does before it touches a socket.
//!
//! Run with `just bench` (= `cargo bench --bench store`); add `-- --quick` for
//! a rough pass, or a filter such as `-- store/get`. Measurement windows are
//! short so the whole suite finishes in about a minute on 2 cores.
//! `cargo test --all-targets` runs each bench once, as a smoke test.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use memhub::protocol::EventKind;
use memhub::pubsub::{Event, EventSink, PubSub, Subscription, Target};
use memhub::Store;

/// A compact JSON value of exactly 100 bytes (a string literal).
fn value_100() -> Arc<str> {
    let v: Arc<str> = format!("\"{}\"", "x".repeat(98)).into();
    assert_eq!(v.len(), 100);
    v
}

/// A store holding `n` keys `key:00000000`.. with a small value each.
fn store_with(n: usize) -> Store {
    let store = Store::new();
    let v: Arc<str> = "0".into();
    for i in 0..n {
        store.memoize(&format!("key:{i:08}"), v.clone(), None);
    }
    store
}

fn store_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));

    let store = store_with(10_000);
    let v100 = value_100();
    store
        .update("hot", v100.clone(), None, None)
        .expect("no if_rev");

    g.bench_function("get_hit", |b| {
        b.iter(|| black_box(store.get(black_box("hot"))))
    });

    // Like the hub under `memhub bench --mode get`: keys spread over the
    // keyspace, so the lookup's memory traffic shows, not one hot key's.
    let spread: Vec<String> = (0..1024u64)
        .map(|i| format!("key:{:08}", i.wrapping_mul(7919) % 10_000))
        .collect();
    let mut next = 0usize;
    g.bench_function("get_spread_of_10k", |b| {
        b.iter(|| {
            next = (next + 1) % spread.len();
            black_box(store.get(black_box(&spread[next])))
        })
    });

    g.bench_function("update_existing_100B", |b| {
        b.iter(|| black_box(store.update(black_box("hot"), v100.clone(), None, None)))
    });

    g.bench_function("memoize_existing", |b| {
        b.iter(|| black_box(store.memoize(black_box("hot"), v100.clone(), None)))
    });

    // Every iteration creates a key: keys are made before the clock starts,
    // and each sample gets a fresh store so it does not grow without bound.
    g.bench_function("memoize_new", |b| {
        b.iter_custom(|iters| {
            let fresh = Store::new();
            let keys: Vec<String> = (0..iters).map(|i| format!("new:{i:010}")).collect();
            let start = Instant::now();
            for k in &keys {
                black_box(fresh.memoize(k, v100.clone(), None));
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn keys_pages(c: &mut Criterion) {
    let mut g = c.benchmark_group("keys");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));

    let store = store_with(100_000);
    g.bench_function("first_page_100_of_100k", |b| {
        b.iter(|| {
            let page = store.keys(black_box(""), None, 100);
            debug_assert_eq!(page.keys.len(), 100);
            black_box(page)
        })
    });
    g.bench_function("middle_page_100_of_100k", |b| {
        b.iter(|| black_box(store.keys(black_box("key:"), Some("key:00050000"), 100)))
    });
    drop(store);

    // The size of the keyspace target in docs/performance.md.
    let store = store_with(1_000_000);
    g.bench_function("middle_page_100_of_1m", |b| {
        b.iter(|| black_box(store.keys(black_box("key:"), Some("key:00500000"), 100)))
    });
    g.finish();
}

/// An event sink that only counts what it is handed.
#[derive(Default)]
struct CountingSink(AtomicU64);

impl EventSink for CountingSink {
    fn deliver(&self, _sub: &Arc<Subscription>, event: &Arc<Event>) {
        black_box(event);
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn events(c: &mut Criterion) {
    let mut g = c.benchmark_group("event");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));

    let v100 = value_100();
    g.bench_function("change_and_frame_100B", |b| {
        b.iter(|| {
            let ev = Event::change(black_box("counter"), EventKind::Update, Some(&v100), 42);
            black_box(ev.frame(black_box(7)))
        })
    });

    let pubsub = PubSub::new();
    let sink = Arc::new(CountingSink::default());
    for id in 0..100 {
        pubsub.watch(Subscription::new(
            id,
            Target::Key("counter".into()),
            sink.clone(),
        ));
    }
    let mut rev = 0;
    g.bench_function("publish_to_100_key_subs", |b| {
        b.iter(|| {
            rev += 1;
            pubsub.publish(black_box("counter"), EventKind::Update, Some(&v100), rev);
        })
    });
    assert_eq!(sink.0.load(Ordering::Relaxed), rev * 100);
    g.finish();
}

criterion_group!(benches, store_ops, keys_pages, events);
criterion_main!(benches);
