use idempotent_runtime::tonic::idempotent;
use tonic::{Request, Response, Status, Streaming};

pub struct Uploads;

impl Uploads {
    #[idempotent(scope = "uploads")]
    pub async fn upload(&self, request: Request<Streaming<u64>>) -> Result<Response<u64>, Status> {
        let _ = request;
        Ok(Response::new(1))
    }
}

fn main() {}
