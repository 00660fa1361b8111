use idempotent_runtime::axum::idempotent;

#[idempotent(headr = "x", ttl = "soon", cache = "some")]
fn create() -> &'static str {
    "created"
}

fn main() {}
