//! `state` names the router's state; an extractor that needs another one
//! fails on its type.
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use idempotent_runtime::axum::idempotent;

#[derive(Clone)]
struct AppState;

#[derive(Clone)]
struct AdminState;

struct AuthUser;

impl FromRequestParts<AdminState> for AuthUser {
    type Rejection = StatusCode;

    async fn from_request_parts(_: &mut Parts, _: &AdminState) -> Result<Self, StatusCode> {
        Ok(AuthUser)
    }
}

#[idempotent(state = AppState)]
async fn create(_user: AuthUser, body: String) -> String {
    body
}

fn main() {}
