use idempotent_runtime::tonic::idempotent;
use tonic::{Request, Response, Status};

pub struct Payments;

impl Payments {
    #[idempotent(header = "x-request-id", key = request.get_ref().to_string())]
    pub async fn create(&self, request: Request<u64>) -> Result<Response<u64>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

fn main() {}
