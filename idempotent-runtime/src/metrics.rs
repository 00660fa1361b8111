//! Metrics (feature `metrics`), through the [`metrics`](https://docs.rs/metrics)
//! facade: whichever exporter the application installs (Prometheus,
//! StatsD, OpenTelemetry, …) receives them. Without the feature they cost
//! nothing (the calls are not compiled in). With it, the keys of a scope's
//! metrics (name and labels, hashed) are built once, on its first request,
//! so a request only looks them up (a thread-local cache) and hands them to
//! the recorder; `BENCHMARKS.md` has the cost per request, with no recorder
//! and with the Prometheus one.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `idempotent_requests_total` | counter | `scope`, `outcome` | requests that went through the life cycle, by how they ended (the outcomes below); one per request, the same event as the `idempotent` tracing event |
//! | `idempotent_handler_duration_seconds` | histogram | `scope` | time a claimed request's handler ran, reading its response body for storage included (handlers that ran: `executed`, `executed_not_stored`, `panicked`, `lease_lost`, `transaction_escaped`) |
//! | `idempotent_store_duration_seconds` | histogram | `operation` | time a store operation took, failed ones included: `claim`, `renew`, `complete`, `release`, `get`, `delete`, `watch`, `ping`, and `commit` (a handler's transaction committed with its record, Postgres) |
//! | `idempotent_handlers_in_flight` | gauge | `scope` | claimed requests of this process not finished yet: the handler running, or its response being stored |
//!
//! `outcome` is one of:
//!
//! | outcome | the request… | answer |
//! |---|---|---|
//! | `executed` | ran the handler; its response was stored (or storing it is being retried) | the handler's |
//! | `executed_not_stored` | ran the handler; its response is not kept (cache policy, `no-store`, retry-inviting, over the storage limit), the key released | the handler's |
//! | `replayed` | found a stored response with the same fingerprint | the stored one (or 410 when it was not kept) |
//! | `conflict` | found the same key still running | 409 |
//! | `mismatch` | found the key used with another request | 422 |
//! | `missing_key` | had no key, and the handler requires one | 400 |
//! | `invalid_key` | had a key that cannot be used (empty, too long, not visible ASCII, sent twice) | 400 |
//! | `missing_principal` | had no principal, and the handler scopes keys by principal | 400 |
//! | `request_too_large` | had a body over the fingerprinting limit | 413 |
//! | `request_unreadable` | had a body that could not be read | 400 |
//! | `store_error` | could not be claimed or committed: the store failed | 503 |
//! | `record_unreadable` | found a record it cannot read: corrupt, altered, or sealed under a key it does not hold; the handler does not run | 500 |
//! | `shutting_down` | arrived while the runtime drains | 503 |
//! | `panicked` | ran a handler that panicked; the key released | 500 |
//! | `lease_lost` | ran the handler, but its claim was taken over; its transaction rolled back | 409 |
//! | `transaction_escaped` | ran a handler whose transaction outlived it; rolled back | 500 |
//!
//! A request without a key to a handler that does not require one runs
//! without idempotency and is not counted.
//!
//! `scope` is the handler's scope (one per idempotent operation, fixed at
//! compile time), so the label's values are bounded; keys, principals and
//! bodies never appear in metrics.
//!
//! Call [`describe`] once after installing a recorder to give each metric
//! its description and unit (`# HELP` lines in Prometheus).
//!
//! ```
//! use idempotent_runtime::store::memory::MemoryStore;
//! use idempotent_runtime::{Fingerprint, HandlerConfig, Idempotency, IdempotencyKey, StoredResponse};
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//!
//! static ITEMS: HandlerConfig = HandlerConfig::new("items");
//!
//! // Any recorder; here, the test recorder of `metrics-util`, for this thread.
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! metrics::with_local_recorder(&recorder, || {
//!     idempotent_runtime::metrics::describe();
//!     rt.block_on(async {
//!         let idempotency = Idempotency::new(MemoryStore::default());
//!         let key = IdempotencyKey::parse(b"item-1").unwrap();
//!         let fp = Fingerprint::of_bytes(b"{}");
//!         for _ in 0..2 {
//!             let block = || async { StoredResponse::new(201, "done") };
//!             idempotency.run(&ITEMS, None, &key, fp, block).await.unwrap();
//!         }
//!     })
//! });
//!
//! let mut counted = Vec::new();
//! for (key, _, _, value) in snapshotter.snapshot().into_vec() {
//!     if let DebugValue::Counter(n) = value {
//!         let labels: Vec<String> = key.key().labels().map(|l| l.value().to_owned()).collect();
//!         counted.push((key.key().name().to_owned(), labels, n));
//!     }
//! }
//! let requests = |outcome: &str| {
//!     let labels = vec!["items".to_owned(), outcome.to_owned()];
//!     counted.contains(&("idempotent_requests_total".to_owned(), labels, 1))
//! };
//! assert!(requests("executed") && requests("replayed"));
//! ```

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use ::metrics::{with_recorder, Key, Label, Level, Metadata};

/// `idempotent_requests_total`.
pub const REQUESTS_TOTAL: &str = "idempotent_requests_total";
/// `idempotent_handler_duration_seconds`.
pub const HANDLER_DURATION: &str = "idempotent_handler_duration_seconds";
/// `idempotent_store_duration_seconds`.
pub const STORE_DURATION: &str = "idempotent_store_duration_seconds";
/// `idempotent_handlers_in_flight`.
pub const HANDLERS_IN_FLIGHT: &str = "idempotent_handlers_in_flight";

/// Describes every metric of the table above to the installed recorder
/// (description and unit). Optional: metrics are recorded without it.
pub fn describe() {
    ::metrics::describe_counter!(
        REQUESTS_TOTAL,
        ::metrics::Unit::Count,
        "Requests through the idempotency life cycle, by scope and outcome"
    );
    ::metrics::describe_histogram!(
        HANDLER_DURATION,
        ::metrics::Unit::Seconds,
        "Time an idempotent handler ran, by scope"
    );
    ::metrics::describe_histogram!(
        STORE_DURATION,
        ::metrics::Unit::Seconds,
        "Time an idempotency store operation took, by operation"
    );
    ::metrics::describe_gauge!(
        HANDLERS_IN_FLIGHT,
        ::metrics::Unit::Count,
        "Claimed idempotent requests not finished yet (handler running or response being stored), by scope"
    );
}

/// Every outcome, in the order of the table above: the index of a scope's
/// counter key.
const OUTCOMES: &[&str] = &[
    "executed",
    "executed_not_stored",
    "replayed",
    "conflict",
    "mismatch",
    "missing_key",
    "invalid_key",
    "missing_principal",
    "request_too_large",
    "request_unreadable",
    "store_error",
    "record_unreadable",
    "shutting_down",
    "panicked",
    "lease_lost",
    "transaction_escaped",
];

/// The keys of one scope's metrics, built once and kept for the life of the
/// process (a server has a fixed set of scopes).
struct ScopeKeys {
    requests: Vec<Key>,
    handler: Key,
    in_flight: Key,
}

impl ScopeKeys {
    fn new(scope: &'static str) -> Self {
        let with = |name: &'static str, labels: Vec<Label>| Key::from_parts(name, labels);
        ScopeKeys {
            requests: OUTCOMES
                .iter()
                .map(|o| {
                    with(
                        REQUESTS_TOTAL,
                        vec![
                            Label::from_static_parts("scope", scope),
                            Label::from_static_parts("outcome", o),
                        ],
                    )
                })
                .collect(),
            handler: with(
                HANDLER_DURATION,
                vec![Label::from_static_parts("scope", scope)],
            ),
            in_flight: with(
                HANDLERS_IN_FLIGHT,
                vec![Label::from_static_parts("scope", scope)],
            ),
        }
    }
}

/// The keys of `scope`: from a small cache of this thread's, keyed by the
/// scope's address (a request's scopes are `&'static str`), else from the
/// process's table.
fn keys(scope: &'static str) -> &'static ScopeKeys {
    const SLOTS: usize = 8;
    thread_local! {
        static CACHE: std::cell::Cell<[Option<(usize, &'static ScopeKeys)>; SLOTS]> =
            const { std::cell::Cell::new([None; SLOTS]) };
    }
    let address = scope.as_ptr() as usize;
    let slot = (address >> 3) % SLOTS;
    let cached = CACHE.with(|c| c.get()[slot]);
    if let Some((a, keys)) = cached {
        if a == address {
            return keys;
        }
    }
    static TABLE: OnceLock<RwLock<HashMap<&'static str, &'static ScopeKeys>>> = OnceLock::new();
    let table = TABLE.get_or_init(Default::default);
    let found = table
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(scope)
        .copied();
    let keys = found.unwrap_or_else(|| {
        let mut table = table.write().unwrap_or_else(|e| e.into_inner());
        *table
            .entry(scope)
            .or_insert_with(|| Box::leak(Box::new(ScopeKeys::new(scope))))
    });
    CACHE.with(|c| {
        let mut slots = c.get();
        slots[slot] = Some((address, keys));
        c.set(slots);
    });
    keys
}

const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// One request ended with `outcome`.
pub(crate) fn request(scope: &'static str, outcome: &'static str) {
    match OUTCOMES.iter().position(|o| *o == outcome) {
        Some(i) => {
            let key = &keys(scope).requests[i];
            with_recorder(|r| r.register_counter(key, &METADATA).increment(1));
        }
        // An outcome not in the table: counted all the same.
        None => {
            ::metrics::counter!(REQUESTS_TOTAL, "scope" => scope, "outcome" => outcome).increment(1)
        }
    }
}

/// A handler of `scope` ran for `took`.
pub(crate) fn handler(scope: &'static str, took: Duration) {
    let key = &keys(scope).handler;
    with_recorder(|r| {
        r.register_histogram(key, &METADATA)
            .record(took.as_secs_f64())
    });
}

/// A store operation took `took`.
pub(crate) fn store(operation: &'static str, took: Duration) {
    // Literal labels make static keys: nothing is allocated per call.
    let histogram = match operation {
        "claim" => ::metrics::histogram!(STORE_DURATION, "operation" => "claim"),
        "renew" => ::metrics::histogram!(STORE_DURATION, "operation" => "renew"),
        "complete" => ::metrics::histogram!(STORE_DURATION, "operation" => "complete"),
        "release" => ::metrics::histogram!(STORE_DURATION, "operation" => "release"),
        "get" => ::metrics::histogram!(STORE_DURATION, "operation" => "get"),
        "delete" => ::metrics::histogram!(STORE_DURATION, "operation" => "delete"),
        "watch" => ::metrics::histogram!(STORE_DURATION, "operation" => "watch"),
        "ping" => ::metrics::histogram!(STORE_DURATION, "operation" => "ping"),
        "commit" => ::metrics::histogram!(STORE_DURATION, "operation" => "commit"),
        _ => ::metrics::histogram!(STORE_DURATION, "operation" => operation),
    };
    histogram.record(took.as_secs_f64());
}

/// A handler of `scope` started (`+1`) or ended (`-1`).
pub(crate) fn in_flight(scope: &'static str, delta: f64) {
    let key = &keys(scope).in_flight;
    with_recorder(|r| r.register_gauge(key, &METADATA).increment(delta));
}
