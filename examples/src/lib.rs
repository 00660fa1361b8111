//! What the example programs share. `axum-payments` and `actix-payments`
//! only add their framework's routing around it, so both serve the same
//! payment API (`POST /payments`, `GET /payments`, `POST /payments/batch`)
//! and answer it alike.
//!
//! Three stores (`--store`): `memory` (this process), `redis` (records and
//! payments in one Redis, shared by several processes) and `postgres`
//! (records and payments in one database, the payment written in the
//! handler's own transaction, which commits together with its idempotency
//! record: the handler takes `Option<Tx>`, a `Tx` where the store has one).
//!
//! | module | what |
//! |---|---|
//! | `payments` | the payment model, and where payments live per store |
//! | `batch` | `POST /payments/batch`, through the plain API |
//! | `cli` | the command line and the backends it selects |
//! | `lease` | [`LeaseOverride`], `--lease-secs` |
//! | `shutdown` | signals and the drain deadline |
//! | `observability` | `/metrics`, `/openapi.json`, `/ready` |
//! | `orders` | `orders-consumer`: the order function behind JetStream, RabbitMQ and HTTP |

mod batch;
mod cli;
mod lease;
pub mod observability;
pub mod orders;
mod payments;
mod shutdown;

pub use batch::{run_batch, Batch, BatchItem, BatchResult};
pub use cli::{flags, usage, Backend, Options, BACKEND_USAGE};
pub use lease::LeaseOverride;
pub use payments::{
    failure_body, retry_after, NewPayment, Payment, PaymentFailure, Payments, IDEMPOTENCY_TABLE,
    PAYMENTS_TABLE,
};
pub use shutdown::{report_drain, shutdown_signal, DRAIN_DEADLINE};
