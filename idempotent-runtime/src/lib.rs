//! Idempotent HTTP handlers with one attribute.
//!
//! A client sends a unique `Idempotency-Key` with a request. The first request
//! with that key runs the handler and its response is stored; every retry with
//! the same key and the same payload gets the stored response back instead of a
//! second payment, transfer or order.
//!
//! ```
//! use axum::{http::StatusCode, Json};
//! use idempotent_runtime::idempotent;
//! # #[derive(serde::Deserialize)] struct NewPayment { amount: u64 }
//!
//! #[idempotent(header = "Idempotency-Key", ttl = "24h", scope = "payments")]
//! async fn create_payment(Json(req): Json<NewPayment>) -> (StatusCode, String) {
//!     // runs at most once per key; retries get the stored response
//!     (StatusCode::CREATED, format!("paid {}", req.amount))
//! }
//! ```
//!
//! | situation | answer |
//! |---|---|
//! | first request with a key | the handler runs; its response is stored and answered |
//! | retry, same payload, first one done | the stored status, headers and body, plus `Idempotent-Replayed: true` |
//! | retry while the first still runs | 409 with `Retry-After` (or wait, with `on_conflict = "wait"`) |
//! | same key, different payload | 422 |
//! | key missing / invalid | 400 |
//! | store unreachable or full | 503 with `Retry-After`; the handler does not run |
//!
//! Errors are RFC 9457 problem details; see [`problem`] for every type.
//!
//! # Crate layout
//! - [`idempotent`]: the attribute (feature `macros`, on by default).
//! - [`axum`]: the axum adapter (feature `axum`).
//! - [`store`]: the [`Store`](store::Store) contract and the
//!   [`MemoryStore`](store::memory::MemoryStore) (feature `memory`, on by default).
//! - [`Idempotency`]: the runtime handle; its [`run`](Idempotency::run) method is
//!   the plain API for idempotency without the attribute.
#![warn(missing_docs)]
// Request parsing helpers are used by the adapters only.
#![cfg_attr(not(feature = "axum"), allow(dead_code))]

mod config;
mod fingerprint;
mod key;
mod lifecycle;
pub mod problem;
mod record;
pub mod store;

#[cfg(feature = "axum")]
pub mod axum;

pub use config::{CachePolicy, HandlerConfig, Limits, OnConflict, Principal, RequestHead};
pub use fingerprint::{Fingerprint, RecordId};
pub use key::{IdempotencyKey, KeyError, DEFAULT_MAX_KEY_LEN};
pub use lifecycle::{Idempotency, IdempotencyBuilder, Outcome};
pub use problem::Problem;
pub use record::{DecodeError, OwnerToken, Record, StoredResponse, RECORD_FORMAT_VERSION};

/// Makes an axum handler idempotent. See the [crate docs](crate) and the README
/// for every argument.
#[cfg(feature = "macros")]
#[doc(inline)]
pub use idempotent_macros::idempotent;

/// What generated code calls. Not public API: no stability promise.
#[doc(hidden)]
pub mod __private {
    pub use crate::config::{CachePolicy, HandlerConfig, OnConflict, Principal};
    pub use core::time::Duration;

    #[cfg(feature = "axum")]
    pub use crate::axum::__private::HandlerSpec;

    /// The axum side of generated handlers.
    #[cfg(feature = "axum")]
    pub mod axum {
        pub use crate::axum::__private::{run, Extract, Response};
    }

    /// Turns a missing `axum` feature into one clear error.
    #[cfg(not(feature = "axum"))]
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __require_axum_feature {
        () => {
            ::core::compile_error!("`#[idempotent]` on an axum handler needs the `axum` feature of idempotent-runtime: idempotent-runtime = { version = \"0.1\", features = [\"axum\"] }");
        };
    }
    #[cfg(feature = "axum")]
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __require_axum_feature {
        () => {};
    }
    pub use crate::__require_axum_feature as require_axum_feature;
}
