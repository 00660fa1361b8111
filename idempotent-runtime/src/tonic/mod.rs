//! The tonic door: `#[idempotent]` on unary methods of a tonic service
//! (feature `tonic`).
//!
//! ```ignore
//! use idempotent_runtime::tonic::idempotent;
//! use tonic::{Request, Response, Status};
//!
//! #[tonic::async_trait]
//! impl Payments for PaymentService {
//!     #[idempotent(scope = "payments")]
//!     async fn create_payment(&self, request: Request<CreatePaymentRequest>)
//!         -> Result<Response<Payment>, Status>
//!     {
//!         // runs once per key; retries get the stored reply
//!     }
//! }
//! ```
//!
//! The same life cycle as on HTTP (`on_conflict = "wait"`, principals,
//! `Tx` on Postgres, metrics, tracing, drain), in gRPC's terms:
//!
//! - **Key**: metadata `idempotency-key` (`header = …` renames it), or
//!   `key = <expr>` over the request, such as AIP-155's request id:
//!   `key = request.get_ref().request_id`.
//! - **Scope**: the method's full gRPC path (`/payments.v1.Payments/CreatePayment`)
//!   unless `scope` says otherwise. tonic does not tell its methods their
//!   path: the [`IdempotencyLayer`] on the server does (without it, the
//!   scope is the Rust method's name, and no descriptor is found for the
//!   fingerprint).
//! - **Fingerprint**: the method's path and the request message's protobuf
//!   encoding, made canonical (map entries sorted, fields in order) with the
//!   service's descriptors once they are registered with
//!   [`register_file_descriptor_set`]; without them, `map` fields may
//!   fingerprint differently from one encoding to the next.
//! - **Replay**: the stored reply message and its metadata, plus
//!   `idempotent-replayed: true` (`replay_header` renames it).
//! - **What is stored**: the reply; a `Status` per `cache` (`success`
//!   stores `OK` only), but never `UNAVAILABLE`, `RESOURCE_EXHAUSTED`,
//!   `ABORTED`, `DEADLINE_EXCEEDED` or `CANCELLED`, which invite a retry
//!   (unless `retry_inviting = "store"`).
//! - **Refusals**:
//!
//!   | refusal | code |
//!   |---|---|
//!   | missing or invalid key | `INVALID_ARGUMENT` |
//!   | in progress | `ABORTED`, with `google.rpc.RetryInfo` |
//!   | key reused with another payload | `FAILED_PRECONDITION` |
//!   | store unavailable | `UNAVAILABLE`, with `google.rpc.RetryInfo` |
//!   | too large | `RESOURCE_EXHAUSTED` |
//!   | a record that cannot be read, a panic | `INTERNAL` |
//!
//!   Each carries `google.rpc.ErrorInfo`: the problem of the
//!   [`problem`](crate::problem) catalogue as `reason`
//!   (`REQUEST_IN_PROGRESS`), `idempotent-runtime` as `domain`, its `type`
//!   URI in the metadata.
//! - **Runtime**: the one an [`IdempotencyLayer`] on the server installs
//!   (`Server::builder().layer(IdempotencyLayer::new(idempotency))`), or
//!   `store = self.idempotency`, else the process-wide default.
//! - **`Tx`**: a method writes through the Postgres store's transaction by
//!   taking a `tx: Tx` argument after the request, which the trait does not
//!   declare: the runtime hands it over.
//!
//! A method borrows its service (`&self`), so a call the client cancels
//! stops with it: its claim is released (its `Tx` rolled back), and the
//! retry runs again.

mod descriptors;
mod status;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{GrpcMethod, Request, Response, Status};

use crate::config::{HandlerConfig, HeaderLookup, Repeated, RequestHead};
use crate::lifecycle::{Begin, Diverted};
use crate::problem::Problem;
use crate::{Fingerprint, Idempotency, IdempotencyError};

pub use crate::tower::{IdempotencyLayer, IdempotencyService};
pub use descriptors::register_file_descriptor_set;

/// `#[idempotent]` for unary tonic methods.
#[cfg(feature = "macros")]
#[doc(inline)]
pub use idempotent_macros::idempotent_tonic as idempotent;

impl HeaderLookup for MetadataMap {
    fn get(&self, name: &str) -> Result<Option<&[u8]>, Repeated> {
        let mut values = self.get_all(name).iter();
        let first = values.next().map(|v| v.as_bytes());
        match values.next() {
            Some(_) => Err(Repeated),
            None => Ok(first),
        }
    }
}

/// `/package.Service/Method`, once per method for the life of the process:
/// scopes are `&'static str`, and a server has a fixed set of methods.
fn intern(path: &str) -> &'static str {
    static PATHS: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut paths = PATHS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = paths.get(path) {
        return path;
    }
    let interned: &'static str = Box::leak(path.to_owned().into_boxed_str());
    if !descriptors::knows(interned) {
        tracing::warn!(target: "idempotent", path = interned, "no file descriptor set is registered for this method: requests are fingerprinted by their encoding, in which `map` fields are not ordered; register it with `idempotent_runtime::tonic::register_file_descriptor_set`");
    }
    paths.insert(path.to_owned(), interned);
    interned
}

/// The method's full path: from the request (put there by the
/// [`IdempotencyLayer`], or by a client-side `GrpcMethod`); `None` without
/// either.
fn path_of(extensions: &tonic::Extensions) -> Option<&'static str> {
    if let Some(path) = extensions.get::<crate::tower::GrpcPath>() {
        return Some(intern(&path.0));
    }
    extensions
        .get::<GrpcMethod<'static>>()
        .map(|m| intern(&format!("/{}/{}", m.service(), m.method())))
}

/// What tonic methods compile to. Not public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use crate::function::__private::{key_of, runtime_of, KeySource, RuntimeSource};
    pub use crate::handed::{BodyArg, Slot};

    /// One call: its options, the runtime named by `store` (if any), and the
    /// key taken by `key = …` (if any), before the body gets the request.
    pub struct Call {
        config: &'static HandlerConfig,
        method: &'static str,
        runtime: Option<Result<Idempotency, IdempotencyError>>,
        key: Option<Vec<u8>>,
    }

    impl Call {
        /// The call, as the macro assembles it; `method` is the Rust
        /// method's name, the scope when the request does not say its path.
        pub fn new(
            config: &'static HandlerConfig,
            method: &'static str,
            runtime: Option<Result<Idempotency, IdempotencyError>>,
            key: Option<Vec<u8>>,
        ) -> Self {
            Call {
                config,
                method,
                runtime,
                key,
            }
        }
    }

    /// Runs a unary method through the life cycle.
    pub async fn run<Req, Res, A, F, Fut>(
        call: Call,
        request: Request<Req>,
        body: F,
    ) -> Result<Response<Res>, Status>
    where
        Req: Message,
        Res: Message + Default,
        A: BodyArg,
        F: FnOnce(Request<Req>, A) -> Fut,
        Fut: Future<Output = Result<Response<Res>, Status>>,
    {
        let started = Instant::now();
        let Call {
            config,
            method,
            runtime,
            key,
        } = call;
        let refuse = |p: Problem| status::refusal(&p);
        let path = path_of(request.extensions());
        let runtime = match runtime {
            Some(r) => r.map_err(|e| refuse(e.into_problem()))?,
            None => crate::tower::idempotency_of(request.extensions(), path.unwrap_or(method))
                .map_err(refuse)?,
        };
        let mut config = *config;
        if config.scope.is_empty() {
            config.scope = path.unwrap_or(method);
        }
        let id = {
            let head = RequestHead::new("POST", path.unwrap_or(method), None, request.metadata());
            runtime
                .identify_with(&config, &head, key.as_deref())
                .map_err(refuse)?
        };
        let slot = A::prepare(&runtime).map_err(refuse)?;
        let Some(id) = id else {
            // No key and none required: no idempotency.
            let arg = A::make(slot).map_err(refuse)?;
            return body(request, arg).await;
        };
        let encoded = request.get_ref().encode_to_vec();
        let limit = runtime.limits().max_request_body;
        if encoded.len() > limit {
            crate::lifecycle::trace(&config, "request_too_large", started);
            return Err(refuse(Problem::request_too_large(limit)));
        }
        let canonical = path.and_then(|p| descriptors::canonical(p, &encoded));
        let fingerprint = Fingerprint::of_grpc(
            path.unwrap_or(method),
            canonical.as_deref().unwrap_or(&encoded),
        );
        let replay_header = config.replay_header;
        match runtime.begin(&config, id, fingerprint, slot.cell()).await {
            Begin::Refuse(p) => Err(refuse(p)),
            Begin::Replay(stored) => status::replay(&stored, replay_header),
            Begin::Run(claimed) => {
                let arg = A::make(slot).map_err(refuse)?;
                let max_body = claimed.policy().max_body;
                let (cache, retry_inviting) = (config.cache, config.retry_inviting);
                let task = claimed.run(async move {
                    let answer = body(request, arg).await;
                    let stored = status::capture(&answer, cache, retry_inviting, max_body);
                    (answer, stored)
                });
                match task.await {
                    Ok(answer) => answer,
                    Err(Diverted::Refused(p)) => Err(refuse(p)),
                    Err(Diverted::Replayed(stored)) => status::replay(&stored, replay_header),
                }
            }
        }
    }
}
