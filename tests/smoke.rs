mod common;
use common::*;
use serde_json::json;

#[tokio::test]
async fn smoke() {
    init_logs();
    let hub = TestHub::start().await;
    eprintln!("started");
    let mut c = hub.client().await;
    let r = c
        .call("memoize", json!({"key": "k", "value": [1, 2]}))
        .await;
    assert_eq!(r, json!({"value": [1, 2], "rev": 1, "created": true}));
    eprintln!("memoized");
    let mut w = hub.client().await;
    let s = w.call("subscribe", json!({"key": "k"})).await;
    assert_eq!(
        s,
        json!({"sub": 1, "exists": true, "value": [1, 2], "rev": 1})
    );
    c.call("update", json!({"key": "k", "value": {"a": 1}}))
        .await;
    let e = w.next_event().await;
    assert_eq!(
        e,
        json!({"sub": 1, "key": "k", "event": "update", "value": {"a": 1}, "rev": 2})
    );
    hub.stop().await.unwrap();
}
