//! The dashboard, `GET /ui`: one page whose assets are compiled into the
//! binary (no CDN: it works offline and behind a firewall). It reads only
//! the read-only aggregates, `/v1/journeys`, `/v1/journeys/NAME/stats` and
//! `/v1/journeys/NAME/graph`, and draws each journey's flow chart from the
//! compiled program with live counts, refreshing every few seconds.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// `GET /ui`.
pub async fn page() -> Response {
    asset_response("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/app.js`, `GET /ui/app.css`.
pub async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => asset_response("text/javascript; charset=utf-8", SCRIPT),
        "app.css" => asset_response("text/css; charset=utf-8", STYLE),
        _ => super::reply::error(StatusCode::NOT_FOUND, "path", format!("no asset {name:?}")),
    }
}

fn asset_response(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // The page runs only its own script and talks only to this daemon.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'",
            ),
        ],
        body,
    )
        .into_response()
}
