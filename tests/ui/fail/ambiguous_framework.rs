// With both the `axum` and `actix` features on, the root path cannot know
// which framework a handler is for.
use idempotent_runtime::idempotent;

#[idempotent(scope = "payments")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
