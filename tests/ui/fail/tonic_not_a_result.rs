use idempotent_runtime::tonic::idempotent;
use tonic::{Request, Response};

pub struct Payments;

impl Payments {
    #[idempotent(scope = "payments")]
    pub async fn create(&self, request: Request<u64>) -> Response<u64> {
        Response::new(request.into_inner())
    }
}

fn main() {}
