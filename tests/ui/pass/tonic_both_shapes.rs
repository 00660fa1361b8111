#![deny(warnings)]
//! `#[idempotent]` on tonic methods in both shapes it meets: inside a
//! `#[tonic::async_trait]` impl (which expands first, so the attribute sees
//! the boxed future it wrote), and on a plain `async fn` (the shape it sees
//! when nothing expanded before it). The service of the conformance app is
//! the first; this file adds an inherent method and a trait of its own.

use idempotent_runtime::tonic::idempotent;
use idempotent_runtime::tx::Tx;
use tonic::{Request, Response, Status};

pub struct Service;

impl Service {
    #[idempotent(scope = "plain", on_conflict = "wait")]
    pub async fn plain(&self, request: Request<u64>) -> Result<Response<u64>, Status> {
        Ok(Response::new(request.into_inner() * 2))
    }
}

#[tonic::async_trait]
pub trait Doubler: Send + Sync + 'static {
    async fn double(&self, request: Request<u64>) -> Result<Response<u64>, Status>;
    async fn store(&self, request: Request<u64>) -> Result<Response<u64>, Status>;
}

#[tonic::async_trait]
impl Doubler for Service {
    #[idempotent(key = request.get_ref().to_string(), scope = "double")]
    async fn double(&self, request: Request<u64>) -> Result<Response<u64>, Status> {
        self.plain(request).await
    }

    /// With a `Tx` the trait does not declare.
    #[idempotent]
    async fn store(&self, request: Request<u64>, mut tx: Tx) -> Result<Response<u64>, Status> {
        sqlx::query("SELECT 1")
            .execute(&mut tx)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(request.into_inner()))
    }
}

fn main() {}
