use idempotent_runtime::actix::idempotent;

#[derive(Clone)]
struct AppState;

#[idempotent(state = AppState)]
async fn create() -> &'static str {
    "created"
}

fn main() {}
