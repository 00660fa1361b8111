#![deny(warnings)]
use axum::routing::post;
use axum::{Form, Router};
use idempotent_runtime::axum::idempotent;

#[derive(serde::Deserialize)]
struct Order {
    item: String,
}

#[idempotent]
async fn order(Form(order): Form<Order>) -> String {
    order.item
}

fn main() {
    let _app: Router = Router::new().route("/orders", post(order));
}
