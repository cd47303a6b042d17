mod common;
use common::*;
use memhub::client::{ClientOptions, EventKind};
use std::time::Duration;

#[tokio::test]
async fn client_smoke_and_reconnect() {
    let hub = TestHub::start().await;
    let addr = hub.addr;
    let client = memhub::Client::connect_with(
        &hub.url(),
        ClientOptions {
            retry_delay: Duration::from_millis(100),
            max_retry: 20,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let v: Vec<i32> = client.memoize("k", &vec![1, 2]).await.unwrap();
    assert_eq!(v, vec![1, 2]);
    let mut sub = client.subscribe("k").await.unwrap();
    assert_eq!(sub.initial().unwrap().rev, Some(1));
    client.update("k", &vec![3]).await.unwrap();
    let ev = sub.next_event().await.unwrap();
    assert_eq!(ev.kind, EventKind::Update);
    assert_eq!(ev.value, Some(serde_json::json!([3])));
    // restart the hub on the same port
    hub.stop().await.unwrap();
    let server = memhub::MemService::new("127.0.0.1", addr.port())
        .bind()
        .await
        .unwrap();
    let store = server.store();
    store
        .update("k", std::sync::Arc::from("[9]"), None, None)
        .unwrap();
    let _h = server.shutdown_handle();
    tokio::spawn(server.run());
    let ev = tokio::time::timeout(WAIT, sub.next_event())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.value, Some(serde_json::json!([9])), "{ev:?}");
    let got: Vec<i32> = client.get("k").await.unwrap();
    assert_eq!(got, vec![9]);
}

#[tokio::test]
async fn a_stored_null_is_a_value_not_an_absence() {
    let hub = TestHub::start().await;
    let client = memhub::Client::connect(&hub.url()).await.unwrap();
    client.update("n", &serde_json::Value::Null).await.unwrap();
    let mut sub = client.subscribe("n").await.unwrap();
    let snap = sub.initial().unwrap();
    assert!(snap.exists);
    assert_eq!(snap.value, Some(serde_json::Value::Null));
    client.update("n", &serde_json::Value::Null).await.unwrap();
    let ev = sub.next_event().await.unwrap();
    assert_eq!(ev.kind, EventKind::Update);
    assert_eq!(ev.value, Some(serde_json::Value::Null));
    let got: Option<Option<i32>> = client.try_get("n").await.unwrap();
    assert_eq!(got, Some(None));
}

#[tokio::test]
async fn values_nested_deeper_than_128_levels_arrive() {
    let hub = TestHub::with_config(memhub::ServerConfig {
        max_nesting: 1024,
        ..Default::default()
    })
    .await;
    let client = memhub::Client::connect(&hub.url()).await.unwrap();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let deep: serde_json::Value = {
        let mut de = serde_json::Deserializer::from_str(&deep);
        de.disable_recursion_limit();
        serde::Deserialize::deserialize(&mut de).unwrap()
    };
    let mut sub = client.subscribe("deep").await.unwrap();
    client.update("deep", &deep).await.unwrap();
    let got: serde_json::Value = client.get("deep").await.unwrap();
    assert_eq!(got, deep);
    let ev = sub.next_event().await.unwrap();
    assert_eq!(ev.value.as_ref(), Some(&deep));
}
