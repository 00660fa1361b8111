#![deny(warnings)]
//! Extractors that need the router's state: checked with the state of the
//! handler's `State<T>` argument, and not checked at all when the handler
//! takes several states (substates), which only the router can tell apart.
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
struct Account(u32);

impl FromRequestParts<AppState> for Account {
    type Rejection = StatusCode;

    async fn from_request_parts(_: &mut Parts, _: &AppState) -> Result<Self, StatusCode> {
        Ok(Account(7))
    }
}

#[idempotent(scope = "concrete-state")]
async fn concrete(State(_state): State<AppState>, account: Account, Json(n): Json<u64>) -> String {
    format!("{} {n}", account.0)
}

#[idempotent(scope = "substates")]
async fn substates(State(_state): State<AppState>, State(_pool): State<Pool>, account: Account) -> String {
    account.0.to_string()
}

fn main() {
    let _app: Router = Router::new()
        .route("/concrete", post(concrete))
        .route("/substates", post(substates))
        .with_state(AppState { pool: Pool });
}
