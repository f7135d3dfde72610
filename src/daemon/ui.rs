//! The dashboard, `GET /ui`: one page whose assets are compiled into the
//! binary (no CDN: it works offline and behind a firewall). It reads only
//! the read-only aggregates, `/v1/journeys`, `/v1/journeys/NAME/stats` and
//! `/v1/journeys/NAME/graph`, and draws each journey's flow chart from the
//! compiled program with live counts, refreshing every few seconds.
//!
//! `journeyc simulate --report FILE.html` writes the same page, static: the
//! assets inlined and the answers of those three endpoints embedded
//! ([`report`]), so a pull request can carry what a change does.

use crate::compile::bytecode::Bundle;
use crate::runtime::stats::Readout;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

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

/// The `GET /v1/journeys` document: each journey's current version, trigger
/// kind, and the versions that still hold enrollments (from the position
/// gauges `j/NAME/at/VERSION/…` among `counters`).
pub fn journey_list<'a>(
    bundle: &Bundle,
    bundle_key: &str,
    counters: impl IntoIterator<Item = (&'a String, &'a i64)>,
) -> serde_json::Value {
    let mut waiting: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (key, value) in counters {
        let Some(rest) = key.strip_prefix("j/") else { continue };
        let Some((journey, rest)) = rest.split_once("/at/") else {
            continue;
        };
        if let Some((version, _)) = rest.split_once('/') {
            *waiting.entry((journey, version)).or_insert(0) += value;
        }
    }
    let journeys: Vec<serde_json::Value> = bundle
        .journeys
        .iter()
        .map(|program| {
            let name = bundle.name(program.name);
            let versions: Vec<serde_json::Value> = waiting
                .range((name, "")..)
                .take_while(|((journey, _), _)| *journey == name)
                .filter(|(_, n)| **n > 0)
                .map(|((_, version), n)| serde_json::json!({"version": version, "active": n, "current": *version == program.hash}))
                .collect();
            serde_json::json!({
                "name": name,
                "version": program.hash,
                "migrate_on_update": program.migrate_on_update,
                "trigger": format!("{:?}", program.trigger).split([' ', '{', '(']).next().unwrap_or_default().to_lowercase(),
                "versions": versions,
            })
        })
        .collect();
    serde_json::json!({"bundle": bundle_key, "journeys": journeys})
}

/// The flow chart of one journey, as `GET /v1/journeys/NAME/graph` gives it.
pub fn journey_graph(bundle: &Bundle, program: &crate::compile::bytecode::Program) -> serde_json::Value {
    let text = crate::compile::graph::render_graph(bundle, &[program], crate::compile::graph::GraphFormat::Json);
    let mut graph: serde_json::Value = serde_json::from_str(&text).expect("the graph is JSON");
    graph["journeys"][0].take()
}

/// The dashboard as one static HTML file: the page with its style and
/// script inlined, and the journeys list, each readout and each graph
/// embedded as the endpoints would answer them.
pub fn report(bundle: &Bundle, list: serde_json::Value, readouts: &[Readout]) -> String {
    let mut data = serde_json::Map::new();
    data.insert("/v1/journeys".into(), list);
    for (program, readout) in bundle.journeys.iter().zip(readouts) {
        let name = bundle.name(program.name);
        data.insert(
            format!("/v1/journeys/{name}/stats"),
            serde_json::to_value(readout).expect("a readout serializes"),
        );
        data.insert(format!("/v1/journeys/{name}/graph"), journey_graph(bundle, program));
    }
    // `</` would end the script element early.
    let data = serde_json::Value::Object(data).to_string().replace("</", "<\\/");
    INDEX
        .replace(
            r#"<link rel="stylesheet" href="/ui/app.css">"#,
            &format!("<style>\n{STYLE}</style>"),
        )
        .replace(r#"<script src="/ui/app.js" defer></script>"#, "")
        .replace(
            "</body>",
            &format!(
                "<script type=\"application/json\" id=\"data\">{data}</script>\n<script>\n{SCRIPT}</script>\n</body>"
            ),
        )
}
