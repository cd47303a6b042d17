//! TLS (https/wss on the hub's one port) with a CA and certificate made in
//! the test, and the handshake deadline for peers that connect and go quiet.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use memhub::server::TlsFiles;
use memhub::{Client, ClientOptions, MemService, ServerConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::AsyncReadExt;

/// A throwaway CA and a `localhost`/127.0.0.1 certificate signed by it,
/// written as PEM files; returns (ca.pem, cert.pem, key.pem).
fn make_certs(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("cert dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("ca cert");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf cert");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write ca");
    std::fs::write(&paths.1, leaf.pem()).expect("write cert");
    std::fs::write(&paths.2, leaf_key.serialize_pem()).expect("write key");
    paths
}

fn temp_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("memhub-{name}-{}", std::process::id()))
}

#[tokio::test]
async fn wss_with_a_private_ca() {
    let dir = temp_dir("tls");
    let (ca, cert, key) = make_certs(&dir);
    let hub = TestHub::with_config(ServerConfig {
        tls: Some(TlsFiles { cert, key }),
        ..ServerConfig::default()
    })
    .await;
    let url = format!("wss://localhost:{}/ws", hub.addr.port());
    let opts = ClientOptions {
        ca_file: Some(ca.clone()),
        max_retry: 0,
        ..Default::default()
    };
    let client = Client::connect_with(&url, opts).await.expect("wss connect");
    client.update("k", &"over tls").await.expect("update");
    assert_eq!(client.get::<String>("k").await.expect("get"), "over tls");
    let mut sub = client.subscribe("k").await.expect("subscribe");
    client.update("k", &"again").await.expect("update");
    let ev = sub.next_event().await.expect("event");
    assert_eq!(ev.value, Some(serde_json::json!("again")));

    // Without trusting the CA the handshake fails with a clear error.
    let untrusted = ClientOptions {
        max_retry: 0,
        ..Default::default()
    };
    let err = Client::connect_with(&url, untrusted)
        .await
        .expect_err("untrusted CA");
    assert!(matches!(err, memhub::Error::Connection(_)), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // A plain ws:// client cannot talk to the TLS port.
    let plain = Client::connect_with(
        &format!("ws://127.0.0.1:{}/ws", hub.addr.port()),
        ClientOptions {
            max_retry: 0,
            request_timeout: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .await;
    assert!(plain.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_tls_files_fail_at_bind_with_a_clear_message() {
    let dir = temp_dir("badtls");
    std::fs::create_dir_all(&dir).expect("dir");
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, "not a certificate").expect("write");
    let err = MemService::new("127.0.0.1", 0)
        .with_config(ServerConfig {
            tls: Some(TlsFiles {
                cert: cert.clone(),
                key: dir.join("missing.pem"),
            }),
            ..ServerConfig::default()
        })
        .bind()
        .await
        .err()
        .expect("bind must fail");
    assert!(err.to_string().contains("cert.pem"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_peer_that_never_sends_its_handshake_is_dropped() {
    let hub = TestHub::with_config(ServerConfig {
        handshake_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(hub.addr).await.expect("tcp");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    // The hub closes the socket: the read ends (EOF or reset) on its own.
    let n = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("the hub must drop a silent peer");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    // Normal clients are unaffected.
    let mut c = hub.client().await;
    c.call("version", serde_json::json!({})).await;
}
