#![deny(warnings)]
#![deny(missing_docs)]
//! Handlers keep their docs, visibility and attributes.

mod handlers {
    use axum::Json;
    use idempotent_runtime::axum::idempotent;

    /// Creates a refund.
    ///
    /// Runs at most once per key.
    #[idempotent(scope = "refunds")]
    #[allow(clippy::needless_return)]
    #[must_use]
    pub(crate) async fn refund(Json(mut amounts): Json<Vec<u32>>) -> Json<u32> {
        amounts.sort_unstable();
        let (first, _rest) = amounts.split_at(amounts.len().min(1));
        return Json(first.iter().sum());
    }

    /// Public handlers work too.
    #[idempotent(scope = "public-refunds")]
    pub async fn public_refund(Json(n): Json<u32>) -> Json<u32> {
        Json(n)
    }
}

fn main() {
    use axum::routing::post;
    let _app: axum::Router = axum::Router::new()
        .route("/refunds", post(handlers::refund))
        .route("/public-refunds", post(handlers::public_refund));
}
