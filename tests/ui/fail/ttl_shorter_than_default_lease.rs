use idempotent_runtime::axum::idempotent;

// The default `lease` (30s) would outlive this `ttl`: the runtime holds that
// default, so the check runs at compile time over the built options.
#[idempotent(ttl = "10s")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
