#![deny(warnings)]
//! The README's `Tx` handlers, on both frameworks.

#[derive(serde::Deserialize)]
struct NewPayment {
    amount: i64,
}

mod on_axum {
    use axum::{http::StatusCode, Json};
    use idempotent_runtime::axum::idempotent;
    use idempotent_runtime::tx::Tx;

    use super::NewPayment;

    #[idempotent(scope = "payments")]
    pub async fn create_payment(mut tx: Tx, Json(p): Json<NewPayment>) -> Result<StatusCode, StatusCode> {
        sqlx::query("INSERT INTO payments (amount) VALUES ($1)")
            .bind(p.amount)
            .execute(&mut tx)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        Ok(StatusCode::CREATED)
    }
}

mod on_actix {
    use actix_web::{web, HttpResponse};
    use idempotent_runtime::actix::idempotent;
    use idempotent_runtime::tx::Tx;

    use super::NewPayment;

    #[idempotent(scope = "payments")]
    pub async fn create_payment(mut tx: Tx, p: web::Json<NewPayment>) -> actix_web::Result<HttpResponse> {
        sqlx::query("INSERT INTO payments (amount) VALUES ($1)")
            .bind(p.amount)
            .execute(&mut tx)
            .await
            .map_err(actix_web::error::ErrorInternalServerError)?;
        Ok(HttpResponse::Created().finish())
    }
}

fn main() {
    let _axum: axum::Router = axum::Router::new().route("/payments", axum::routing::post(on_axum::create_payment));
    let _actix = actix_web::App::new().route("/payments", actix_web::web::post().to(on_actix::create_payment));
    assert_eq!(idempotent_runtime::handler_config(on_axum::create_payment).scope(), "payments");
    assert_eq!(idempotent_runtime::handler_config(on_actix::create_payment).scope(), "payments");
}
