//! axum's own refusals as problems of the catalogue (see [`crate::problem`]):
//! a JSON body extractor whose rejections are problems, and fallbacks for
//! unknown paths and methods. An API whose idempotency refusals are
//! `application/problem+json` should not answer a malformed body in
//! `text/plain`:
//!
//! ```
//! use axum::routing::post;
//! use axum::Router;
//! use idempotent_runtime::axum::{idempotent, method_not_allowed, not_found, ProblemJson};
//! # #[derive(serde::Deserialize)] struct NewPayment { amount: u64 }
//!
//! #[idempotent(scope = "payments")]
//! async fn create_payment(ProblemJson(p): ProblemJson<NewPayment>) -> String {
//!     format!("paid {}", p.amount)
//! }
//!
//! let app: Router = Router::new()
//!     .route("/payments", post(create_payment))
//!     .fallback(not_found)
//!     .method_not_allowed_fallback(method_not_allowed);
//! ```

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};

use crate::problem::Problem;

/// axum's [`Json`](axum::Json) extractor, refusing with problems: 415
/// `unsupported-media-type` without `Content-Type: application/json`, 400
/// `malformed-body` for what is not JSON, 422 `invalid-body` for JSON of
/// the wrong shape, 413 `request-too-large` over the body limit. Each
/// carries `Cache-Control: no-store`: under `#[idempotent]` the body is
/// extracted before the key is claimed, and behind a middleware form the
/// refusal is not stored, so the key stays free for the corrected request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProblemJson<T>(pub T);

impl<T, S> FromRequest<S> for ProblemJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ProblemJson(value)),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

/// A rejection of axum's `Json` as the catalogue's problem (see
/// [`ProblemJson`]), for handlers that take `Result<Json<T>,
/// JsonRejection>` or a `WithRejection` of their own.
impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status().as_u16() {
            415 => Problem::unsupported_media_type("application/json"),
            422 => Problem::invalid_body(rejection.body_text()),
            413 => Problem::body_too_large(rejection.body_text()),
            _ => Problem::malformed_body(rejection.body_text()),
        }
    }
}

/// 404 `not-found`, for [`Router::fallback`](axum::Router::fallback).
pub async fn not_found() -> Problem {
    Problem::not_found()
}

/// 405 `method-not-allowed`, for
/// [`Router::method_not_allowed_fallback`](axum::Router::method_not_allowed_fallback).
pub async fn method_not_allowed() -> Problem {
    Problem::method_not_allowed()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use axum::Router;
    use http_body_util::BodyExt;
    use tower_service::Service;

    use super::*;

    #[derive(serde::Deserialize)]
    struct Payment {
        #[allow(dead_code)]
        amount: u64,
    }

    async fn take(ProblemJson(_): ProblemJson<Payment>) -> StatusCode {
        StatusCode::CREATED
    }

    async fn answer(content_type: Option<&str>, body: &'static str) -> (u16, String, String) {
        let mut app: Router = Router::new()
            .route("/payments", post(take))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed);
        let mut req = Request::post("/payments");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let res = app
            .call(req.body(Body::from(body)).unwrap())
            .await
            .unwrap()
            .into_response();
        let status = res.status().as_u16();
        let ct = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn body_rejections_are_problems() {
        let json = Some("application/json");
        for (ct, body, status, kind) in [
            (None, r#"{"amount":1}"#, 415, "unsupported-media-type"),
            (
                Some("text/plain"),
                r#"{"amount":1}"#,
                415,
                "unsupported-media-type",
            ),
            (json, "{", 400, "malformed-body"),
            (json, "", 400, "malformed-body"),
            (json, r#"{"amount":"one"}"#, 422, "invalid-body"),
            (json, "{}", 422, "invalid-body"),
        ] {
            let (got, content_type, text) = answer(ct, body).await;
            assert_eq!(got, status, "{ct:?} {body}: {text}");
            assert_eq!(content_type, crate::problem::CONTENT_TYPE);
            assert!(text.contains(&format!("#{kind}\"")), "{text}");
        }
        assert_eq!(answer(json, r#"{"amount":1}"#).await.0, 201);
    }
}
