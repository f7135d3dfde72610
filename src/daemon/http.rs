//! The HTTP API (axum): Segment-compatible intake and the operator endpoints.
//! See `docs/daemon.md` for the contract.

use super::command::Answer;
use super::commit::{current, CommitError, Committer, Runtime, SharedRuntime};
use super::metrics::{Gauges, Metrics};
use super::rejected::{RejectedStore, Rejection};
use super::reload::Reloader;
pub use super::reply::{error, error_with};
use super::server::HttpOptions;
use super::store::{self, Store};
use super::timers::now_ms;
use crate::compile::bytecode::{Bundle, Program, Trigger, Value};
use crate::runtime::input::{parse_received_call, Call};
use crate::runtime::stats::Readout;
use crate::runtime::trace::format_time;
use crate::runtime::CustomerState;
use crate::syntax::ast::Channel;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The largest request body accepted.
pub const BODY_BYTES_MAX: usize = 512 * 1024;
/// The most events in one `/v1/batch` request.
pub const BATCH_EVENTS_MAX: usize = 1000;
/// Rows per `POST /v1/import` (larger files: several requests, or
/// `journeyc import-customers` offline).
pub const IMPORT_ROWS_MAX: usize = 10_000;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub committer: Committer,
    pub runtime: SharedRuntime,
    pub stats: Arc<Mutex<HashMap<String, i64>>>,
    pub metrics: Arc<Metrics>,
    pub token: Option<Arc<str>>,
    pub sink_names: Arc<Vec<String>>,
    pub reloader: Arc<Reloader>,
    pub http: Arc<HttpOptions>,
    pub rejected: Arc<RejectedStore>,
    /// Bumped after dead letters are requeued, to wake the sink loops.
    pub dead_retry: Arc<tokio::sync::watch::Sender<u64>>,
    /// One-click unsubscribe links (`/u/TOKEN`).
    pub links: Arc<super::unsubscribe::Links>,
    /// Notified when a broadcast is started, to wake its driver.
    pub broadcast_started: Arc<tokio::sync::Notify>,
    /// Notified by every acknowledged erasure: it starts the clock of the
    /// online compaction (`--erasure-within`, `erasure::due`).
    pub erasures: Arc<tokio::sync::Notify>,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/track", post(track))
        .route("/v1/identify", post(identify))
        .route("/v1/page", post(page))
        .route("/v1/screen", post(screen))
        .route("/v1/group", post(group))
        .route("/v1/alias", post(alias))
        .route("/v1/batch", post(batch))
        .route("/v1/import", post(import))
        .route("/v1/rejected", get(list_rejected))
        .route("/v1/rejected/replay", post(replay_rejected))
        .route("/v1/customers/{id}", get(get_customer).delete(delete_customer))
        .route("/v1/customers/{id}/retry", post(retry_customer))
        .route("/v1/journeys/{name}/trigger", post(trigger_journey))
        .route("/v1/broadcasts", get(super::broadcast::list_broadcasts))
        .route("/v1/broadcasts/{id}", get(super::broadcast::get_broadcast))
        .route("/v1/reload", post(reload))
        .route("/v1/outbox/dead", get(list_dead_letters))
        .route("/v1/outbox/retry", post(retry_dead_letters))
        .route("/v1/redactors", get(super::redactors::owner_list))
        .route(
            "/v1/redactors/{id}",
            axum::routing::delete(super::redactors::owner_retire),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    // Read-only aggregates with no customer data: open unless `--protect-ui`.
    let aggregates = Router::new()
        .route("/ui", get(super::ui::page))
        .route("/ui/{asset}", get(super::ui::asset))
        .route("/v1/journeys", get(journeys))
        .route("/v1/journeys/{name}/stats", get(journey_stats))
        .route("/v1/journeys/{name}/graph", get(journey_graph))
        .route("/metrics", get(metrics));
    let aggregates = match state.http.protect_ui {
        true => aggregates.route_layer(middleware::from_fn_with_state(state.clone(), authenticate)),
        false => aggregates,
    };
    Router::new()
        .route("/healthz", get(healthz))
        .merge(super::unsubscribe::routes())
        .merge(api)
        .merge(aggregates)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "path", "no such endpoint") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(limit_uri))
        .with_state(state)
}

/// The JSON 405 of a method a path does not take.
async fn method_not_allowed(request: Request) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method",
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}

/// The longest request target (path and query) accepted. Longer ones get a
/// JSON 414; hyper itself answers targets over 64 KiB with an empty 414.
pub const URI_BYTES_MAX: usize = 8 * 1024;

async fn limit_uri(request: Request, next: Next) -> Response {
    let length = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if length > URI_BYTES_MAX {
        return error(
            StatusCode::URI_TOO_LONG,
            "path",
            format!("request target of {length} bytes; at most {URI_BYTES_MAX}"),
        );
    }
    next.run(request).await
}

/// One path parameter, decoded; when it does not decode (e.g.
/// `/v1/customers/%FF`, not UTF-8) the request gets a JSON 400 naming it.
pub struct PathParam(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParam {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Response> {
        let field = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .and_then(|path| path.as_str().split('{').nth(1))
            .and_then(|rest| rest.split('}').next())
            .unwrap_or("path")
            .to_string();
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParam(value)),
            Err(rejection) => Err(error(StatusCode::BAD_REQUEST, &field, rejection.body_text())),
        }
    }
}

fn commit_answer(failure: CommitError) -> Answer {
    let status = match failure {
        CommitError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Answer::error(status, "", &failure.to_string())
}

/// Compares without an early exit, so timing does not leak the token.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// `Authorization: Bearer TOKEN`, or Segment-style Basic auth with the token
/// as user name (and any password, usually empty).
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if let Some(bearer) = value.strip_prefix("Bearer ") {
        return same_secret(bearer.trim().as_bytes(), token.as_bytes());
    }
    if let Some(basic) = value.strip_prefix("Basic ") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
            return false;
        };
        let user = decoded.split(|b| *b == b':').next().unwrap_or_default();
        return same_secret(user, token.as_bytes());
    }
    false
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        if !authorized(request.headers(), token) {
            state.metrics.requests_rejected.inc();
            return unauthorized();
        }
    }
    next.run(request).await
}

/// The 401 of a missing or wrong token.
fn unauthorized() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "authorization",
        "missing or wrong token: send `Authorization: Bearer TOKEN` (or Basic auth with the token as user name)",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    // Basic too, so that a browser asks for the token (as the user
    // name) on the dashboard behind `--protect-ui`.
    response.headers_mut().append(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"journeyc\""),
    );
    response
}

#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
    Batch,
    /// `POST /v1/import`: customers as CSV or JSONL rows.
    Import,
    /// `POST /v1/journeys/NAME/trigger`: customers entering by API.
    Trigger,
}

macro_rules! single_call_endpoints {
    ($($handler:ident => $endpoint:ident,)*) => {$(
        async fn $handler(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
            intake(state, Endpoint::$endpoint, headers, body).await
        }
    )*};
}

single_call_endpoints! {
    track => Track,
    identify => Identify,
    page => Page,
    screen => Screen,
    group => Group,
    alias => Alias,
}

async fn batch(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    intake(state, Endpoint::Batch, headers, body).await
}

async fn import(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    intake(state, Endpoint::Import, headers, body).await
}

/// `POST /v1/journeys/NAME/trigger`: `{"userId": …, "properties": {…}}` or
/// `{"customers": [{…}, …]}` enter a journey with `trigger api`, each
/// customer a trigger call validated on its own (answered like a batch).
async fn trigger_journey(
    State(state): State<AppState>,
    PathParam(name): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Response {
    trigger_on(Node::Owner(&state), name, headers, body).await
}

/// `POST /v1/journeys/NAME/trigger` on either node (a segment's broadcast
/// started by the owner, handed to it by a standby).
async fn trigger_on(node: Node<'_>, name: String, headers: HeaderMap, body: Body) -> Response {
    let runtime = node.runtime();
    let Some(program) = runtime.bundle.journey(&name) else {
        return error(StatusCode::NOT_FOUND, "journey", format!("no journey {name:?}"));
    };
    if program.trigger != Trigger::Api {
        return error(
            StatusCode::CONFLICT,
            "journey",
            format!(
                "`{name}` is entered by `trigger {}`, not by API; only a journey with `trigger api` is",
                crate::compile::disasm::trigger(&runtime.bundle, &program.trigger)
            ),
        );
    }
    drop(runtime);
    intake_on(
        node,
        Endpoint::Trigger,
        headers,
        body,
        move |bytes, bundle, received_at, future_max_ms| {
            validate_trigger(&name, bytes, bundle, received_at, future_max_ms)
        },
    )
    .await
}

/// After an over-limit body is refused, at most this much more of it is read
/// and discarded ("lingering close"), so that a client that writes its
/// whole body before reading the answer sees the 413 instead of a reset.
pub const DRAIN_BYTES_MAX: usize = 16 * 1024 * 1024;
/// ... and for at most this long.
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a request body: at most [`BODY_BYTES_MAX`] bytes as sent, within
/// the body timeout; `Content-Encoding: gzip` is decompressed, again to at
/// most [`BODY_BYTES_MAX`] bytes (so a gzip bomb gets a 413).
async fn read_body(headers: &HeaderMap, body: Body, options: &HttpOptions) -> Result<Vec<u8>, Refusal> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let gzip = match encoding.as_deref() {
        None | Some("" | "identity") => false,
        Some("gzip" | "x-gzip") => true,
        Some(other) => {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-encoding",
                format!("`{other}` is not supported; send the body as is or with gzip"),
                1,
            ))
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            format!("request body over the limit of {BODY_BYTES_MAX} bytes"),
            1,
        )
    };
    let mut body = body;
    let mut bytes = Vec::new();
    if declared.is_some_and(|n| n > BODY_BYTES_MAX as u64) {
        drain(&mut body).await;
        return Err(too_large());
    }
    let read = async {
        while let Some(frame) = next_frame(&mut body).await {
            let Ok(frame) = frame else {
                return Err(refuse(StatusCode::BAD_REQUEST, "body", "the body could not be read", 1));
            };
            if bytes.len() + frame.len() > BODY_BYTES_MAX {
                drain(&mut body).await;
                return Err(too_large());
            }
            bytes.extend_from_slice(&frame);
        }
        Ok(())
    };
    match tokio::time::timeout(options.body_timeout, read).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(refuse(
                StatusCode::REQUEST_TIMEOUT,
                "body",
                format!("the body did not arrive within {:?}", options.body_timeout),
                1,
            ))
        }
    }
    if gzip {
        bytes = gunzip(&bytes, BODY_BYTES_MAX)?;
    }
    Ok(bytes)
}

/// The next data frame of a body (trailers are skipped).
async fn next_frame(body: &mut Body) -> Option<Result<axum::body::Bytes, axum::Error>> {
    use axum::body::HttpBody;
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(error) => return Some(Err(error)),
        }
    }
}

/// Reads and discards the rest of a body, within [`DRAIN_BYTES_MAX`] and
/// [`DRAIN_TIME`].
async fn drain(body: &mut Body) {
    let discard = async {
        let mut drained = 0usize;
        while let Some(Ok(frame)) = next_frame(body).await {
            drained += frame.len();
            if drained > DRAIN_BYTES_MAX {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// Decompresses a gzip body (several members allowed) to at most `limit` bytes.
pub fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, Refusal> {
    use std::io::Read;
    let mut out = Vec::new();
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    match decoder.take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > limit => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            format!("decompressed body over the limit of {limit} bytes"),
            1,
        )),
        Ok(_) => Ok(out),
        Err(error) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "content-encoding",
            format!("the body is not valid gzip: {error}"),
            1,
        )),
    }
}

/// Why a request body was refused.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub status: StatusCode,
    pub field: String,
    pub reason: String,
    /// How many events the request held (for the rejected counter).
    pub events: usize,
}

fn refuse(status: StatusCode, field: impl Into<String>, reason: impl Into<String>, events: usize) -> Refusal {
    Refusal {
        status,
        field: field.into(),
        reason: reason.into(),
        events,
    }
}

/// A call of a request that was refused on its own.
#[derive(Debug)]
pub struct Refused {
    /// Its position in the request (0 for the single-call endpoints).
    pub index: usize,
    /// The field at fault, relative to the call.
    pub field: String,
    pub reason: String,
    /// The call as sent.
    pub call: serde_json::Value,
}

/// A request body read call by call: the valid calls, and the refused ones.
#[derive(Debug, Default)]
pub struct Validated {
    pub calls: Vec<Call>,
    pub refused: Vec<Refused>,
    /// A trigger request naming a segment: a broadcast to start instead,
    /// with the request as validated (what a standby hands over).
    pub broadcast: Option<(crate::runtime::broadcast::Broadcast, serde_json::Value)>,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Track => "track",
            Endpoint::Identify => "identify",
            Endpoint::Page => "page",
            Endpoint::Screen => "screen",
            Endpoint::Group => "group",
            Endpoint::Alias => "alias",
            Endpoint::Batch => "batch",
            Endpoint::Import => "import",
            Endpoint::Trigger => "trigger",
        }
    }
}

/// Validates a request body against the schema, each call on its own; a
/// body that is not a request at all (not JSON, no `batch` array, too many
/// calls) is refused whole.
fn validate(
    endpoint: Endpoint,
    bytes: &[u8],
    bundle: &Bundle,
    received_at: i64,
    future_max_ms: i64,
) -> Result<Validated, Refusal> {
    if endpoint == Endpoint::Import {
        return validate_import(bytes, bundle, received_at, future_max_ms);
    }
    let json: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, "", format!("invalid JSON: {e}"), 1))?;
    let items: Vec<serde_json::Value> = match (endpoint, json) {
        (Endpoint::Batch, serde_json::Value::Object(mut object)) => match object.remove("batch") {
            Some(serde_json::Value::Array(items)) => {
                if items.len() > BATCH_EVENTS_MAX {
                    return Err(refuse(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "batch",
                        format!("{} events; at most {BATCH_EVENTS_MAX} per batch", items.len()),
                        items.len(),
                    ));
                }
                items
            }
            Some(_) => return Err(refuse(StatusCode::BAD_REQUEST, "batch", "must be an array", 1)),
            None => return Err(refuse(StatusCode::BAD_REQUEST, "batch", "missing", 1)),
        },
        (Endpoint::Batch, _) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "",
                "expected a JSON object {\"batch\": [...]}",
                1,
            ));
        }
        (_, json) => vec![json],
    };
    let implied = (endpoint != Endpoint::Batch).then(|| endpoint.name());
    Ok(validate_items(items, implied, bundle, received_at, future_max_ms))
}

/// Validates calls one by one; `implied` is the call type of a single-call
/// endpoint (given to a call without one, and refused on any other).
fn validate_items(
    items: Vec<serde_json::Value>,
    implied: Option<&str>,
    bundle: &Bundle,
    received_at: i64,
    future_max_ms: i64,
) -> Validated {
    let mut validated = Validated::default();
    for (index, mut item) in items.into_iter().enumerate() {
        if let (Some(implied), Some(object)) = (implied, item.as_object_mut()) {
            match object.get("type").and_then(|t| t.as_str()) {
                None => {
                    object.insert("type".into(), json!(implied));
                }
                Some(given) if given != implied => {
                    let reason = format!("`{given}` sent to the {implied} endpoint");
                    validated.refused.push(Refused {
                        index,
                        field: "type".into(),
                        reason,
                        call: item,
                    });
                    continue;
                }
                Some(_) => {}
            }
        }
        match parse_received_call(&item, &bundle.schema, received_at, future_max_ms) {
            Ok(call) => validated.calls.push(call),
            Err(e) => validated.refused.push(Refused {
                index,
                field: e.field,
                reason: e.reason,
                call: item,
            }),
        }
    }
    validated
}

/// The body of `POST /v1/journeys/NAME/trigger` as trigger calls: one
/// customer (`userId` or `anonymousId`, `properties`, optional `timestamp`
/// and `messageId`) or `{"customers": [...]}`; the journey is the path's.
fn validate_trigger(
    journey: &str,
    bytes: &[u8],
    bundle: &Bundle,
    received_at: i64,
    future_max_ms: i64,
) -> Result<Validated, Refusal> {
    let json: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, "", format!("invalid JSON: {e}"), 1))?;
    let serde_json::Value::Object(mut object) = json else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "",
            "expected a JSON object {\"userId\": …, \"properties\": {…}} or {\"customers\": [...]}",
            1,
        ));
    };
    if object.contains_key("segment") {
        object.insert("journey".into(), json!(journey));
        let json = serde_json::Value::Object(object);
        let broadcast = crate::runtime::broadcast::parse(&json, bundle, Some(received_at))
            .map_err(|e| refuse(StatusCode::UNPROCESSABLE_ENTITY, e.field, e.reason, 1))?;
        return Ok(Validated {
            broadcast: Some((broadcast, json)),
            ..Validated::default()
        });
    }
    let mut items = match object.remove("customers") {
        Some(serde_json::Value::Array(items)) if items.len() > BATCH_EVENTS_MAX => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "customers",
                format!("{} customers; at most {BATCH_EVENTS_MAX} per request", items.len()),
                items.len(),
            ))
        }
        Some(serde_json::Value::Array(items)) => items,
        Some(_) => return Err(refuse(StatusCode::BAD_REQUEST, "customers", "must be an array", 1)),
        None => vec![serde_json::Value::Object(object)],
    };
    for item in &mut items {
        if let Some(call) = item.as_object_mut() {
            call.insert("journey".into(), json!(journey));
        }
    }
    Ok(validate_items(
        items,
        Some("trigger"),
        bundle,
        received_at,
        future_max_ms,
    ))
}

/// Rows of customers (CSV with a header, or JSONL: `runtime::import`),
/// each an identify call validated on its own; a refused row's `index` is
/// its 1-based row number.
fn validate_import(bytes: &[u8], bundle: &Bundle, received_at: i64, future_max_ms: i64) -> Result<Validated, Refusal> {
    use crate::runtime::import::{rows, Format};
    let rows = rows(Format::sniff(bytes), bytes, &bundle.schema)
        .map_err(|e| refuse(StatusCode::UNPROCESSABLE_ENTITY, &e.field, e.reason, 1))?;
    if rows.len() > IMPORT_ROWS_MAX {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            format!("{} rows; at most {IMPORT_ROWS_MAX} per request", rows.len()),
            rows.len(),
        ));
    }
    let mut validated = Validated::default();
    for row in rows {
        let refused = match row.call {
            Ok(call) => match parse_received_call(&call, &bundle.schema, received_at, future_max_ms) {
                Ok(call) => {
                    validated.calls.push(call);
                    continue;
                }
                Err(e) => (e.field, e.reason, call),
            },
            Err(e) => (e.field, e.reason, json!({ "row": e.text })),
        };
        let (field, reason, call) = refused;
        validated.refused.push(Refused {
            index: row.number,
            field,
            reason,
            call,
        });
    }
    Ok(validated)
}

/// The node an intake request came to: the owner commits the valid calls
/// through its commit thread; a standby writes them to the inbox (a record
/// per partition), in the same unfenced transaction as the request's
/// refusals (`inbox.rs`).
/// Everything else (reading, validating, the answers) is one code for both.
#[derive(Clone, Copy)]
enum Node<'a> {
    Owner(&'a AppState),
    Standby(&'a Standby),
}

impl Node<'_> {
    fn metrics(&self) -> &Metrics {
        match self {
            Node::Owner(state) => &state.metrics,
            Node::Standby(standby) => &standby.metrics,
        }
    }

    fn http(&self) -> &HttpOptions {
        match self {
            Node::Owner(state) => &state.http,
            Node::Standby(standby) => &standby.http,
        }
    }

    fn runtime(&self) -> Arc<Runtime> {
        match self {
            Node::Owner(state) => current(&state.runtime),
            Node::Standby(standby) => current(&standby.runtime),
        }
    }

    /// Keeps `rejections` and takes `calls`, durable when it answers:
    /// on the owner the refusals flushed (or with the commit of the calls);
    /// on a standby both in one transaction.
    async fn take(&self, rejections: Vec<Rejection>, calls: Vec<Call>) -> Result<(), Answer> {
        let store_failed = |failure: super::store::StoreError| {
            Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "", &failure.to_string())
        };
        let refused = rejections.len();
        match self {
            Node::Owner(state) => {
                // With `--spread`, calls of partitions this node does not
                // hold (their ids resolved through the aliases) go to the
                // inbox as a standby's do: the partitions' holders apply
                // them ([`elsewhere`]). The others go to the commit
                // thread, which on PostgreSQL writes them to the inbox
                // instead when the inbox of their partitions holds records
                // (earlier calls of their customers may wait there; the
                // look is in the group's own transaction, `commit.rs`).
                if let Some(partitions) = elsewhere(&state.store, &calls).map_err(store_failed)? {
                    to_inbox(&state.store, &state.rejected, rejections, calls, Some(partitions))
                        .map_err(store_failed)?;
                    self.metrics().events_rejected.add(refused as u64);
                    return Ok(());
                }
                if !rejections.is_empty() {
                    state.rejected.put(rejections).map_err(store_failed)?;
                    if calls.is_empty() {
                        state.store.db.flush_async().await.map_err(store_failed)?;
                    }
                }
                self.metrics().events_rejected.add(refused as u64);
                if calls.is_empty() {
                    return Ok(());
                }
                // With `--spread`, kept for a refusal of a partition given
                // up (or taken over) after the routing above.
                let spread = matches!(&state.store.db, super::kv::Kv::Postgres(pg) if pg.spread());
                let kept = spread.then(|| calls.clone());
                match (state.committer.ingest(calls).await, kept) {
                    (Ok(()), _) => {}
                    (Err(CommitError::PartitionNotOwned(reason)), Some(calls)) => {
                        // Nothing of the job was written (the fence refuses
                        // inside its transaction): its calls go to the
                        // inbox of the partitions' holders now, acked as a
                        // standby's, unless this node still holds them all
                        // (a merge's other partition refused: answered).
                        let Some(partitions) = elsewhere(&state.store, &calls).map_err(store_failed)? else {
                            return Err(commit_answer(CommitError::PartitionNotOwned(reason)));
                        };
                        to_inbox(&state.store, &state.rejected, Vec::new(), calls, Some(partitions))
                            .map_err(store_failed)?;
                        tracing::info!(%reason, "calls of a partition no longer held written to its inbox");
                    }
                    (Err(error), _) => return Err(commit_answer(error)),
                }
            }
            Node::Standby(standby) => {
                to_inbox(&standby.store, &standby.rejected, rejections, calls, None).map_err(store_failed)?;
                self.metrics().events_rejected.add(refused as u64);
            }
        }
        Ok(())
    }
}

/// Takes `calls` made by the owner itself from a request that is not an
/// intake body (a one-click unsubscribe's `Unsubscribed` call) as intake
/// takes them ([`Node::take`]): committed by the commit thread (on
/// PostgreSQL queued behind its partitions' inbox when that holds
/// records), or with `--spread` written to the inbox when [`elsewhere`]
/// says so; durable when it returns `Ok`.
pub(super) async fn take_on_owner(state: &AppState, calls: Vec<Call>) -> Result<(), Answer> {
    Node::Owner(state).take(Vec::new(), calls).await
}

/// The partitions of `calls` (`inbox::partitions`: their ids resolved
/// through the aliases stored) when they go to the inbox rather than to
/// this node's commit thread: with `--spread`, when this node does not
/// hold every one of them (the partitions' holders apply them); `None`
/// when it commits them itself (always on sled, and on PostgreSQL
/// without `--spread`).
///
/// A call of a partition this node holds is not looked at here: whether
/// it must wait behind an earlier call of its customer in the inbox
/// (acked by another node, by this one before it claimed the partition,
/// or re-routed after a give-up) is asked by the commit thread inside the
/// transaction that would apply it, which then writes it to the inbox
/// instead (`commit.rs`, `CommitThread::queue_behind_inbox`;
/// `docs/scale-out.md`, "The order of one customer's calls").
fn elsewhere(store: &Store, calls: &[Call]) -> Result<Option<Vec<i32>>, super::store::StoreError> {
    let super::kv::Kv::Postgres(pg) = &store.db else {
        return Ok(None);
    };
    if calls.is_empty() || !pg.spread() {
        return Ok(None);
    }
    let partitions = super::inbox::partitions(pg, store, calls)?;
    let owned = pg.owned();
    Ok((!partitions.iter().all(|partition| owned.contains_key(partition))).then_some(partitions))
}

/// Writes `calls` as inbox records, one per partition of their customers
/// (`inbox::records`; `partitions` when [`elsewhere`] read them already),
/// with `rejections`, in one unfenced transaction (`inbox.rs`): durable
/// when it returns.
fn to_inbox(
    store: &Store,
    rejected: &RejectedStore,
    rejections: Vec<Rejection>,
    calls: Vec<Call>,
    partitions: Option<Vec<i32>>,
) -> Result<(), super::store::StoreError> {
    let super::kv::Kv::Postgres(pg) = &store.db else {
        unreachable!("only a PostgreSQL store has an inbox")
    };
    let mut inbox = super::kv::Batch::default();
    let taken = !calls.is_empty();
    let records = match partitions {
        Some(partitions) => super::inbox::records_in(store, calls, partitions)?,
        None => super::inbox::records(pg, store, calls)?,
    };
    for (key, value) in records {
        inbox.insert(key, value);
    }
    if !rejections.is_empty() || taken {
        rejected.put_with(rejections, inbox)?;
    }
    Ok(())
}

async fn intake(state: AppState, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    intake_with(
        state,
        endpoint,
        headers,
        body,
        move |bytes, bundle, received_at, future_max_ms| validate(endpoint, bytes, bundle, received_at, future_max_ms),
    )
    .await
}

/// Reads a body, validates it with `check` (bytes, bundle, receive time,
/// future bound), keeps the refused calls and commits the others.
async fn intake_with(
    state: AppState,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
    check: impl FnOnce(&[u8], &Bundle, i64, i64) -> Result<Validated, Refusal>,
) -> Response {
    intake_on(Node::Owner(&state), endpoint, headers, body, check).await
}

/// [`intake_with`] on either node.
async fn intake_on(
    node: Node<'_>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
    check: impl FnOnce(&[u8], &Bundle, i64, i64) -> Result<Validated, Refusal>,
) -> Response {
    let started = Instant::now();
    let received_at = now_ms();
    let bytes = match read_body(&headers, body, node.http()).await {
        Ok(bytes) => bytes,
        Err(refusal) => {
            node.metrics().requests_rejected.inc();
            let kept = Rejection::of_body(endpoint.name(), &[], &refusal.field, &refusal.reason, received_at);
            if let Err(answer) = node.take(vec![kept], Vec::new()).await {
                return answer.into_response();
            }
            return error(refusal.status, &refusal.field, refusal.reason);
        }
    };
    let runtime = node.runtime();
    let validated = match check(&bytes, &runtime.bundle, received_at, node.http().future_max_ms) {
        Ok(validated) => validated,
        Err(refusal) => {
            node.metrics().requests_rejected.inc();
            let kept = Rejection::of_body(endpoint.name(), &bytes, &refusal.field, &refusal.reason, received_at);
            if let Err(answer) = node.take(vec![kept], Vec::new()).await {
                return answer.into_response();
            }
            // The call count of a refused request, beyond the one entry kept.
            node.metrics()
                .events_rejected
                .add(refusal.events.saturating_sub(1) as u64);
            return error(refusal.status, &refusal.field, refusal.reason);
        }
    };
    if let Some((broadcast, request)) = validated.broadcast {
        let answer = match node {
            Node::Owner(state) => {
                super::broadcast::started(state, broadcast, &runtime.bundle_key, received_at, None).await
            }
            Node::Standby(standby) => {
                let command = super::command::Command::Broadcast { request, received_at };
                super::command::submit(&standby.pg, &standby.store, &command).await
            }
        };
        return answer.into_response();
    }
    let Validated { calls, refused, .. } = validated;
    // Batches and imports answer per call (`index`) or per row (`row`).
    let (batch, position) = match endpoint {
        Endpoint::Batch | Endpoint::Trigger => (true, "index"),
        Endpoint::Import => (true, "row"),
        _ => (false, "index"),
    };
    let answers: Vec<serde_json::Value> = refused
        .iter()
        .map(|r| json!({position: r.index, "field": r.field, "reason": r.reason}))
        .collect();
    let first = refused.first().map(|r| match (batch, r.field.is_empty()) {
        (false, _) => (r.field.clone(), r.reason.clone()),
        (true, true) => (format!("{}[{}]", endpoint.name(), r.index), r.reason.clone()),
        (true, false) => (
            format!("{}[{}].{}", endpoint.name(), r.index, r.field),
            r.reason.clone(),
        ),
    });
    let kept: Vec<Rejection> = refused
        .into_iter()
        .map(|r| {
            let index = batch.then_some(r.index);
            Rejection::of_call(endpoint.name(), index, r.call, &r.field, &r.reason, received_at)
        })
        .collect();
    let accepted = calls.len();
    if let Err(answer) = node.take(kept, calls).await {
        return answer.into_response();
    }
    if let (0, Some((field, reason))) = (accepted, first) {
        // Nothing valid: the status says so (the libraries do not retry a 4xx).
        node.metrics().requests_rejected.inc();
        return if batch {
            error_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                &field,
                &reason,
                json!({"accepted": 0, "rejected": answers}),
            )
        } else {
            error(StatusCode::UNPROCESSABLE_ENTITY, &field, reason)
        };
    }
    node.metrics().events_accepted.add(accepted as u64);
    node.metrics().intake_latency.observe(started.elapsed());
    let mut answer = json!({"success": true, "accepted": accepted});
    if batch {
        answer["rejected"] = serde_json::Value::Array(answers);
    }
    (StatusCode::OK, Json(answer)).into_response()
}

/// `GET /v1/rejected?after=ID&limit=N`: kept refusals, oldest first.
async fn list_rejected(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    rejected_response(&state.rejected, &query)
}

/// `GET /v1/rejected` on the owner or a standby.
fn rejected_response(rejected: &RejectedStore, query: &HashMap<String, String>) -> Response {
    let number = |name: &str| match query.get(name) {
        None => Ok(None),
        Some(text) => text
            .parse::<u64>()
            .map(Some)
            .map_err(|_| (name.to_string(), text.clone())),
    };
    let (after, limit) = match (number("after"), number("limit")) {
        (Ok(after), Ok(limit)) => (after, limit.unwrap_or(100).clamp(1, 1000) as usize),
        (Err((name, text)), _) | (_, Err((name, text))) => {
            return error(StatusCode::BAD_REQUEST, &name, format!("not a whole number: {text:?}"))
        }
    };
    match rejected.list(after, limit) {
        Ok(entries) => {
            let next = (entries.len() == limit).then(|| entries.last().map(|e| e.id)).flatten();
            let entries: Vec<serde_json::Value> = entries.iter().map(Rejection::to_json).collect();
            Json(json!({"total": rejected.len(), "rejected": entries, "next_after": next})).into_response()
        }
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, "", failure.to_string()),
    }
}

/// `POST /v1/rejected/replay`: every kept call validated again against the
/// current workspace; those that pass are ingested and dropped from the
/// store, the others stay with their new reason.
async fn replay_rejected(State(state): State<AppState>) -> Response {
    replay(&state).await.into_response()
}

/// The owner's replay of the refused calls: `POST /v1/rejected/replay`,
/// and a standby's handed over (`command.rs`).
pub(crate) async fn replay(state: &AppState) -> Answer {
    let _one_at_a_time = state.rejected.replay_lock.lock().await;
    let runtime = current(&state.runtime);
    let store_failed = |failure: super::store::StoreError| Answer::failed(failure.to_string());
    let (mut replayed, mut still, mut not_replayable) = (0usize, Vec::new(), 0usize);
    let mut after = None;
    loop {
        let entries = match state.rejected.list(after, BATCH_EVENTS_MAX) {
            Ok(entries) => entries,
            Err(failure) => return store_failed(failure),
        };
        let Some(last) = entries.last() else { break };
        after = Some(last.id);
        let (mut calls, mut passed) = (Vec::new(), Vec::new());
        for mut entry in entries {
            let Some(call) = &entry.call else {
                not_replayable += 1;
                continue;
            };
            match parse_received_call(
                call,
                &runtime.bundle.schema,
                entry.received_at,
                state.http.future_max_ms,
            ) {
                Ok(call) => {
                    calls.push(call);
                    passed.push(entry);
                }
                Err(e) => {
                    if (e.field.as_str(), e.reason.as_str()) != (entry.field.as_str(), entry.reason.as_str()) {
                        (entry.field, entry.reason) = (e.field, e.reason);
                        if let Err(failure) = state.rejected.update(&entry) {
                            return store_failed(failure);
                        }
                    }
                    if still.len() < 100 {
                        still.push(json!({"id": entry.id, "field": entry.field, "reason": entry.reason}));
                    }
                }
            }
        }
        if calls.is_empty() {
            continue;
        }
        let count = calls.len();
        // Taken as the owner takes intake (queued behind its customers'
        // earlier calls waiting in the inbox, and with `--spread` routed
        // to the inbox of partitions held elsewhere), and durable before
        // the entries go: a crash between the two replays them again, and
        // their messageIds dedupe them.
        if let Err(answer) = take_on_owner(state, calls).await {
            return answer;
        }
        if let Err(failure) = state.rejected.remove(&passed) {
            return store_failed(failure);
        }
        state.metrics.events_accepted.add(count as u64);
        replayed += count;
    }
    let total = state.rejected.len();
    tracing::info!(replayed, left = total, "rejected calls replayed");
    Answer::ok(json!({
        "success": true,
        "replayed": replayed,
        "left": total,
        "not_replayable": not_replayable,
        "still_rejected": still,
    }))
}

/// An event-time field as `GET` shows it: only times intake accepts as
/// event times (1970 to 9999), anything else (which only a bug could
/// store) as `null`.
pub fn time_json(at: i64) -> serde_json::Value {
    match crate::runtime::input::check_time("", at) {
        Ok(()) => json!(format_time(at)),
        Err(_) => serde_json::Value::Null,
    }
}

pub fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Absent => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Number(n) => json!(n),
        Value::String(s) => json!(s),
        Value::Time(t) => match chrono::DateTime::from_timestamp_millis(*t) {
            Some(_) => json!(format_time(*t)),
            None => serde_json::Value::Null,
        },
        Value::Duration(ms) => json!(*ms as f64 / 1000.0),
    }
}

/// The program with this content hash, among the current and retained bundles.
fn find_program<'a>(runtime: &'a Runtime, hash: &str) -> Option<(&'a Bundle, &'a Program)> {
    std::iter::once(&runtime.bundle)
        .chain(runtime.retained.iter())
        .find_map(|bundle| {
            bundle
                .journeys
                .iter()
                .find(|p| p.hash == hash)
                .map(|p| (bundle.as_ref(), p))
        })
}

/// Label and source line of an instruction, when known.
fn describe_step(runtime: &Runtime, version: &str, pc: u32) -> serde_json::Value {
    let Some((bundle, program)) = find_program(runtime, version) else {
        return json!({});
    };
    let label = program
        .labels
        .iter()
        .find(|(_, at)| *at == pc)
        .map(|(name, _)| bundle.name(*name).to_string());
    let line = program.lines.get(pc as usize).copied();
    let instruction = program.code.get(pc as usize).map(|i| {
        let text = format!("{i:?}");
        text.split([' ', '{', '(']).next().unwrap_or_default().to_string()
    });
    json!({"label": label, "line": line, "instruction": instruction})
}

pub fn customer_json(state: &CustomerState, runtime: &Runtime) -> serde_json::Value {
    let profile: serde_json::Map<String, serde_json::Value> = state
        .profile
        .iter()
        .map(|(k, v)| (k.to_string(), value_json(v)))
        .collect();
    let enrollments: Vec<serde_json::Value> = state
        .enrollments
        .iter()
        .map(|(journey, e)| {
            let mut entry = json!({
                "journey": journey,
                "version": e.version,
                "ordinal": e.ordinal,
                "entered_at": time_json(e.entered_at),
                "pc": e.pc,
                "waiting": e.suspended,
                "next_wake": e.wake_at.map(time_json),
                "holdout": e.holdout,
            });
            if let (Some(object), serde_json::Value::Object(extra)) =
                (entry.as_object_mut(), describe_step(runtime, e.version.as_str(), e.pc))
            {
                object.extend(extra);
            }
            entry
        })
        .collect();
    // Every channel: `subscribed` unless suppressed, with when and why it
    // was last set.
    let subscriptions: serde_json::Map<String, serde_json::Value> = Channel::ALL
        .iter()
        .map(|channel| {
            let entry = state.subscriptions.get(channel);
            let status = entry
                .and_then(|s| s.suppressed)
                .map_or("subscribed", |reason| reason.as_str());
            let mut value = json!({"status": status});
            if let (Some(entry), Some(object)) = (entry, value.as_object_mut()) {
                object.insert("since".into(), time_json(entry.since));
                if let Some(send) = &entry.send {
                    object.insert("send".into(), json!(send));
                }
            }
            (channel.as_str().to_string(), value)
        })
        .collect();
    json!({
        "id": state.id,
        "profile": profile,
        "subscriptions": subscriptions,
        "first_seen": state.first_seen.map(time_json),
        "last_event": state.last_event.map(time_json),
        "enrollments": enrollments,
        "next_wake": state.next_wake().map(time_json),
    })
}

/// The customer an id names: itself, or the one it was merged into.
fn resolve(store: &super::store::Store, id: String) -> Result<String, Box<Response>> {
    match store.alias(&id) {
        Ok(user) => Ok(user.unwrap_or(id)),
        Err(failure) => Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "",
            failure.to_string(),
        ))),
    }
}

async fn get_customer(State(state): State<AppState>, PathParam(id): PathParam) -> Response {
    customer_response(&state.store, &current(&state.runtime), id)
}

/// `GET /v1/customers/ID` on the owner or a standby.
fn customer_response(store: &Store, runtime: &Runtime, id: String) -> Response {
    let id = match resolve(store, id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    match store.customer(&id) {
        Ok(Some(customer)) => {
            let mut body = customer_json(&customer, runtime);
            match store.aliases_of(&id) {
                Ok(aliases) => body["aliases"] = json!(aliases),
                Err(failure) => return error(StatusCode::INTERNAL_SERVER_ERROR, "", failure.to_string()),
            }
            // `group` calls: each group with its traits and last update.
            match store.groups_of(&id) {
                Ok(groups) => {
                    let groups: Vec<serde_json::Value> = (groups.into_values())
                        .map(|mut group| {
                            group["at"] = group["at"].as_i64().map_or(serde_json::Value::Null, time_json);
                            group
                        })
                        .collect();
                    body["groups"] = json!(groups);
                }
                Err(failure) => return error(StatusCode::INTERNAL_SERVER_ERROR, "", failure.to_string()),
            }
            // A failing customer: what failed, and the retry (see `faults`).
            match super::faults::read(&store.db, &id) {
                Ok(fault) => body["fault"] = fault.map_or(serde_json::Value::Null, |f| f.to_json()),
                Err(failure) => return error(StatusCode::INTERNAL_SERVER_ERROR, "", failure.to_string()),
            }
            (StatusCode::OK, Json(body)).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "id", format!("no customer {id:?}")),
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, "", failure.to_string()),
    }
}

async fn delete_customer(State(state): State<AppState>, PathParam(id): PathParam) -> Response {
    // An alias names the customer it was merged into (the commit thread
    // resolves it the same way); the ids merged into it go with it.
    customer_command_on_owner(
        &state,
        id,
        |id| erase(&state, id),
        |customer| super::command::Command::Erase { customer },
        erase_reply,
    )
    .await
}

/// What an erasure found.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Erased {
    /// The customer existed.
    pub known: bool,
    /// Its refused calls erased.
    pub rejected_erased: usize,
}

/// Erases customer `id` (already resolved through aliases) with the ids
/// merged into it and its refused calls: the owner's `DELETE
/// /v1/customers/ID`, and a standby's handed over (`command.rs`). `Err`:
/// the failure's answer.
pub(crate) async fn erase(state: &AppState, id: String) -> Result<Erased, Answer> {
    let failed = |failure: super::store::StoreError| Answer::failed(failure.to_string());
    let aliases = state.store.aliases_of(&id).map_err(failed)?;
    let known = state.committer.erase(id.clone()).await.map_err(commit_answer)?;
    // Its refused calls go too (they hold its data), and those of its aliases.
    let mut rejected = 0;
    for who in std::iter::once(&id).chain(&aliases) {
        rejected += state.rejected.erase_customer(who).map_err(failed)?;
    }
    if rejected > 0 {
        // Their old bytes leave the disk with the erasure compaction, which
        // the mark asks for (the erase job writes it only for a known customer).
        state
            .store
            .db
            .insert(super::erasure::erased_key(&id), &[][..])
            .map_err(failed)?;
        state.store.db.flush_async().await.map_err(failed)?;
    }
    if known || rejected > 0 {
        // Not naming the customer: logs are out of erasure's reach.
        tracing::info!(rejected, "customer erased");
        state.erasures.notify_one();
    }
    Ok(Erased {
        known,
        rejected_erased: rejected,
    })
}

/// The answer to `DELETE /v1/customers/ID` (on the owner, and a standby's
/// from the owner's [`Erased`], which names no customer).
pub(crate) fn erase_reply(id: &str, erased: Erased) -> Answer {
    if erased.known || erased.rejected_erased > 0 {
        Answer::ok(json!({"success": true, "erased": id, "rejected_erased": erased.rejected_erased}))
    } else {
        Answer::error(StatusCode::NOT_FOUND, "id", &format!("no customer {id:?}"))
    }
}

/// Retries a failing (or parked) customer's held inputs now.
async fn retry_customer(State(state): State<AppState>, PathParam(id): PathParam) -> Response {
    customer_command_on_owner(
        &state,
        id,
        |id| retry(&state, id),
        |customer| super::command::Command::RetryCustomer { customer },
        retry_reply,
    )
    .await
}

/// With `--spread`, the backend when another node holds customer `id`'s
/// partition: a command about that customer is then that node's.
fn held_elsewhere(state: &AppState, id: &str) -> Option<super::kv::pg::Pg> {
    match &state.store.db {
        super::kv::Kv::Postgres(pg) if pg.spread() => {
            let partition = pg.partition_of(&store::customer_key(id));
            (!pg.owned().contains_key(&partition)).then(|| pg.clone())
        }
        _ => None,
    }
}

/// A command naming one customer (resolved here through its aliases) on
/// the store's owner: done here (`here`), unless with `--spread` another node
/// holds the customer's partition, or gave it up between the look and the
/// commit. Then it is handed to that node as a standby hands it
/// (`command.rs`), and answered as that node answers.
async fn customer_command_on_owner<T, F>(
    state: &AppState,
    id: String,
    here: impl FnOnce(String) -> F,
    command: impl FnOnce(String) -> super::command::Command,
    reply: impl FnOnce(&str, T) -> Answer,
) -> Response
where
    T: serde::de::DeserializeOwned,
    F: std::future::Future<Output = Result<T, Answer>>,
{
    let id = match resolve(&state.store, id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let pg = match held_elsewhere(state, &id) {
        Some(pg) => pg,
        None => match here(id.clone()).await {
            Ok(done) => return reply(&id, done).into_response(),
            Err(failure) => match held_elsewhere(state, &id) {
                Some(pg) => pg,
                None => return failure.into_response(),
            },
        },
    };
    handed_over(&pg, &state.store, command(id.clone()), &id, reply).await
}

/// A command naming customer `id` handed to the node that applies it; its
/// 200 body answered through that node's own `reply`, anything else as it
/// came.
async fn handed_over<T: serde::de::DeserializeOwned>(
    pg: &super::kv::pg::Pg,
    store: &Store,
    command: super::command::Command,
    id: &str,
    reply: impl FnOnce(&str, T) -> Answer,
) -> Response {
    let answer = super::command::submit(pg, store, &command).await;
    match (answer.status, serde_json::from_value::<T>(answer.body.clone())) {
        (200, Ok(body)) => reply(id, body).into_response(),
        _ => answer.into_response(),
    }
}

/// What retrying a customer found: whether it recovered (`None`: it was
/// not failing) and its fault record now. Names no customer, like
/// [`Erased`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Retried {
    pub recovered: Option<bool>,
    pub fault: serde_json::Value,
}

/// Retries customer `id` (resolved through aliases) now: the owner's `POST
/// /v1/customers/ID/retry`, and a standby's handed over (`command.rs`).
pub(crate) async fn retry(state: &AppState, id: String) -> Result<Retried, Answer> {
    let recovered = state.committer.retry(id.clone()).await.map_err(commit_answer)?;
    let fault = match recovered {
        None => serde_json::Value::Null,
        Some(_) => match super::faults::read(&state.store.db, &id) {
            Ok(fault) => fault.map_or(serde_json::Value::Null, |f| f.to_json()),
            Err(failure) => return Err(Answer::failed(failure.to_string())),
        },
    };
    Ok(Retried { recovered, fault })
}

/// The answer to `POST /v1/customers/ID/retry` (on the owner, and a
/// standby's from the owner's [`Retried`]).
pub(crate) fn retry_reply(id: &str, retried: Retried) -> Answer {
    match retried.recovered {
        None => Answer::error(StatusCode::NOT_FOUND, "id", &format!("customer {id:?} is not failing")),
        Some(recovered) => {
            Answer::ok(json!({"success": true, "customer": id, "recovered": recovered, "fault": retried.fault}))
        }
    }
}

/// The owner's counters: its commit thread's copy in memory, unless other
/// nodes apply partitions too (`--spread`): then the store's, summed over
/// every partition as a standby reads them.
fn owner_counters(state: &AppState) -> HashMap<String, i64> {
    if let super::kv::Kv::Postgres(pg) = &state.store.db {
        if pg.spread() {
            match super::stats::persisted(&state.store) {
                Ok(counters) => return counters,
                Err(error) => tracing::warn!(%error, "reading the counters failed; answering this node's own"),
            }
        }
    }
    state.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

async fn journeys(State(state): State<AppState>) -> Response {
    journeys_response(&current(&state.runtime), &owner_counters(&state))
}

/// `GET /v1/journeys` on the owner or a standby.
fn journeys_response(runtime: &Runtime, counters: &HashMap<String, i64>) -> Response {
    let list = super::ui::journey_list(&runtime.bundle, &runtime.bundle_key, counters);
    (StatusCode::OK, Json(list)).into_response()
}

/// `GET /v1/journeys/{name}/graph`: the journey's flow chart as nodes and
/// edges (`journeyc graph --format json`), for the dashboard.
async fn journey_graph(State(state): State<AppState>, PathParam(name): PathParam) -> Response {
    journey_graph_response(&current(&state.runtime), &name)
}

fn journey_graph_response(runtime: &Runtime, name: &str) -> Response {
    let Some(program) = runtime.bundle.journey(name) else {
        return error(StatusCode::NOT_FOUND, "name", format!("no journey {name:?}"));
    };
    (StatusCode::OK, Json(super::ui::journey_graph(&runtime.bundle, program))).into_response()
}

/// `GET /v1/journeys/{name}/stats`: the readout, and the count of dead
/// letters; their samples (which hold customer data) only with the token.
async fn journey_stats(State(state): State<AppState>, headers: HeaderMap, PathParam(name): PathParam) -> Response {
    let counters = owner_counters(&state);
    journey_stats_response(
        &current(&state.runtime),
        &counters,
        &state.store,
        state.token.as_deref(),
        &headers,
        &name,
    )
}

/// `GET /v1/journeys/{name}/stats` on the owner or a standby.
fn journey_stats_response(
    runtime: &Runtime,
    counters: &HashMap<String, i64>,
    store: &Store,
    token: Option<&str>,
    headers: &HeaderMap,
    name: &str,
) -> Response {
    let Some(program) = runtime.bundle.journey(name) else {
        return error(StatusCode::NOT_FOUND, "name", format!("no journey {name:?}"));
    };
    let readout = Readout::build(&runtime.bundle, program, counters.iter());
    let mut body = serde_json::to_value(readout).expect("a readout always serializes");
    let dead: Vec<serde_json::Value> = store
        .dead_letters(10_000)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.pointer("/record/journey").and_then(|j| j.as_str()) == Some(name))
        .collect();
    let with_token = token.is_none_or(|token| authorized(headers, token));
    if let Some(object) = body.as_object_mut() {
        object.insert("dead_letters".into(), json!(dead.len()));
    }
    if let (Some(object), true) = (body.as_object_mut(), with_token) {
        object.insert(
            "dead_letter_samples".into(),
            json!(dead.into_iter().take(20).collect::<Vec<_>>()),
        );
    }
    (StatusCode::OK, Json(body)).into_response()
}

async fn reload(State(state): State<AppState>) -> Response {
    super::command::reload_answer(state.reloader.reload().await).into_response()
}

/// The most dead letters one `GET /v1/outbox/dead` lists.
pub const DEAD_LIST_MAX: usize = 1000;

/// `GET /v1/outbox/dead[?limit=N]`: the dead letters, oldest sink key first.
async fn list_dead_letters(
    State(state): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    dead_letters_response(&state.store, query).await
}

/// `GET /v1/outbox/dead` on the owner or a standby.
async fn dead_letters_response(store: &Store, query: Option<String>) -> Response {
    let mut limit = 100;
    for pair in query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("limit", value)) => match value.parse::<usize>() {
                Ok(n) if (1..=DEAD_LIST_MAX).contains(&n) => limit = n,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "limit",
                        format!("expected a whole number from 1 to {DEAD_LIST_MAX}, got {value:?}"),
                    )
                }
            },
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "query",
                    format!("unknown parameter {pair:?}; only limit"),
                )
            }
        }
    }
    let store = store.clone();
    let listed = tokio::task::spawn_blocking(move || {
        Ok::<_, store::StoreError>((super::dead::list(&store, limit)?, super::dead::count(&store)))
    })
    .await;
    match listed {
        Ok(Ok((letters, total))) => {
            (StatusCode::OK, Json(json!({"total": total, "dead_letters": letters}))).into_response()
        }
        Ok(Err(failure)) => error(StatusCode::INTERNAL_SERVER_ERROR, "", failure.to_string()),
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, "", failure.to_string()),
    }
}

/// `POST /v1/outbox/retry` with no body (or `{}`) requeues every dead
/// letter; `{"seq": [N, …]}` those with these sequence numbers.
async fn retry_dead_letters(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    match dead_letters_asked(&body) {
        Ok(only) => requeue_dead(&state, only).await.into_response(),
        Err(refused) => *refused,
    }
}

/// The dead letters a `POST /v1/outbox/retry` body asks for (`None`: all),
/// or its refusal: read the same on every node.
fn dead_letters_asked(body: &[u8]) -> Result<Option<Vec<u64>>, Box<Response>> {
    let bad = |field: &str, reason: String| Box::new(error(StatusCode::BAD_REQUEST, field, reason));
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad("", format!("the body is not JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(bad("", "expected an object like {\"seq\": [12, 15]}".into()));
    };
    if let Some(other) = object.keys().find(|k| k.as_str() != "seq") {
        return Err(bad(other, "unknown field; only seq".into()));
    }
    match object.get("seq") {
        None => Ok(None),
        Some(serde_json::Value::Array(items)) => {
            let seqs: Option<Vec<u64>> = items.iter().map(serde_json::Value::as_u64).collect();
            seqs.map(Some)
                .ok_or_else(|| bad("seq", "expected whole numbers (outbox sequence numbers)".into()))
        }
        Some(_) => Err(bad("seq", "expected a list of sequence numbers".into())),
    }
}

/// The owner's requeue of dead letters (all, or those of `only`): `POST
/// /v1/outbox/retry`, and a standby's handed over (`command.rs`).
pub(crate) async fn requeue_dead(state: &AppState, only: Option<Vec<u64>>) -> Answer {
    let store = state.store.clone();
    let requeued = tokio::task::spawn_blocking(move || super::dead::requeue(&store, only.as_deref())).await;
    match requeued {
        Ok(Ok((requeued, missing))) => {
            state.dead_retry.send_modify(|generation| *generation += 1);
            Answer::ok(json!({"success": true, "requeued": requeued, "not_found": missing}))
        }
        Ok(Err(failure)) => Answer::failed(failure.to_string()),
        Err(failure) => Answer::failed(failure.to_string()),
    }
}

/// The answer of a standby to what only the owner can do.
const STANDBY_UNAVAILABLE: &str = "standby: another node holds the store's lease; this one takes over when it expires";

/// What a standby node (another one holds the PostgreSQL store's lease)
/// serves while it waits (`docs/scale-out.md`): every endpoint of the
/// owner, with the owner's answers. `/healthz` says it is a standby and
/// names the owner; customers, broadcasts and dead letters are read from
/// the store, stats, `/v1/journeys`, `/ui` and `/metrics` answered from the
/// store's counters ([`super::stats::persisted`]) and `/v1/rejected` from
/// its refusals, as on the owner; intake (also imports, API triggers and
/// one-click unsubscribes) is written to the inbox with its refusals kept
/// beside it (`inbox.rs`); the owner's other writes (`DELETE
/// /v1/customers/ID`, `POST /v1/reload`, a segment's broadcast, replaying
/// refusals, requeueing dead letters, retrying a customer) are handed to
/// the owner as commands (`command.rs`). The token and `--protect-ui` are
/// checked as on the owner. A path no node serves gets 503 (another node
/// may).
pub fn standby_router(standby: Standby) -> Router {
    let standby = Arc::new(standby);
    let api = Router::new()
        .route(
            "/v1/customers/{id}",
            get(standby_customer).delete(standby_delete_customer),
        )
        .route("/v1/customers/{id}/retry", post(standby_retry_customer))
        .route("/v1/track", post(|s, h, b| standby_intake(s, Endpoint::Track, h, b)))
        .route(
            "/v1/identify",
            post(|s, h, b| standby_intake(s, Endpoint::Identify, h, b)),
        )
        .route("/v1/page", post(|s, h, b| standby_intake(s, Endpoint::Page, h, b)))
        .route("/v1/screen", post(|s, h, b| standby_intake(s, Endpoint::Screen, h, b)))
        .route("/v1/group", post(|s, h, b| standby_intake(s, Endpoint::Group, h, b)))
        .route("/v1/alias", post(|s, h, b| standby_intake(s, Endpoint::Alias, h, b)))
        .route("/v1/batch", post(|s, h, b| standby_intake(s, Endpoint::Batch, h, b)))
        .route("/v1/import", post(|s, h, b| standby_intake(s, Endpoint::Import, h, b)))
        .route("/v1/journeys/{name}/trigger", post(standby_trigger))
        .route("/v1/broadcasts", get(standby_broadcasts))
        .route("/v1/broadcasts/{id}", get(standby_broadcast))
        .route("/v1/rejected", get(standby_rejected))
        .route("/v1/rejected/replay", post(standby_replay))
        .route("/v1/reload", post(standby_reload))
        .route("/v1/outbox/dead", get(standby_dead_letters))
        .route("/v1/outbox/retry", post(standby_retry_dead_letters))
        .route("/v1/redactors", get(super::redactors::standby_list))
        .route(
            "/v1/redactors/{id}",
            axum::routing::delete(super::redactors::standby_retire),
        )
        .route_layer(middleware::from_fn_with_state(standby.clone(), standby_authenticate));
    let aggregates = Router::new()
        .route("/ui", get(super::ui::page))
        .route("/ui/{asset}", get(super::ui::asset))
        .route("/v1/journeys", get(standby_journeys))
        .route("/v1/journeys/{name}/stats", get(standby_journey_stats))
        .route("/v1/journeys/{name}/graph", get(standby_journey_graph))
        .route("/metrics", get(standby_metrics));
    let aggregates = match standby.http.protect_ui {
        true => aggregates.route_layer(middleware::from_fn_with_state(standby.clone(), standby_authenticate)),
        false => aggregates,
    };
    // One-click unsubscribes, outside the API's authentication as on the owner.
    let unsubscribe = Router::new().route(
        "/u/{token}",
        get(|State(standby): State<Arc<Standby>>, token: PathParam| async move {
            super::unsubscribe::confirm(&standby.links, &token.0)
        })
        .post(standby_one_click),
    );
    Router::new()
        .route("/healthz", get(standby_healthz))
        .merge(unsubscribe)
        .merge(api)
        .merge(aggregates)
        .fallback(|| async { error(StatusCode::SERVICE_UNAVAILABLE, "", STANDBY_UNAVAILABLE) })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(limit_uri))
        .with_state(standby)
}

/// What a standby's router reads and writes with.
pub struct Standby {
    pub pg: super::kv::pg::Pg,
    /// The store over `pg`: read, and written only outside the lease.
    pub store: Store,
    /// The version this node runs: the store's current one, followed
    /// (`reload::keep_following`).
    pub runtime: SharedRuntime,
    pub token: Option<String>,
    pub http: HttpOptions,
    /// This process's own counters (intake, refusals, reloads).
    pub metrics: Arc<Metrics>,
    /// Refusals, written unfenced.
    pub rejected: RejectedStore,
    pub sink_names: Arc<Vec<String>>,
    /// `POST /v1/reload` (and SIGHUP) here.
    pub publisher: Arc<super::reload::Publisher>,
    /// Checks unsubscribe links (the database's key, shared by every node).
    pub links: Arc<super::unsubscribe::Links>,
}

impl Standby {
    /// `answer` with the store's counters, or the error answer.
    fn with_counters(&self, answer: impl FnOnce(&HashMap<String, i64>) -> Response) -> Response {
        match super::stats::persisted(&self.store) {
            Ok(counters) => answer(&counters),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "", e.to_string()),
        }
    }
}

async fn standby_authenticate(State(standby): State<Arc<Standby>>, request: Request, next: Next) -> Response {
    if let Some(token) = &standby.token {
        if !authorized(request.headers(), token) {
            standby.metrics.requests_rejected.inc();
            return unauthorized();
        }
    }
    next.run(request).await
}

/// Intake on a standby: the request validated as on the owner and answered
/// as the owner would; its valid calls written to the inbox for the owner
/// to apply (`inbox.rs`), its refused ones kept, in one transaction.
async fn standby_intake(
    State(standby): State<Arc<Standby>>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
) -> Response {
    intake_on(
        Node::Standby(&standby),
        endpoint,
        headers,
        body,
        move |bytes, bundle, received_at, future_max_ms| validate(endpoint, bytes, bundle, received_at, future_max_ms),
    )
    .await
}

async fn standby_healthz(State(standby): State<Arc<Standby>>) -> Response {
    let mut body =
        json!({"status": "standby", "node": standby.pg.node(), "bundle": current(&standby.runtime).bundle_key});
    if let Ok(Some((owner, epoch, expired))) = standby.pg.lease_holder() {
        body["owner"] = json!(owner);
        body["epoch"] = json!(epoch);
        body["expired"] = json!(expired);
    }
    (StatusCode::OK, Json(body)).into_response()
}

async fn standby_customer(State(standby): State<Arc<Standby>>, PathParam(id): PathParam) -> Response {
    customer_response(&standby.store, &current(&standby.runtime), id)
}

/// `DELETE /v1/customers/ID` on a standby: the erasure handed to the owner
/// (`command.rs`); answered as the owner answers once it has erased.
async fn standby_delete_customer(State(standby): State<Arc<Standby>>, PathParam(id): PathParam) -> Response {
    standby_customer_command(
        &standby,
        id,
        |customer| super::command::Command::Erase { customer },
        erase_reply,
    )
    .await
}

/// `POST /v1/customers/ID/retry` on a standby: handed to the owner
/// (`command.rs`), answered as the owner answers.
async fn standby_retry_customer(State(standby): State<Arc<Standby>>, PathParam(id): PathParam) -> Response {
    standby_customer_command(
        &standby,
        id,
        |customer| super::command::Command::RetryCustomer { customer },
        retry_reply,
    )
    .await
}

/// A command naming one customer (resolved through its aliases) handed to
/// the owner; the owner's 200 body is answered through the owner's own
/// reply, anything else as it came.
async fn standby_customer_command<T: serde::de::DeserializeOwned>(
    standby: &Standby,
    id: String,
    command: impl FnOnce(String) -> super::command::Command,
    reply: impl FnOnce(&str, T) -> Answer,
) -> Response {
    let id = match resolve(&standby.store, id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    handed_over(&standby.pg, &standby.store, command(id.clone()), &id, reply).await
}

/// `POST /v1/journeys/NAME/trigger` on a standby: its calls into the
/// inbox, a segment's broadcast handed to the owner.
async fn standby_trigger(
    State(standby): State<Arc<Standby>>,
    PathParam(name): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Response {
    trigger_on(Node::Standby(&standby), name, headers, body).await
}

async fn standby_broadcasts(State(standby): State<Arc<Standby>>) -> Response {
    super::broadcast::list_response(&standby.store)
}

async fn standby_broadcast(State(standby): State<Arc<Standby>>, PathParam(id): PathParam) -> Response {
    super::broadcast::get_response(&standby.store, &id)
}

async fn standby_replay(State(standby): State<Arc<Standby>>) -> Response {
    let command = super::command::Command::ReplayRejected;
    super::command::submit(&standby.pg, &standby.store, &command)
        .await
        .into_response()
}

async fn standby_dead_letters(
    State(standby): State<Arc<Standby>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    dead_letters_response(&standby.store, query).await
}

async fn standby_retry_dead_letters(State(standby): State<Arc<Standby>>, body: axum::body::Bytes) -> Response {
    let seq = match dead_letters_asked(&body) {
        Ok(seq) => seq,
        Err(refused) => return *refused,
    };
    let command = super::command::Command::RetryDead { seq };
    super::command::submit(&standby.pg, &standby.store, &command)
        .await
        .into_response()
}

/// `POST /u/TOKEN` on a standby: checked as on the owner, its
/// `Unsubscribed` call written to the inbox (durable before the page).
async fn standby_one_click(State(standby): State<Arc<Standby>>, token: PathParam, body: axum::body::Bytes) -> Response {
    let runtime = current(&standby.runtime);
    let call = super::unsubscribe::one_click_call(
        &standby.links,
        &token.0,
        &body,
        &standby.store,
        &runtime,
        standby.http.future_max_ms,
    );
    match call {
        Ok(Some(call)) => match Node::Standby(&standby).take(Vec::new(), vec![call]).await {
            Ok(()) => super::unsubscribe::unsubscribed_page(),
            Err(answer) => answer.into_response(),
        },
        Ok(None) => super::unsubscribe::unsubscribed_page(),
        Err(response) => *response,
    }
}

async fn standby_reload(State(standby): State<Arc<Standby>>) -> Response {
    match standby.publisher.reload().await {
        Ok(answer) => answer.into_response(),
        Err(diagnostics) => super::command::reload_answer(Err(diagnostics)).into_response(),
    }
}

async fn standby_rejected(
    State(standby): State<Arc<Standby>>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    rejected_response(&standby.rejected, &query)
}

async fn standby_journeys(State(standby): State<Arc<Standby>>) -> Response {
    standby.with_counters(|counters| journeys_response(&current(&standby.runtime), counters))
}

async fn standby_journey_graph(State(standby): State<Arc<Standby>>, PathParam(name): PathParam) -> Response {
    journey_graph_response(&current(&standby.runtime), &name)
}

async fn standby_journey_stats(
    State(standby): State<Arc<Standby>>,
    headers: HeaderMap,
    PathParam(name): PathParam,
) -> Response {
    standby.with_counters(|counters| {
        journey_stats_response(
            &current(&standby.runtime),
            counters,
            &standby.store,
            standby.token.as_deref(),
            &headers,
            &name,
        )
    })
}

async fn standby_metrics(State(standby): State<Arc<Standby>>) -> Response {
    standby.with_counters(|counters| metrics_response(&standby.metrics, counters, &standby.store, &standby.sink_names))
}

async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    metrics_response(&state.metrics, &owner_counters(&state), &state.store, &state.sink_names)
}

/// `GET /metrics` on the owner or a standby: this process's own counters
/// (`metrics`), the gauges from the store's counters and records.
fn metrics_response(metrics: &Metrics, stats: &HashMap<String, i64>, store: &Store, sink_names: &[String]) -> Response {
    let gauge = |name: &str| stats.get(name).copied().unwrap_or(0);
    let timers_pending = gauge(store::STAT_TIMERS);
    let customers_failing = gauge(super::faults::STAT_FAILING);
    let customers_parked = gauge(super::faults::STAT_PARKED);
    let unattributed = crate::runtime::stats::unattributed(stats.iter());
    let outbox_depth = store.outbox_depth(sink_names).unwrap_or(0);
    let mut text = metrics.render(&Gauges {
        timers_pending,
        outbox_depth,
        customers_failing,
        customers_parked,
        dead_letters: super::dead::count(store),
        retry_waiting: super::retry::count(store),
        unattributed,
    });
    text.push_str(&super::broadcast::metrics_text(store));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{FieldType, Schema, Type};
    use crate::compile::bytecode::SettingsDef;

    fn bundle() -> Bundle {
        let mut schema = Schema::default();
        schema.customer.insert(
            "plan".into(),
            FieldType {
                ty: Type::Enum(vec!["free".into(), "pro".into()]),
                optional: false,
            },
        );
        let mut purchase = std::collections::BTreeMap::new();
        purchase.insert(
            "amount".into(),
            FieldType {
                ty: Type::Number,
                optional: false,
            },
        );
        schema.events.insert("purchase".into(), purchase);
        Bundle {
            format_version: 1,
            names: vec![],
            schema,
            segments: vec![],
            messages: vec![],
            settings: SettingsDef::default(),
            journeys: vec![],
            history_window_seconds: 0,
        }
    }

    const DAY_MS: i64 = 86_400_000;

    /// A request read as all-or-nothing: its calls, or the first refusal
    /// (of the request, or of a call as a 422).
    fn whole(validated: Result<Validated, Refusal>) -> Result<Vec<Call>, Refusal> {
        let validated = validated?;
        match validated.refused.into_iter().next() {
            Some(first) => Err(refuse(StatusCode::UNPROCESSABLE_ENTITY, first.field, first.reason, 1)),
            None => Ok(validated.calls),
        }
    }

    fn refused(endpoint: Endpoint, body: &str) -> Refusal {
        whole(validate(endpoint, body.as_bytes(), &bundle(), 0, DAY_MS)).expect_err("refused")
    }

    /// The one refused call of a request: (index, field).
    fn refused_call(endpoint: Endpoint, body: &str) -> (usize, String) {
        let validated = validate(endpoint, body.as_bytes(), &bundle(), 0, DAY_MS).expect("a request");
        assert_eq!(validated.refused.len(), 1, "{body}");
        let refused = &validated.refused[0];
        assert!(!refused.reason.is_empty());
        (refused.index, refused.field.clone())
    }

    #[test]
    fn validation_names_field_and_reason() {
        let r = refused(Endpoint::Track, "{not json");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            refused_call(Endpoint::Track, r#"{"userId":"c1","event":"nope"}"#),
            (0, "event".into())
        );
        let r = refused_call(
            Endpoint::Track,
            r#"{"userId":"c1","event":"purchase","properties":{"amount":"x"}}"#,
        );
        assert_eq!(r.1, "properties.amount");
        let r = refused_call(Endpoint::Identify, r#"{"userId":"c1","traits":{"plan":"gold"}}"#);
        assert_eq!(r.1, "traits.plan");
        let r = refused_call(Endpoint::Track, r#"{"event":"purchase","properties":{"amount":1}}"#);
        assert_eq!(r.1, "userId");
        let r = refused_call(Endpoint::Identify, r#"{"type":"track","userId":"c1"}"#);
        assert_eq!(r.1, "type");
        let many = format!("{{\"batch\":[{}]}}", vec!["{}"; BATCH_EVENTS_MAX + 1].join(","));
        assert_eq!(refused(Endpoint::Batch, &many).status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(refused(Endpoint::Batch, r#"{"batch":{}}"#).field, "batch");
    }

    /// One bad call does not sink a batch: the others are valid, the bad
    /// one is named by its index.
    #[test]
    fn batch_calls_are_validated_one_by_one() {
        let validated = validate(
            Endpoint::Batch,
            br#"{"batch":[{"type":"identify","userId":"a","traits":{"plan":"pro"}},{"type":"track","userId":"b","event":"purchase","properties":{"amount":true}},{"type":"track","userId":"a","event":"purchase","properties":{"amount":2.5}}]}"#,
            &bundle(),
            5,
            DAY_MS,
        )
        .expect("a request");
        assert_eq!(validated.calls.len(), 2);
        assert_eq!(validated.calls[0].input.at(), 5);
        assert_eq!(validated.calls[1].customer, "a");
        assert_eq!(validated.refused.len(), 1);
        let refused = &validated.refused[0];
        assert_eq!((refused.index, refused.field.as_str()), (1, "properties.amount"));
        assert_eq!(refused.call["userId"], "b");
    }

    #[test]
    fn event_times_are_skew_corrected_and_bounded() {
        let now = crate::runtime::trace::parse_time("2026-03-01T12:00:00Z").expect("time");
        let track = |extra: &str| format!(r#"{{"userId":"a","event":"purchase","properties":{{"amount":1}}{extra}}}"#);
        let accept = |body: &str| whole(validate(Endpoint::Track, body.as_bytes(), &bundle(), now, DAY_MS));
        // The device clock is 1 h fast: sentAt - timestamp = 10 min, so the
        // event happened 10 min before it was received.
        let calls = accept(&track(
            r#","timestamp":"2026-03-01T13:00:00Z","sentAt":"2026-03-01T13:10:00Z""#,
        ))
        .expect("skewed but valid");
        assert_eq!(calls[0].input.at(), now - 600_000);
        let far = accept(&track(r#","timestamp":"9999-12-31T23:59:59Z""#)).expect_err("far future");
        assert_eq!(
            (far.status, far.field.as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "timestamp")
        );
        let ahead = accept(&track(r#","timestamp":"2026-03-02T12:00:01Z""#)).expect_err("over 24 h ahead");
        assert_eq!(ahead.field, "timestamp");
        assert!(accept(&track(r#","timestamp":"2026-03-02T12:00:00Z""#)).is_ok());
        // Far ahead, but sent with the same skew: corrected to the past.
        assert!(accept(&track(
            r#","timestamp":"2036-03-01T11:00:00Z","sentAt":"2036-03-01T12:00:00Z""#
        ))
        .is_ok());
        let old = accept(&track(r#","timestamp":"1969-12-31T23:59:59Z""#)).expect_err("before 1970");
        assert_eq!(old.field, "timestamp");
        assert!(old.reason.contains("1970"), "{}", old.reason);
    }

    #[test]
    fn ids_and_strings_are_limited() {
        let with_id = |id: &str| format!(r#"{{"userId":{id},"event":"purchase","properties":{{"amount":1}}}}"#);
        let long = serde_json::to_string(&"x".repeat(257)).expect("json");
        assert_eq!(refused(Endpoint::Track, &with_id(&long)).field, "userId");
        assert_eq!(refused(Endpoint::Track, &with_id(r#""a\u0000b""#)).field, "userId");
        assert_eq!(refused(Endpoint::Track, &with_id(r#""a\nb""#)).field, "userId");
        let ok = serde_json::to_string(&"é".repeat(128)).expect("json");
        assert!(whole(validate(Endpoint::Track, with_id(&ok).as_bytes(), &bundle(), 0, DAY_MS)).is_ok());
        let message = format!(r#"{{"userId":"a","event":"purchase","properties":{{"amount":1}},"messageId":{long}}}"#);
        assert_eq!(refused(Endpoint::Track, &message).field, "messageId");
        let message = r#"{"userId":"a","event":"purchase","properties":{"amount":1},"messageId":"m\u0000"}"#;
        assert_eq!(refused(Endpoint::Track, message).field, "messageId");
    }

    #[test]
    fn get_prints_only_times_intake_accepts() {
        assert_eq!(time_json(0), json!("1970-01-01T00:00:00Z"));
        assert_eq!(time_json(-1), serde_json::Value::Null);
        assert_eq!(time_json(crate::runtime::input::TIME_MAX + 1), serde_json::Value::Null);
        assert_eq!(value_json(&Value::Time(i64::MAX)), serde_json::Value::Null);
        assert_eq!(value_json(&Value::Time(-86_400_000)), json!("1969-12-31T00:00:00Z"));
    }

    #[test]
    fn gunzip_is_bounded() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&[b'x'; 10_000]).expect("gzip");
        let compressed = encoder.finish().expect("gzip");
        assert_eq!(gunzip(&compressed, 10_000).map(|b| b.len()), Ok(10_000));
        let refusal = gunzip(&compressed, 9_999).expect_err("over the bound");
        assert_eq!(
            (refusal.status, refusal.field.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "body")
        );
        assert_eq!(
            gunzip(b"plain", 100).expect_err("not gzip").status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn bearer_and_basic_auth() {
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, "s3cret"));
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().expect("header"));
        assert!(authorized(&headers, "s3cret"));
        headers.insert(header::AUTHORIZATION, "Bearer wrong".parse().expect("header"));
        assert!(!authorized(&headers, "s3cret"));
        let basic = base64::engine::general_purpose::STANDARD.encode("s3cret:");
        headers.insert(header::AUTHORIZATION, format!("Basic {basic}").parse().expect("header"));
        assert!(authorized(&headers, "s3cret"));
    }

    /// Hostile JSON built from the fields intake reads, with values of
    /// every kind: ids with control characters and of every length, times
    /// far in the past and future, extreme numbers, nesting.
    fn hostile_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let text = prop_oneof![
            Just(String::new()),
            "[a-z]{1,8}",
            "[\\x00-\\x1f\\x7f a-z\\u{80}-\\u{10ffff}]{0,12}",
            (250usize..262).prop_map(|n| "u".repeat(n)),
            (8180usize..8200).prop_map(|n| "s".repeat(n)),
            Just("purchase".to_string()),
            Just("track".to_string()),
            Just("identify".to_string()),
            Just("plan".to_string()),
            Just("pro".to_string()),
            Just("amount".to_string()),
            (-2000i64..12000, 0u32..13, 0u32..32).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}T00:00:00Z")),
            Just("9999-12-31T23:59:59Z".to_string()),
            Just("1969-12-31T23:59:59.999Z".to_string()),
            Just("2026-03-01T12:00:00+14:00".to_string()),
        ];
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(
                |f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
            ),
            text.clone().prop_map(serde_json::Value::from),
        ];
        let key = prop_oneof![
            Just("type".to_string()),
            Just("userId".to_string()),
            Just("anonymousId".to_string()),
            Just("event".to_string()),
            Just("properties".to_string()),
            Just("traits".to_string()),
            Just("timestamp".to_string()),
            Just("sentAt".to_string()),
            Just("receivedAt".to_string()),
            Just("messageId".to_string()),
            Just("batch".to_string()),
            text,
        ];
        leaf.prop_recursive(4, 48, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..8)
                    .prop_map(|pairs| serde_json::Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    /// A few fields of a call (by the names intake reads), each with a
    /// hostile value: the mutations of a valid call.
    fn hostile_fields() -> impl proptest::strategy::Strategy<Value = Vec<(String, serde_json::Value)>> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("userId"),
            Just("messageId"),
            Just("timestamp"),
            Just("sentAt"),
            Just("receivedAt"),
            Just("event"),
            Just("type"),
            Just("properties"),
            Just("traits"),
        ]
        .prop_map(str::to_string);
        let value = prop_oneof![
            3 => "[\\x00-\\x1f\\x7f a-z\\u{80}-\\u{10ffff}]{0,12}".prop_map(serde_json::Value::from),
            3 => (250usize..262).prop_map(|n| serde_json::Value::from("u".repeat(n))),
            3 => (-2000i64..12000, 1u32..13, 1u32..29, 0i64..86_400_000).prop_map(|(y, m, d, ms)| {
                serde_json::Value::from(format!("{y:04}-{m:02}-{d:02}T00:00:00Z").replace("T00:00:00Z", &{
                    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
                    format!("T{h:02}:{:02}:{:02}.{:03}Z", rest / 60_000, rest % 60_000 / 1000, rest % 1000)
                }))
            }),
            1 => any::<i64>().prop_map(serde_json::Value::from),
            1 => hostile_value(),
            1 => Just(json!({"amount": "x"})),
            1 => (8180usize..8200).prop_map(|n| json!({"plan": "pro", "amount": 1, "name": "s".repeat(n)})),
        ];
        proptest::collection::vec((key, value), 1..4)
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 1024, failure_persistence: None, ..Default::default() })]

        /// `validate` never panics on any body; what it accepts obeys every
        /// limit; what it refuses is a 4xx naming a reason.
        #[test]
        fn validate_holds_its_limits_on_hostile_input(
            value in hostile_value(),
            wrap in 0u8..4,
            fields in hostile_fields(),
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            use crate::runtime::input::{ID_BYTES_MAX, TIME_MIN};
            let now = crate::runtime::trace::parse_time("2026-03-01T12:00:00Z").expect("time");
            // A valid call with some of its fields replaced by hostile ones.
            let mut mutated = json!({"type": "track", "userId": "a", "event": "purchase",
                "properties": {"amount": 1}, "timestamp": "2026-03-01T11:00:00Z", "messageId": "m1"});
            if let Some(call) = mutated.as_object_mut() {
                for (key, field) in fields {
                    call.insert(key, field);
                }
            }
            let body = match wrap {
                0 => value,
                1 => json!({"batch": [value.clone(), mutated.clone(), value]}),
                2 => json!({"batch": value}),
                _ => mutated,
            };
            let bytes = serde_json::to_vec(&body).expect("serializes");
            let bundle = bundle();
            for endpoint in [Endpoint::Track, Endpoint::Identify, Endpoint::Batch] {
                for input in [&bytes, &raw] {
                    match validate(endpoint, input, &bundle, now, DAY_MS) {
                        Ok(validated) => {
                            for call in &validated.calls {
                                proptest::prop_assert!(!call.customer.is_empty() && call.customer.len() <= ID_BYTES_MAX);
                                proptest::prop_assert!(!call.customer.chars().any(char::is_control));
                                let at = call.input.at();
                                proptest::prop_assert!((TIME_MIN..=now + DAY_MS).contains(&at), "{at}");
                                if let Some(id) = call.input.message_id() {
                                    proptest::prop_assert!(id.len() <= ID_BYTES_MAX && !id.chars().any(char::is_control));
                                }
                            }
                            for refused in &validated.refused {
                                proptest::prop_assert!(!refused.reason.is_empty());
                            }
                        }
                        Err(refusal) => {
                            proptest::prop_assert!(refusal.status.is_client_error(), "{refusal:?}");
                            proptest::prop_assert!(!refusal.reason.is_empty());
                        }
                    }
                }
            }
        }
    }
}
