//! The dashboard and the JavaScript client, embedded in the binary from `web/`.
//!
//! Release builds carry the files inside the executable, so the hub serves
//! them from any working directory; debug builds read `web/` from the source
//! tree, so editing a file shows on the next reload. Only files that exist
//! under `web/` are served; any other path is a 404, never a file elsewhere.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "web/"]
struct Web;

/// `GET /`: the dashboard's page.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /{file}`: a file of the dashboard or the JS client (`/memhub.js`).
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Web::get(path) else {
        return (StatusCode::NOT_FOUND, format!("no such file: /{path}\n")).into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()));
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let common = [
        (header::ETAG, etag),
        // Revalidate every time: a new hub binary may carry new files.
        (header::CACHE_CONTROL, "no-cache".to_string()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let mut response = (common, file.data.into_owned()).into_response();
    if let Ok(v) = HeaderValue::from_str(&content_type(path, file.metadata.mimetype())) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

/// Text types carry `charset=utf-8`; ES modules must be served as JavaScript.
fn content_type(path: &str, guessed: &str) -> String {
    let base = match path.rsplit('.').next() {
        Some("js" | "mjs") => "text/javascript",
        Some("ts") => "text/plain",
        _ => guessed,
    };
    if base.starts_with("text/") || base == "application/json" || base == "image/svg+xml" {
        format!("{base}; charset=utf-8")
    } else {
        base.to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn javascript_and_text_types() {
        assert_eq!(
            content_type("memhub.js", "application/javascript"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("index.html", "text/html"),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type("a.png", "image/png"), "image/png");
    }

    #[test]
    fn the_page_is_embedded() {
        assert!(Web::get("index.html").is_some());
        assert!(Web::get("../Cargo.toml").is_none());
    }
}
