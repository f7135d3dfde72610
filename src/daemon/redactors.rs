//! `GET /v1/redactors` and `DELETE /v1/redactors/ID`: the data
//! directories whose JSONL sinks every erasure mark waits for on
//! PostgreSQL (`erasure.rs`, `docs/scale-out.md` "Erasure across nodes"),
//! and retiring one for good. Served by every node alike (the owner and a
//! standby), outside the lease: they read and write the database only.
//!
//! A mark is dropped only once every registered redactor has redacted its
//! files for it, so a data directory that will never start again (its
//! machine gone) would keep every later mark forever. Retiring it lets the
//! marks go; a daemon started again on a retired directory is refused
//! ([`Pg::register_redactor`](super::kv::pg::Pg::register_redactor)),
//! since its files may hold sends of customers erased after it was retired.

use super::kv::Kv;
use super::reply::error;
use super::store::Store;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

const ON_SLED: &str = "redactors are kept on PostgreSQL only: on sled the one daemon redacts its own files";

fn postgres(store: &Store) -> Option<&super::kv::pg::Pg> {
    match &store.db {
        Kv::Postgres(pg) => Some(pg),
        _ => None,
    }
}

/// Every registered redactor, oldest first, with the marks each has not
/// redacted yet.
fn list(store: &Store) -> Response {
    let Some(pg) = postgres(store) else {
        return error(StatusCode::NOT_FOUND, "", ON_SLED);
    };
    match pg.redactors() {
        Ok(redactors) => Json(json!({ "redactors": redactors })).into_response(),
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, "", failure.to_string()),
    }
}

/// Retires redactor `id`: 404 if there is none, 409 if retired already.
fn retire(store: &Store, id: &str) -> Response {
    let Some(pg) = postgres(store) else {
        return error(StatusCode::NOT_FOUND, "", ON_SLED);
    };
    match pg.retire_redactor(id) {
        Ok(Ok(retired_at)) => {
            tracing::warn!(redactor = %id, "redactor retired: no erasure mark waits for its files any more");
            Json(json!({ "success": true, "redactor": id, "retired_at": retired_at })).into_response()
        }
        Ok(Err(None)) => error(StatusCode::NOT_FOUND, "redactor", format!("no redactor {id}")),
        Ok(Err(Some(at))) => error(
            StatusCode::CONFLICT,
            "redactor",
            format!("redactor {id} was retired already, at {at}"),
        ),
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, "", failure.to_string()),
    }
}

pub async fn owner_list(State(state): State<super::http::AppState>) -> Response {
    list(&state.store)
}

pub async fn owner_retire(State(state): State<super::http::AppState>, Path(id): Path<String>) -> Response {
    retire(&state.store, &id)
}

pub async fn standby_list(State(standby): State<Arc<super::http::Standby>>) -> Response {
    list(&standby.store)
}

pub async fn standby_retire(State(standby): State<Arc<super::http::Standby>>, Path(id): Path<String>) -> Response {
    retire(&standby.store, &id)
}
