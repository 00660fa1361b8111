//! The one request life cycle: identify, claim, execute, store, replay.
//! Every adapter and the plain API go through here; nothing below is
//! framework-specific. One concern a module:
//!
//! | module | owns |
//! |---|---|
//! | `handle` | the runtime handle [`Idempotency`], its builder and the process-wide fallback |
//! | `plain` | the plain API ([`Idempotency::run`]) and the operator API (`lookup`, `forget`) |
//! | `claim` | identify the key and principal; claim the record or decide what to answer (replay, 409, 422, 503, wait) |
//! | `claimed` | the guard of a claimed request: run the handler, store fenced or release |
//! | `renewals` | lease renewals of running handlers, from the background thread |
//! | `capture` | which responses and headers are stored; reading a body for storage |
//! | `detach` | a handler whose client hangs up still runs to completion |
//! | `drain` | shutdown: no new claims, running handlers finish, the cut-off released |
//! | `transaction` | the handler's own database transaction, committed with its record |
//! | `exchange` | one HTTP request through all of it, as the framework adapters drive it |

mod capture;
mod claim;
mod claimed;
mod detach;
mod drain;
#[cfg(any(feature = "axum", feature = "actix"))]
mod exchange;
mod handle;
mod plain;
mod renewals;
mod transaction;

use std::time::Instant;

#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) use capture::ResponsePolicy;
pub(crate) use claim::Begin;
pub(crate) use claimed::{Claimed, Diverted};
pub(crate) use detach::finish_even_if_dropped;
#[cfg(feature = "actix")]
pub(crate) use detach::finish_even_if_dropped_local;
pub use drain::Drained;
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) use exchange::{is_safe_method, Body, Exchange, Framework, Step};
// Only axum drains a refused body itself; actix-web's own payload handling
// does.
#[cfg(feature = "axum")]
pub(crate) use exchange::{drain_in_background, Refused, Unread};
pub use handle::{Idempotency, IdempotencyBuilder, NotReady, SharedStoreRequired};
pub use plain::Outcome;
pub(crate) use transaction::TxCell;
#[cfg_attr(not(feature = "postgres"), allow(unused_imports))]
pub(crate) use transaction::{BoxFuture, Completion, OpenTx};

use crate::config::HandlerConfig;

/// The one tracing event per request: its outcome, scope and time taken
/// (never the key). With the `metrics` feature, the same event counts in
/// `idempotent_requests_total` (see [`crate::metrics`] for every outcome).
pub(crate) fn trace(config: &HandlerConfig, outcome: &'static str, started: Instant) {
    tracing::info!(
        target: "idempotent",
        scope = config.scope,
        outcome,
        elapsed_us = started.elapsed().as_micros() as u64,
    );
    #[cfg(feature = "metrics")]
    crate::metrics::request(config.scope, outcome);
}

#[cfg(all(test, feature = "memory"))]
mod tests;
