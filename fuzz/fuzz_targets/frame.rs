//! Frame parsing and dispatch: any bytes as one text frame (or a binary
//! frame when not UTF-8) into an in-process hub. The hub must not panic,
//! must answer with JSON, and must keep a sentinel key it wrote first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memhub::server::{InProcessHub, Role};
use memhub::ServerConfig;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let config = ServerConfig {
            max_batch: 32,
            max_value_bytes: 4096,
            max_nesting: 32,
            ..ServerConfig::default()
        };
        let mut hub = InProcessHub::new(config, Role::Write);
        let sentinel = r#"{"jsonrpc":"2.0","id":0,"method":"update","params":{"key":"\u0000sentinel","value":[1,"two"]}}"#;
        assert!(hub.frame(sentinel).await.is_some());
        // A frame may be several requests: the input split at 0xff bytes.
        for part in data.split(|&b| b == 0xff) {
            let reply = match std::str::from_utf8(part) {
                Ok(text) => hub.frame(text).await,
                Err(_) => Some(hub.binary_frame()),
            };
            if let Some(reply) = reply {
                assert!(
                    serde_json_valid(&reply),
                    "the reply is not JSON: {reply}"
                );
            }
        }
        let kept = hub.store().get("\u{0}sentinel");
        assert!(kept.is_some_and(|e| &*e.value == r#"[1,"two"]"# || e.rev > 1));
    });
});

fn serde_json_valid(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}
