//! Idempotent HTTP handlers with one attribute.
//!
//! A client sends a unique `Idempotency-Key` with a request. The first request
//! with that key runs the handler and its response is stored; every retry with
//! the same key and the same payload gets the stored response back instead of a
//! second payment, transfer or order.
//!
//! ```
//! use axum::{http::StatusCode, Json};
//! use idempotent_runtime::axum::idempotent;
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
//! - `idempotent`: the attribute (feature `macros`, on by default), as
//!   `idempotent_runtime::axum::idempotent` or `idempotent_runtime::actix::idempotent`;
//!   `idempotent_runtime::idempotent` is whichever one framework feature is on.
//! - [`axum`]: the axum 0.8 adapter (feature `axum`).
//! - [`actix`]: the actix-web 4 adapter (feature `actix`).
//! - [`store`]: the [`Store`](store::Store) contract and the
//!   [`MemoryStore`](store::memory::MemoryStore) (feature `memory`, on by default).
//! - [`Idempotency`]: the runtime handle; its [`run`](Idempotency::run) method is
//!   the plain API for idempotency without the attribute, and its
//!   [`ready`](Idempotency::ready) method answers readiness probes.
//! - `metrics` (feature `metrics`): counters and histograms through the
//!   `metrics` facade, named in one table.
//! - `openapi` (feature `openapi`): what an idempotent operation adds to an
//!   OpenAPI document (utoipa).
//! - `KeyRing` (feature `encryption`): stored responses sealed at rest, see
//!   `IdempotencyBuilder::encryption`.
#![warn(missing_docs)]
// Request parsing helpers are used by the adapters only.
#![cfg_attr(not(any(feature = "axum", feature = "actix")), allow(dead_code))]

mod background;
mod config;
mod error;
mod fingerprint;
pub mod function;
mod handed;
mod key;
mod lifecycle;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod problem;
mod record;
mod seal;
pub mod store;
#[cfg(feature = "postgres")]
pub mod tx;

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "tonic")]
pub mod tonic;
#[cfg(any(feature = "axum", feature = "tonic"))]
mod tower;

pub use config::{
    handler_config, AttributeHandler, CachePolicy, HandlerConfig, Limits, OnConflict, Principal,
    RequestHead, RetryInviting, DEFAULT_WAIT, MIN_LEASE,
};
pub use error::IdempotencyError;
pub use fingerprint::{Fingerprint, RecordId};
pub use key::{IdempotencyKey, KeyError, DEFAULT_MAX_KEY_LEN};
pub use lifecycle::{
    Drained, Idempotency, IdempotencyBuilder, NotReady, Outcome, SharedStoreRequired,
};
pub use problem::ErrorKind;
pub use record::{DecodeError, OwnerToken, Record, StoredResponse, RECORD_FORMAT_VERSION};
#[cfg(feature = "encryption")]
pub use seal::{KeyRing, KeyRingError};

/// Makes an `async fn` idempotent (see the `axum` variant of this item).
#[cfg(all(feature = "macros", feature = "axum", feature = "actix"))]
#[doc(hidden)]
pub use idempotent_macros::idempotent_ambiguous as idempotent;
/// Makes an `async fn` that names its key idempotent (see [`function`]).
#[cfg(all(feature = "macros", not(feature = "axum"), not(feature = "actix")))]
#[doc(inline)]
pub use idempotent_macros::idempotent_no_framework as idempotent;
/// Makes an `async fn` idempotent (see the `axum` variant of this item).
#[cfg(all(feature = "macros", feature = "actix", not(feature = "axum")))]
#[doc(hidden)]
pub use idempotent_macros::idempotent_root_actix as idempotent;
/// Makes an `async fn` idempotent: a function that names its key
/// (`#[idempotent(key = order.id)]`, see [`function`]), or an HTTP handler of
/// the one framework feature enabled ([`axum::idempotent`],
/// [`actix::idempotent`]). With both framework features (or neither), a
/// handler is a compile error that says which path to import; a function
/// works whatever the features.
#[cfg(all(feature = "macros", feature = "axum", not(feature = "actix")))]
#[doc(inline)]
pub use idempotent_macros::idempotent_root_axum as idempotent;

mod checks;

/// What generated code calls. Not public API: no stability promise.
#[doc(hidden)]
pub mod __private {
    pub use crate::checks::{below_min_lease, lease_exceeds_ttl};
    pub use crate::config::{
        CachePolicy, HandlerConfig, OnConflict, Principal, RetryInviting, DEFAULT_WAIT,
    };
    pub use core::time::Duration;

    /// Per-handler options, implemented by the macro on a unit struct.
    pub trait HandlerSpec {
        /// The options.
        fn config() -> &'static HandlerConfig;
    }

    /// The function form's side of generated code.
    pub mod function {
        pub use crate::function::__private::*;
    }

    /// Emitted on a `Tx` argument: one clear error without the `postgres`
    /// feature.
    #[cfg(feature = "postgres")]
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __require_postgres_for_tx {
        () => {};
    }
    /// Emitted on a `Tx` argument: one clear error without the `postgres`
    /// feature.
    #[cfg(not(feature = "postgres"))]
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __require_postgres_for_tx {
        () => {
            ::core::compile_error!("`Tx` needs the Postgres store: enable the `postgres` feature of idempotent-runtime, e.g. `idempotent-runtime = { version = \"0.1\", features = [\"postgres\"] }`");
        };
    }
    pub use crate::__require_postgres_for_tx as require_postgres_for_tx;

    /// The tonic side of generated methods.
    #[cfg(feature = "tonic")]
    pub mod tonic {
        pub use crate::tonic::__private::*;
    }

    /// The axum side of generated handlers.
    #[cfg(feature = "axum")]
    pub mod axum {
        pub use crate::axum::__private::{run, Extract, Response};
        pub use crate::checks::axum::{AxumExtractor, AxumPartsExtractor, AxumResponse};
    }

    /// The actix-web side of generated handlers.
    #[cfg(feature = "actix")]
    pub mod actix {
        pub use crate::actix::__private::{run, HttpRequest, HttpResponse, Payload, Request};
        pub use crate::checks::actix::{
            ActixExtractor, ActixResponse, Arguments, ExtractFuture, ExtractResult, Extracted,
        };
        pub use actix_web::dev::Payload as RequestPayload;
    }
}
