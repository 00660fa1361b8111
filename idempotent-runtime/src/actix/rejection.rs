//! actix-web's own refusals as problems of the catalogue (see
//! [`crate::problem`]): a `JsonConfig` whose errors are problems, and
//! default services for unknown paths and methods. An API whose idempotency
//! refusals are `application/problem+json` should not answer a malformed
//! body in `text/plain`:
//!
//! ```
//! use actix_web::{web, App, HttpResponse};
//! use idempotent_runtime::actix::{json_config, method_not_allowed, not_found};
//!
//! async fn create_payment() -> HttpResponse { HttpResponse::Created().finish() }
//!
//! let app = App::new()
//!     .app_data(json_config())
//!     .service(
//!         web::resource("/payments")
//!             .route(web::post().to(create_payment))
//!             .default_service(web::to(method_not_allowed("POST"))),
//!     )
//!     .default_service(web::to(not_found));
//! ```

use actix_web::error::{InternalError, JsonPayloadError};
use actix_web::http::header::{HeaderValue, ALLOW};
use actix_web::web::JsonConfig;
use actix_web::HttpResponse;

use super::problem_response;
use crate::problem::Problem;

/// A [`JsonConfig`] (install it with `App::app_data`) whose refusals are
/// problems: 415 `unsupported-media-type` without `Content-Type:
/// application/json`, 400 `malformed-body` for what is not JSON, 422
/// `invalid-body` for JSON of the wrong shape, 413 `request-too-large` over
/// the limit (actix-web's default, 2 MiB; set another with `.limit(..)`).
/// Each carries `Cache-Control: no-store`: under `#[idempotent]` the body is
/// extracted before the key is claimed, and behind a middleware form the
/// refusal is not stored, so the key stays free for the corrected request.
pub fn json_config() -> JsonConfig {
    JsonConfig::default().error_handler(|error, _req| {
        let answer = problem_response(problem_of(&error));
        InternalError::from_response(error, answer).into()
    })
}

/// The catalogue's problem for a JSON extractor's error.
pub(crate) fn problem_of(error: &JsonPayloadError) -> Problem {
    match error {
        JsonPayloadError::ContentType => Problem::unsupported_media_type("application/json"),
        JsonPayloadError::Deserialize(e) if e.classify() == serde_json::error::Category::Data => {
            Problem::invalid_body(e)
        }
        JsonPayloadError::Deserialize(e) => Problem::malformed_body(e),
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            Problem::body_too_large(error)
        }
        other => Problem::malformed_body(other),
    }
}

/// 404 `not-found`, for `App::default_service(web::to(not_found))`.
pub async fn not_found() -> Problem {
    Problem::not_found()
}

/// A handler answering 405 `method-not-allowed` with `Allow: <allow>`
/// (the resource's methods, `"GET, POST"`), for a resource's
/// `default_service(web::to(method_not_allowed("GET, POST")))`: actix-web
/// cannot tell a default service which methods its resource has.
pub fn method_not_allowed(
    allow: &'static str,
) -> impl Fn() -> std::future::Ready<HttpResponse> + Clone + 'static {
    move || {
        let mut answer = problem_response(Problem::method_not_allowed());
        answer
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        std::future::ready(answer)
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header;
    use actix_web::{test, web, App};

    use super::*;

    #[derive(serde::Deserialize)]
    struct Payment {
        #[allow(dead_code)]
        amount: u64,
    }

    async fn take(_: web::Json<Payment>) -> HttpResponse {
        HttpResponse::Created().finish()
    }

    #[actix_web::test]
    async fn rejections_are_problems() {
        let app = test::init_service(
            App::new()
                .app_data(json_config())
                .service(
                    web::resource("/payments")
                        .route(web::post().to(take))
                        .default_service(web::to(method_not_allowed("POST"))),
                )
                .default_service(web::to(not_found)),
        )
        .await;
        let json = Some("application/json");
        for (method, path, ct, body, status, kind) in [
            (
                "POST",
                "/payments",
                None,
                r#"{"amount":1}"#,
                415,
                "unsupported-media-type",
            ),
            (
                "POST",
                "/payments",
                Some("text/plain"),
                "{}",
                415,
                "unsupported-media-type",
            ),
            ("POST", "/payments", json, "{", 400, "malformed-body"),
            (
                "POST",
                "/payments",
                json,
                r#"{"amount":"one"}"#,
                422,
                "invalid-body",
            ),
            ("POST", "/payments", json, "{}", 422, "invalid-body"),
            ("PUT", "/payments", json, "{}", 405, "method-not-allowed"),
            ("GET", "/nowhere", None, "", 404, "not-found"),
        ] {
            let mut req = test::TestRequest::default()
                .method(method.parse().unwrap())
                .uri(path)
                .set_payload(body);
            if let Some(ct) = ct {
                req = req.insert_header((header::CONTENT_TYPE, ct));
            }
            let res = test::call_service(&app, req.to_request()).await;
            assert_eq!(res.status().as_u16(), status, "{method} {path} {body}");
            assert_eq!(
                res.headers().get(header::CONTENT_TYPE).unwrap(),
                crate::problem::CONTENT_TYPE
            );
            assert_eq!(
                res.headers().get(header::CACHE_CONTROL).unwrap(),
                "no-store"
            );
            if status == 405 {
                assert_eq!(res.headers().get(header::ALLOW).unwrap(), "POST");
            }
            let text = test::read_body(res).await;
            let text = String::from_utf8_lossy(&text);
            assert!(text.contains(&format!("#{kind}\"")), "{text}");
        }
    }
}
