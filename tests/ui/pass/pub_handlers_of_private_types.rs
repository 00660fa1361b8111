#![deny(warnings)]
//! `pub` handlers whose argument types are private to their module. On
//! actix-web the handler is used from another module (its signature names
//! none of the user's types); on axum, as without the attribute, within
//! its own.

mod actix_handlers {
    use actix_web::{web, HttpResponse};
    use idempotent_runtime::actix::idempotent;

    #[derive(serde::Deserialize)]
    struct NewPayment {
        amount: u64,
    }

    #[idempotent(scope = "payments")]
    pub async fn create_payment(p: web::Json<NewPayment>) -> HttpResponse {
        HttpResponse::Created().body(p.amount.to_string())
    }
}

mod axum_handlers {
    use axum::Json;
    use idempotent_runtime::axum::idempotent;

    #[derive(serde::Deserialize)]
    struct NewPayment {
        amount: u64,
    }

    #[idempotent(scope = "payments")]
    pub async fn create_payment(Json(p): Json<NewPayment>) -> String {
        p.amount.to_string()
    }

    pub fn router() -> axum::Router {
        assert_eq!(idempotent_runtime::handler_config(create_payment).scope(), "payments");
        axum::Router::new().route("/payments", axum::routing::post(create_payment))
    }
}

fn main() {
    let _actix = actix_web::App::new().route(
        "/payments",
        actix_web::web::post().to(actix_handlers::create_payment),
    );
    let _axum = axum_handlers::router();
    assert_eq!(idempotent_runtime::handler_config(actix_handlers::create_payment).scope(), "payments");
}
