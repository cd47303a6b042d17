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

/// A plain HTTP request to `/ws` (a browser tab, `curl`) is told what was
/// missing and what the endpoint is for, not handed an empty error.
#[tokio::test]
async fn a_plain_request_to_the_websocket_endpoint_is_explained() {
    let hub = TestHub::start().await;
    let (status, body) = hub.http_get("/ws").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.starts_with("not a WebSocket upgrade (invalid `Connection` header)")
            && body.contains("connect with a WebSocket client"),
        "{body}"
    );
}

/// The dashboard and the JS client come from the binary: `/` and
/// `/memhub.js` with their types and an ETag that revalidates to 304; paths
/// outside `web/` are 404.
#[tokio::test]
async fn dashboard_assets_are_served_with_etags() {
    let hub = TestHub::start().await;
    let addr = hub.addr.to_string();
    let (status, head, body) = http_request(&addr, "/", &[]).await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(body.contains("memhub"), "{body}");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("an etag")
        .to_string();
    let (status, _, body) = http_request(&addr, "/", &[("If-None-Match", &etag)]).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());

    let (status, head, body) = http_request(&addr, "/memhub.js", &[]).await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/javascript; charset=utf-8"),
        "{head}"
    );
    assert!(body.contains("export"), "an ES module");
    for missing in ["/nope.js", "/../Cargo.toml", "/%2e%2e/Cargo.toml"] {
        assert_eq!(http_request(&addr, missing, &[]).await.0, 404, "{missing}");
    }
}
