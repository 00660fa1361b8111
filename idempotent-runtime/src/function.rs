//! The function form: `#[idempotent(key = …)]` on any `async fn` returning
//! `Result<T, E>`, such as a message consumer's handler.
//!
//! ```
//! use idempotent_runtime::{idempotent, IdempotencyError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Order { id: String, amount: u64 }
//! #[derive(Serialize, Deserialize, PartialEq, Debug)]
//! struct Receipt { order: String, charged: u64 }
//! #[derive(Debug)]
//! struct OrderError(String);
//! impl From<IdempotencyError> for OrderError {
//!     fn from(e: IdempotencyError) -> Self { OrderError(e.to_string()) }
//! }
//!
//! #[idempotent(key = order.id, scope = "orders")]
//! async fn place(order: Order) -> Result<Receipt, OrderError> {
//!     // runs once per order id; later calls get the same receipt back
//!     Ok(Receipt { order: order.id, charged: order.amount })
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let first = place(Order { id: "o-1".into(), amount: 5 }).await.unwrap();
//! let again = place(Order { id: "o-1".into(), amount: 5 }).await.unwrap();
//! assert_eq!(first, again);
//! // The same key with other arguments is refused.
//! assert!(place(Order { id: "o-1".into(), amount: 6 }).await.is_err());
//! # }
//! ```
//!
//! The same life cycle as the HTTP doors (claim, lease renewal, fenced
//! completion, `wait`, drain, metrics, tracing, the three stores), with
//! these differences:
//!
//! | | HTTP handlers | functions |
//! |---|---|---|
//! | key | a request header | `key = <expr>` over the arguments |
//! | fingerprint | method, path, query, body | the arguments (but the receiver, `store` and `Tx`), serialized; `fingerprint = <expr>` narrows it, `false` drops it |
//! | stored | the response (`cache = "all"` by default) | `Ok(T)` (`cache = "success"` by default; `"all"` stores `Err(E)` too) |
//! | refusals | problem+json answers | `E::from(IdempotencyError)` |
//! | the runtime | installed as a layer or app data | `store = <expr>`, else the process-wide default |
//!
//! A `Tx` argument is not the caller's to pass: the runtime opens it on the
//! Postgres store, and the record commits in it.
//!
//! Whether a call ran its body or was replayed is told by [`observe`].

use std::borrow::{Borrow, Cow};
use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::fingerprint::ValuesFingerprint;
use crate::lifecycle::{finish_even_if_dropped, Begin, Claimed, Diverted};
use crate::problem::Problem;
use crate::record::DecodeError;
use crate::store::StoreError;
use crate::{
    Fingerprint, HandlerConfig, Idempotency, IdempotencyError, IdempotencyKey, RecordId,
    StoredResponse,
};

/// `#[idempotent(key = …)]` for any `async fn`: the function form,
/// whatever framework features are enabled (`idempotent_runtime::idempotent`
/// is the same when the arguments name a `key`).
#[cfg(feature = "macros")]
#[doc(inline)]
pub use idempotent_macros::idempotent_function as idempotent;

/// What became of a call: its body ran, or its stored result was replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// This call ran the body.
    Executed,
    /// An earlier call with the same key ran it; this one got its result.
    Replayed,
}

tokio::task_local! {
    static OBSERVED: Cell<Option<Execution>>;
}

/// Runs `call` (a call of an `#[idempotent]` function) and says whether it
/// ran the body or replayed a stored result, e.g. to log replays or to
/// acknowledge a redelivered message differently. `None`: no idempotent
/// function was called, or it was refused before either.
///
/// ```
/// use idempotent_runtime::function::{observe, Execution};
/// use idempotent_runtime::{idempotent, IdempotencyError};
///
/// #[idempotent(key = id, scope = "observe-example")]
/// async fn handle(id: u64) -> Result<u64, IdempotencyError> {
///     Ok(id * 2)
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (result, how) = observe(handle(7)).await;
/// assert_eq!((result.unwrap(), how), (14, Some(Execution::Executed)));
/// let (_, how) = observe(handle(7)).await;
/// assert_eq!(how, Some(Execution::Replayed));
/// # }
/// ```
pub async fn observe<F: Future>(call: F) -> (F::Output, Option<Execution>) {
    OBSERVED
        .scope(Cell::new(None), async move {
            let output = call.await;
            (output, OBSERVED.with(Cell::get))
        })
        .await
}

fn observed(execution: Execution) {
    let _ = OBSERVED.try_with(|c| c.set(Some(execution)));
}

/// What the generated code of the function form calls. Not public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// One call: its options, runtime, key and fingerprint, each taken from
    /// the arguments before the body gets them.
    pub struct Call {
        config: &'static HandlerConfig,
        runtime: Result<Idempotency, Problem>,
        key: Vec<u8>,
        fingerprint: Result<Option<Fingerprint>, String>,
    }

    impl Call {
        /// The call, as the macro assembles it.
        pub fn new(
            config: &'static HandlerConfig,
            runtime: Result<Idempotency, IdempotencyError>,
            key: Vec<u8>,
            fingerprint: Result<Option<Fingerprint>, String>,
        ) -> Self {
            Call {
                config,
                runtime: runtime.map_err(IdempotencyError::into_problem),
                key,
                fingerprint,
            }
        }
    }

    /// What a key expression may give: text, bytes or an integer.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be an idempotency key",
        label = "not text, bytes or an integer",
        note = "`key` must give a string, bytes or an integer, e.g. `key = order.id`, `key = format!(\"{{}}:{{}}\", m.tenant, m.id)` or `key = msg.id.to_string()`"
    )]
    pub trait KeySource {
        /// The key's bytes.
        fn key_bytes(&self) -> Cow<'_, [u8]>;
    }

    impl KeySource for str {
        fn key_bytes(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(self.as_bytes())
        }
    }
    impl KeySource for [u8] {
        fn key_bytes(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(self)
        }
    }
    impl KeySource for String {
        fn key_bytes(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(self.as_bytes())
        }
    }
    impl KeySource for Vec<u8> {
        fn key_bytes(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(self)
        }
    }
    impl KeySource for bytes::Bytes {
        fn key_bytes(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(self)
        }
    }
    impl KeySource for Box<str> {
        fn key_bytes(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(self.as_bytes())
        }
    }
    impl KeySource for Arc<str> {
        fn key_bytes(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(self.as_bytes())
        }
    }
    impl KeySource for Cow<'_, str> {
        fn key_bytes(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(self.as_bytes())
        }
    }
    impl<T: KeySource + ?Sized> KeySource for &T {
        fn key_bytes(&self) -> Cow<'_, [u8]> {
            (**self).key_bytes()
        }
    }
    macro_rules! integer_keys {
        ($($t:ty),*) => {$(
            impl KeySource for $t {
                fn key_bytes(&self) -> Cow<'_, [u8]> {
                    Cow::Owned(self.to_string().into_bytes())
                }
            }
        )*};
    }
    integer_keys!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

    /// The key's bytes (checked by the runtime, against its limits).
    pub fn key_of<K: KeySource + ?Sized>(key: &K) -> Vec<u8> {
        key.key_bytes().into_owned()
    }

    /// What `store = …` may give.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not an idempotency runtime",
        label = "not an `Idempotency`",
        note = "`store` must give an `idempotent_runtime::Idempotency`, a reference to one or an `Arc` of one, e.g. `store = self.idempotency`"
    )]
    pub trait RuntimeSource {
        /// The runtime.
        fn runtime(&self) -> &Idempotency;
    }

    #[diagnostic::do_not_recommend]
    impl<T: Borrow<Idempotency>> RuntimeSource for T {
        fn runtime(&self) -> &Idempotency {
            self.borrow()
        }
    }

    /// The runtime `store = …` names.
    pub fn runtime_of<R: RuntimeSource + ?Sized>(
        runtime: &R,
    ) -> Result<Idempotency, IdempotencyError> {
        Ok(runtime.runtime().clone())
    }

    /// The runtime of a function without `store`: the process-wide one,
    /// unless the app built its own (then the function was meant to name it).
    pub fn default_runtime() -> Result<Idempotency, IdempotencyError> {
        Idempotency::fallback(
            "name the app's runtime in the attribute, e.g. `#[idempotent(key = …, store = self.idempotency)]`",
        )
        .map_err(IdempotencyError::from)
    }

    /// Builds a call's fingerprint, one argument at a time.
    pub struct Fingerprinter(Result<ValuesFingerprint, String>);

    impl Fingerprinter {
        /// An empty fingerprint.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Fingerprinter(Ok(Fingerprint::of_values()))
        }

        /// Adds the value of `fingerprint = …`.
        pub fn add_value<T: Serialize + ?Sized>(&mut self, value: &T) {
            if let Ok(f) = &mut self.0 {
                if let Err(e) = f.add(value) {
                    self.0 = Err(e);
                }
            }
        }

        /// The fingerprint, or why an argument could not be serialized.
        pub fn finish(self) -> Result<Option<Fingerprint>, String> {
            self.0.map(|f| Some(f.finish()))
        }
    }

    /// What an argument must be to be fingerprinted.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be fingerprinted: it does not implement `serde::Serialize`",
        label = "not `Serialize`",
        note = "the fingerprint covers every argument (but the receiver, the `store` and the `Tx`); derive `serde::Serialize` for it, narrow the fingerprint with `fingerprint = <expr>`, or drop the payload check with `fingerprint = false`"
    )]
    pub trait Fingerprinted {
        /// Adds the argument.
        fn add(fingerprint: &mut Fingerprinter, value: &Self);
    }

    #[diagnostic::do_not_recommend]
    impl<T: Serialize + ?Sized> Fingerprinted for T {
        fn add(fingerprint: &mut Fingerprinter, value: &Self) {
            fingerprint.add_value(value);
        }
    }

    /// How a value is stored and read back.
    pub struct Codec<T> {
        encode: fn(&T) -> Result<Vec<u8>, String>,
        decode: fn(&[u8]) -> Result<T, String>,
    }

    impl<T> Clone for Codec<T> {
        fn clone(&self) -> Self {
            *self
        }
    }

    impl<T> Copy for Codec<T> {}

    fn json<T: Serialize + DeserializeOwned>() -> Codec<T> {
        Codec {
            encode: |v| serde_json::to_vec(v).map_err(|e| e.to_string()),
            decode: |b| serde_json::from_slice(b).map_err(|e| e.to_string()),
        }
    }

    /// What an `Ok` must be to be stored.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be stored: it does not implement `serde::Serialize` and `serde::de::DeserializeOwned`",
        label = "the `Ok` of an `#[idempotent]` function must be serializable",
        note = "the first call's `Ok` is stored and later calls get it back: derive `serde::Serialize` and `serde::Deserialize` for it"
    )]
    pub trait StoredValue: Sized {
        /// Its codec.
        fn codec() -> Codec<Self>;
    }

    #[diagnostic::do_not_recommend]
    impl<T: Serialize + DeserializeOwned> StoredValue for T {
        fn codec() -> Codec<Self> {
            json()
        }
    }

    /// What an `Err` must be to be stored (`cache = "all"`).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be stored: it does not implement `serde::Serialize` and `serde::de::DeserializeOwned`",
        label = "with `cache = \"all\"`, the `Err` of an `#[idempotent]` function must be serializable",
        note = "derive `serde::Serialize` and `serde::Deserialize` for it, or store only `Ok` results (the default, `cache = \"success\"`)"
    )]
    pub trait StoredError: Sized {
        /// Its codec.
        fn codec() -> Codec<Self>;
    }

    #[diagnostic::do_not_recommend]
    impl<T: Serialize + DeserializeOwned> StoredError for T {
        fn codec() -> Codec<Self> {
            json()
        }
    }

    /// What the error type must be: something refusals convert into.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot receive refusals: it does not implement `From<IdempotencyError>`",
        label = "the `Err` of an `#[idempotent]` function",
        note = "refusals (in progress, key reused, invalid key, store unavailable, result too large) reach the caller as the function's error: implement `From<idempotent_runtime::IdempotencyError>` for it"
    )]
    pub trait ReceivesRefusals: Sized {
        /// The refusal, as this error.
        fn refusal(e: IdempotencyError) -> Self;
    }

    #[diagnostic::do_not_recommend]
    impl<E: From<IdempotencyError>> ReceivesRefusals for E {
        fn refusal(e: IdempotencyError) -> Self {
            E::from(e)
        }
    }

    /// What a function returns: a `Result`, of which `Ok` is stored.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a `Result`: an `#[idempotent]` function must return `Result<T, E>`",
        label = "not a `Result`",
        note = "`T` is stored and replayed; `E` receives refusals through `From<IdempotencyError>`"
    )]
    pub trait FunctionResult: Sized {
        /// `T`.
        type Ok;
        /// `E`.
        type Err;
        /// As a `Result`.
        fn into_result(self) -> Result<Self::Ok, Self::Err>;
        /// From a `Result`.
        fn from_result(result: Result<Self::Ok, Self::Err>) -> Self;
    }

    impl<T, E> FunctionResult for Result<T, E> {
        type Ok = T;
        type Err = E;
        fn into_result(self) -> Self {
            self
        }
        fn from_result(result: Self) -> Self {
            result
        }
    }

    pub use crate::handed::{BodyArg, Slot};

    /// Runs a call whose body borrows from its caller: in the caller's
    /// future, so a caller that stops waiting releases the claim.
    pub async fn run<R, A, F, Fut>(
        call: Call,
        ok: Codec<R::Ok>,
        err: Option<Codec<R::Err>>,
        refusal: fn(IdempotencyError) -> R::Err,
        body: F,
    ) -> R
    where
        R: FunctionResult,
        A: BodyArg,
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = R>,
    {
        let refuse = |p: Problem| R::from_result(Err(refusal(p.into())));
        match start::<A>(call).await {
            Err(p) => refuse(p),
            Ok(Started::Replay(stored)) => {
                R::from_result(replay(&stored, &ok, err.as_ref(), refusal))
            }
            Ok(Started::Run(claimed, slot)) => {
                let arg = match A::make(slot) {
                    Ok(arg) => arg,
                    Err(p) => return refuse(p),
                };
                let max_body = claimed.policy().max_body;
                let task = claimed.run(async move {
                    let output = body(arg).await.into_result();
                    let stored = store(&output, &ok, err.as_ref(), max_body);
                    (R::from_result(output), stored)
                });
                match task.await {
                    Ok(output) => output,
                    Err(Diverted::Refused(p)) => refuse(p),
                    Err(Diverted::Replayed(stored)) => {
                        observed(Execution::Replayed);
                        R::from_result(replay(&stored, &ok, err.as_ref(), refusal))
                    }
                }
            }
        }
    }

    /// Runs a call whose body borrows nothing: detached from the caller's
    /// future, so that it finishes (and its result is stored) even if the
    /// caller stops waiting.
    pub async fn run_detached<R, A, F, Fut>(
        call: Call,
        ok: Codec<R::Ok>,
        err: Option<Codec<R::Err>>,
        refusal: fn(IdempotencyError) -> R::Err,
        body: F,
    ) -> R
    where
        R: FunctionResult + Send + 'static,
        A: BodyArg + Send + 'static,
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = R> + Send + 'static,
        R::Ok: 'static,
        R::Err: 'static,
    {
        let refuse = |p: Problem| R::from_result(Err(refusal(p.into())));
        match start::<A>(call).await {
            Err(p) => refuse(p),
            Ok(Started::Replay(stored)) => {
                R::from_result(replay(&stored, &ok, err.as_ref(), refusal))
            }
            Ok(Started::Run(claimed, slot)) => {
                let arg = match A::make(slot) {
                    Ok(arg) => arg,
                    Err(p) => return refuse(p),
                };
                let max_body = claimed.policy().max_body;
                let running = body(arg);
                let task = claimed.run(async move {
                    let output = running.await.into_result();
                    let stored = store(&output, &ok, err.as_ref(), max_body);
                    (R::from_result(output), stored)
                });
                let task = async move {
                    match task.await {
                        Ok(output) => Ok(output),
                        Err(Diverted::Refused(p)) => Err(p),
                        Err(Diverted::Replayed(stored)) => {
                            Ok(R::from_result(replay(&stored, &ok, err.as_ref(), refusal)))
                        }
                    }
                };
                finish_even_if_dropped(tracing::Instrument::in_current_span(task))
                    .await
                    .unwrap_or_else(refuse)
            }
        }
    }

    /// Boxed-free on purpose: it lives for one `match`, and a claimed call
    /// is the common case.
    #[allow(clippy::large_enum_variant)]
    enum Started {
        Replay(Arc<StoredResponse>),
        Run(Claimed, Slot),
    }

    /// The key checked, the claim taken (or what to answer instead).
    async fn start<A: BodyArg>(call: Call) -> Result<Started, Problem> {
        let Call {
            config,
            runtime,
            key,
            fingerprint,
        } = call;
        let runtime = runtime?;
        let key = IdempotencyKey::parse_with_limit(&key, runtime.limits().max_key_len)
            .map_err(|e| Problem::invalid_key(&e))?;
        let fingerprint = fingerprint
            .map_err(|why| Problem::arguments_unserializable(&why))?
            .unwrap_or_else(|| Fingerprint::of_bytes(b""));
        let slot = A::prepare(&runtime)?;
        let id = RecordId::new_static(config.scope, None, &key);
        match runtime.begin(config, id, fingerprint, slot.cell()).await {
            Begin::Refuse(p) => Err(p),
            Begin::Replay(stored) => {
                observed(Execution::Replayed);
                Ok(Started::Replay(stored))
            }
            Begin::Run(claimed) => {
                observed(Execution::Executed);
                Ok(Started::Run(claimed, slot))
            }
        }
    }

    /// How a result is marked in its record: an `Ok`, or (`cache = "all"`)
    /// an `Err`.
    const OK: u16 = 200;
    const ERR: u16 = 500;

    /// What to store of a result: `None` when it is not stored (an `Err`
    /// without `cache = "all"`), a record without a body when it cannot be
    /// replayed (over the limit, or it failed to serialize): the call ran,
    /// and is not run again.
    fn store<T, E>(
        output: &Result<T, E>,
        ok: &Codec<T>,
        err: Option<&Codec<E>>,
        max_body: usize,
    ) -> Option<Arc<StoredResponse>> {
        let (status, encoded) = match (output, err) {
            (Ok(v), _) => (OK, (ok.encode)(v)),
            (Err(e), Some(err)) => (ERR, (err.encode)(e)),
            (Err(_), None) => return None,
        };
        let body = match encoded {
            Ok(bytes) if bytes.len() <= max_body => Some(bytes.into()),
            Ok(_) => None,
            Err(e) => {
                tracing::error!(target: "idempotent", error = %e, "a function's result could not be serialized; later calls with its key get `response-not-stored`");
                None
            }
        };
        Some(Arc::new(StoredResponse {
            status,
            headers: Vec::new(),
            body,
        }))
    }

    /// A stored result, read back.
    fn replay<T, E>(
        stored: &StoredResponse,
        ok: &Codec<T>,
        err: Option<&Codec<E>>,
        refusal: fn(IdempotencyError) -> E,
    ) -> Result<T, E> {
        let unreadable = |why: &str| {
            tracing::error!(target: "idempotent", error = why, "a stored result does not read back as the function's type");
            refusal(
                Problem::store(&StoreError::Corrupt(DecodeError(
                    "a stored result does not read back as the function's type",
                )))
                .into(),
            )
        };
        let body = stored.body.as_deref().unwrap_or_default();
        match (stored.status, err) {
            (OK, _) => (ok.decode)(body).map_err(|e| unreadable(&e)),
            (ERR, Some(err)) => Err((err.decode)(body).map_err(|e| unreadable(&e))?),
            _ => Err(unreadable("an error stored, but the function stores none")),
        }
    }
}
