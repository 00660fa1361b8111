//! `orders-consumer`: one `#[idempotent]` order function, served through
//! three doors: a JetStream pull consumer, a RabbitMQ consumer and an HTTP
//! route. Each door stays visible (fetch, handle, ack, nak or term): the
//! attribute makes the function idempotent, it does not hide the broker.
//!
//! | module | what |
//! |---|---|
//! | this one | the order, the function, and what a broker does with its result |
//! | `nats` | the JetStream pull consumer |
//! | `rabbitmq` | the RabbitMQ consumer |
//! | `http` | `POST /payments`, `GET /payments`, `GET /metrics` |

pub mod http;
pub mod nats;
pub mod rabbitmq;

use std::sync::Arc;
use std::time::Duration;

use idempotent_runtime::tx::Tx;
use idempotent_runtime::{idempotent, ErrorKind, Idempotency, IdempotencyError};
use serde::{Deserialize, Serialize};

use crate::{NewPayment, Payment, Payments};

/// A message: `{"key": str, "amount": int, "currency": str}`, with the test
/// knobs `hold_ms` and `fail`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// The order's idempotency key.
    pub key: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
    /// Once the payment is written, sleep this long (with `--store
    /// postgres`: inside the still-uncommitted transaction).
    #[serde(default)]
    pub hold_ms: u64,
    /// The function fails: nothing is stored and the broker redelivers.
    #[serde(default)]
    pub fail: bool,
}

/// Why an order was not paid.
#[derive(Debug)]
pub enum OrderError {
    /// The life cycle refused the call (in progress, store down, key reused…).
    Refused(IdempotencyError),
    /// The order failed (`"fail": true`), or the payment could not be made
    /// (the status it would answer over HTTP).
    Failed(u16),
}

impl From<IdempotencyError> for OrderError {
    fn from(e: IdempotencyError) -> Self {
        OrderError::Refused(e)
    }
}

/// What the consumer works with.
pub struct App {
    /// The runtime (its store is the one `--store` chose).
    pub idempotency: Idempotency,
    /// Where payments go.
    pub payments: Payments,
}

/// Pays an order, once per key, whichever door it came through and however
/// often it is delivered. With `--store postgres` the payment is inserted
/// through `tx`, and the record commits in that same transaction: exactly
/// one payment per key, whatever crashes. The fingerprint covers what the
/// order asks for, not its test knobs.
#[idempotent(
    key = order.key,
    scope = "orders",
    store = app.idempotency,
    fingerprint = (order.amount, &order.currency)
)]
pub async fn place_order(
    app: Arc<App>,
    order: Order,
    tx: Option<Tx>,
) -> Result<Payment, OrderError> {
    if order.fail {
        return Err(OrderError::Failed(500));
    }
    let payment = NewPayment {
        hold_ms: order.hold_ms,
        ..NewPayment::new(order.amount, order.currency)
    };
    app.payments
        .create(tx, payment)
        .await
        .map_err(OrderError::Failed)
}

/// What a consumer does with a message once the function answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Paid (now or before): acknowledge.
    Ack,
    /// Not now (a duplicate still running, the store unreachable, the order
    /// failed): have it redelivered after this delay.
    Retry(Duration),
    /// Never (the key reused for another order, an invalid key): stop
    /// redelivering it.
    Drop,
}

/// How long a message that may succeed later waits before it is
/// redelivered, unless the refusal says.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

impl Verdict {
    /// The verdict on a result of [`place_order`].
    pub fn of(result: &Result<Payment, OrderError>) -> Verdict {
        match result {
            Ok(_) => Verdict::Ack,
            Err(OrderError::Refused(e)) => match e.kind() {
                // It ran before; its result cannot be replayed, but it is done.
                ErrorKind::TooLarge => Verdict::Ack,
                ErrorKind::KeyReused | ErrorKind::InvalidKey => Verdict::Drop,
                _ => Verdict::Retry(e.retry_after().unwrap_or(RETRY_DELAY)),
            },
            Err(OrderError::Failed(_)) => Verdict::Retry(RETRY_DELAY),
        }
    }
}

/// Decodes a message; `None` for one that is not an order (it is dropped,
/// never redelivered forever).
pub fn decode(payload: &[u8]) -> Option<Order> {
    serde_json::from_slice(payload).ok()
}

/// The verdict on a message, after handling it: decoded, then paid through
/// [`place_order`].
pub async fn handle(app: &Arc<App>, payload: &[u8]) -> Verdict {
    let Some(order) = decode(payload) else {
        tracing::warn!(target: "orders", "a message that is not an order; dropped");
        return Verdict::Drop;
    };
    Verdict::of(&place_order(app.clone(), order).await)
}

/// How many messages a consumer handles at once (its prefetch).
pub const IN_FLIGHT: usize = 32;
