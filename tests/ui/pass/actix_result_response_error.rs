#![deny(warnings)]
use actix_web::{http::StatusCode, web, App, HttpResponse, ResponseError};
use idempotent_runtime::actix::idempotent;

#[derive(Debug)]
struct AppError(String);

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

impl From<std::num::ParseIntError> for AppError {
    fn from(e: std::num::ParseIntError) -> Self {
        AppError(e.to_string())
    }
}

/// Transfers money at most once per key.
#[idempotent(scope = "transfers", on_conflict = "wait", wait = "5s", cache = "success")]
pub(crate) async fn transfer(amount: String) -> Result<HttpResponse, AppError> {
    let amount: u64 = amount.trim().parse()?;
    if amount == 0 {
        return Err(AppError("zero".into()));
    }
    Ok(HttpResponse::Created().body(amount.to_string()))
}

fn main() {
    let _app = App::new().route("/transfers", web::post().to(transfer));
}
