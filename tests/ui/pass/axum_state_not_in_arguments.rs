#![deny(warnings)]
//! Extractors that need the router's state, in handlers without a `State<T>`
//! argument: not checked against a guessed state (they extract once routed),
//! or checked with the state written as `state = ...`.
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use idempotent_runtime::axum::idempotent;

#[derive(Clone)]
struct AppState {
    pool: Pool,
}

#[derive(Clone)]
struct Pool;

impl FromRef<AppState> for Pool {
    fn from_ref(state: &AppState) -> Pool {
        state.pool.clone()
    }
}

/// Extracts only with `AppState`.
struct AuthUser(u32);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = StatusCode;

    async fn from_request_parts(_: &mut Parts, _: &AppState) -> Result<Self, StatusCode> {
        Ok(AuthUser(7))
    }
}

#[idempotent(scope = "unknown-state")]
async fn unknown(user: AuthUser, Json(n): Json<u64>) -> String {
    format!("{} {n}", user.0)
}

#[idempotent(scope = "unknown-state-last")]
async fn unknown_last(user: AuthUser) -> String {
    user.0.to_string()
}

#[idempotent(scope = "written-state", state = AppState)]
async fn written(user: AuthUser, Json(n): Json<u64>) -> String {
    format!("{} {n}", user.0)
}

#[idempotent(scope = "written-substate", state = AppState)]
async fn substate(State(_pool): State<Pool>, user: AuthUser) -> String {
    user.0.to_string()
}

fn routes() -> Router<AppState> {
    Router::new()
        .route("/unknown", post(unknown))
        .route("/unknown-last", post(unknown_last))
        .route("/written", post(written))
        .route("/substate", post(substate))
}

fn main() {
    let _app: Router = routes().with_state(AppState { pool: Pool });
}
