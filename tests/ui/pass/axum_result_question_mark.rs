#![deny(warnings)]
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use idempotent_runtime::axum::idempotent;

struct AppError(String);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, self.0).into_response()
    }
}

impl From<std::num::ParseIntError> for AppError {
    fn from(e: std::num::ParseIntError) -> Self {
        AppError(e.to_string())
    }
}

#[idempotent(scope = "transfers")]
async fn transfer(Json(req): Json<serde_json::Value>) -> Result<(StatusCode, Json<u64>), AppError> {
    let raw = req["amount"].as_str().ok_or_else(|| AppError("amount".into()))?;
    let amount: u64 = raw.parse()?;
    if amount == 0 {
        return Err(AppError("zero".into()));
    }
    Ok((StatusCode::CREATED, Json(amount)))
}

fn main() {
    let _app: Router = Router::new().route("/transfers", post(transfer));
}
