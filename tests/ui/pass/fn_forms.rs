#![deny(warnings)]
//! The function form on every kind of `async fn`: free, inherent method,
//! trait-impl method under `#[async_trait]`, generic; with `store`,
//! `fingerprint`, `cache = "all"`, an aliased `Result` and a `Tx`.

use std::sync::Arc;

use idempotent_runtime::tx::Tx;
use idempotent_runtime::{idempotent, Idempotency, IdempotencyError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub tenant: u32,
    pub lines: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub struct Receipt {
    pub charged: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum OrderError {
    Refused(String),
    OutOfStock,
}

impl From<IdempotencyError> for OrderError {
    fn from(e: IdempotencyError) -> Self {
        OrderError::Refused(e.to_string())
    }
}

/// A free function; `?` and early `return` keep working.
#[idempotent(key = order.id, scope = "orders", ttl = "7d")]
pub async fn place(order: Order) -> Result<Receipt, OrderError> {
    if order.lines.is_empty() {
        return Err(OrderError::OutOfStock);
    }
    let charged = order.lines.len().try_into().map_err(|_| OrderError::OutOfStock)?;
    Ok(Receipt { charged })
}

/// A key built from several arguments; errors stored too.
#[idempotent(key = format!("{}:{}", tenant, id), cache = "all", fingerprint = false)]
pub async fn cancel(tenant: u32, id: String) -> Result<(), OrderError> {
    let _ = (tenant, id);
    Ok(())
}

/// The crate's own `Result` alias.
pub type OrderResult<T> = Result<T, OrderError>;

/// An aliased `Result`.
#[idempotent(key = id, scope = "aliased")]
pub async fn read(id: u64) -> OrderResult<u64> {
    Ok(id)
}

/// A generic function.
#[idempotent(key = key, scope = "generic")]
pub async fn echo<T: Serialize + Send>(key: String, value: T) -> Result<String, IdempotencyError> {
    let _ = value;
    Ok(key)
}

pub struct Consumer {
    idempotency: Idempotency,
    shared: Arc<Idempotency>,
}

impl Consumer {
    /// An inherent method naming its runtime.
    #[idempotent(key = order.id, scope = "consumer", store = self.idempotency, fingerprint = order.lines)]
    pub async fn handle(&self, order: Order) -> Result<Receipt, OrderError> {
        let _ = &self.shared;
        Ok(Receipt { charged: order.lines.len() as u64 })
    }

    /// A runtime in an `Arc`, and one taken by value.
    #[idempotent(key = id, scope = "consumer-arc", store = self.shared)]
    pub async fn handle_owned(self: Arc<Self>, id: u64) -> Result<u64, OrderError> {
        Ok(id)
    }
}

#[async_trait::async_trait]
pub trait Handler {
    async fn handle(&self, order: Order) -> Result<Receipt, OrderError>;
}

#[async_trait::async_trait]
impl Handler for Consumer {
    /// A trait method under `#[async_trait]`, with a `Tx` the trait does not
    /// declare: the runtime hands it over.
    #[idempotent(key = order.id, scope = "consumer-trait", store = self.idempotency)]
    async fn handle(&self, order: Order, mut tx: Tx) -> Result<Receipt, OrderError> {
        sqlx::query("SELECT 1")
            .execute(&mut tx)
            .await
            .map_err(|e| OrderError::Refused(e.to_string()))?;
        Ok(Receipt { charged: order.lines.len() as u64 })
    }
}

fn main() {
    let _ = (place, cancel, read, echo::<u8>);
}
