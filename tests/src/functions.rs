//! The function form's suite: `#[idempotent(key = …)]` functions called
//! directly, over each store ([`function_suite!`](crate::function_suite)).
//! Every case gets a runtime over a fresh store and counts how often the
//! body really ran.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idempotent_runtime::function::{observe, Execution};
use idempotent_runtime::{idempotent, ErrorKind, Idempotency, IdempotencyError, Limits};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

use crate::AnyStore;

/// A message, as a consumer receives it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Order {
    /// Its key.
    pub key: String,
    /// What it asks for.
    pub amount: u64,
    /// How long the body takes.
    pub hold_ms: u64,
    /// Whether the body fails.
    pub fail: bool,
}

impl Order {
    fn new(key: &str, amount: u64) -> Self {
        Order {
            key: key.into(),
            amount,
            hold_ms: 0,
            fail: false,
        }
    }
}

/// What the body returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The order's amount.
    pub amount: u64,
    /// How many times the body had run when it made this receipt.
    pub run: u64,
}

/// The functions' error: a refusal, or the body's own failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Failure {
    /// Refused by the life cycle, of this kind.
    Refused(String),
    /// The body failed (its `run`).
    Failed(u64),
}

impl From<IdempotencyError> for Failure {
    fn from(e: IdempotencyError) -> Self {
        Failure::Refused(format!("{:?}", e.kind()))
    }
}

fn refused(kind: ErrorKind) -> Failure {
    Failure::Refused(format!("{kind:?}"))
}

async fn body(runs: &AtomicU64, order: &Order) -> Result<Receipt, Failure> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    if order.hold_ms > 0 {
        tokio::time::sleep(Duration::from_millis(order.hold_ms)).await;
    }
    if order.fail {
        return Err(Failure::Failed(run));
    }
    Ok(Receipt {
        amount: order.amount,
        run,
    })
}

/// Borrows its runtime and counter: runs in the caller's future.
#[idempotent(key = order.key, scope = "fn-suite", store = idem, fingerprint = order.amount)]
async fn place(idem: &Idempotency, runs: &AtomicU64, order: Order) -> Result<Receipt, Failure> {
    body(runs, &order).await
}

/// As [`place`], waiting for a duplicate that runs.
#[idempotent(key = order.key, scope = "fn-suite-wait", store = idem, fingerprint = order.amount, on_conflict = "wait", wait = "5s")]
async fn place_waiting(
    idem: &Idempotency,
    runs: &AtomicU64,
    order: Order,
) -> Result<Receipt, Failure> {
    body(runs, &order).await
}

/// As [`place`], storing its errors too.
#[idempotent(key = order.key, scope = "fn-suite-all", store = idem, fingerprint = order.amount, cache = "all")]
async fn place_keeping_errors(
    idem: &Idempotency,
    runs: &AtomicU64,
    order: Order,
) -> Result<Receipt, Failure> {
    body(runs, &order).await
}

/// Owns everything: detached from its caller.
#[idempotent(key = order.key, scope = "fn-suite-owned", store = idem, fingerprint = order.amount)]
async fn place_owned(
    idem: Idempotency,
    runs: Arc<AtomicU64>,
    order: Order,
) -> Result<Receipt, Failure> {
    body(&runs, &order).await
}

/// A runtime over `store`.
fn runtime(store: &AnyStore) -> Idempotency {
    Idempotency::new(store.unguarded())
}

/// This file, for the check that every case is in the suite.
pub const SOURCE: &str = include_str!("functions.rs");

function_cases!(
    /// A second call with the key gets the first's result; the body ran once.
    pub async fn a_duplicate_gets_the_first_result(store: &AnyStore) {
        let idem = runtime(store);
        let runs = AtomicU64::new(0);
        let key = crate::unique("dup");
        let (first, how) = observe(place(&idem, &runs, Order::new(&key, 5))).await;
        assert_eq!(first, Ok(Receipt { amount: 5, run: 1 }));
        assert_eq!(how, Some(Execution::Executed));
        let (again, how) = observe(place(&idem, &runs, Order::new(&key, 5))).await;
        assert_eq!(again, Ok(Receipt { amount: 5, run: 1 }));
        assert_eq!(how, Some(Execution::Replayed));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    /// Hundreds of concurrent calls with one key: one runs, every other
    /// is refused as in progress or gets the same result.
    pub async fn concurrent_duplicates_run_once(store: &AnyStore) {
        let idem = runtime(store);
        let runs = Arc::new(AtomicU64::new(0));
        let key = crate::unique("race");
        let barrier = Arc::new(Barrier::new(200));
        let calls = (0..200).map(|_| {
            let (idem, runs, barrier) = (idem.clone(), runs.clone(), barrier.clone());
            let mut order = Order::new(&key, 9);
            order.hold_ms = 200;
            tokio::spawn(async move {
                barrier.wait().await;
                place(&idem, &runs, order).await
            })
        });
        let results = futures_util::future::join_all(calls).await;
        let mut ran = 0;
        for result in results {
            match result.unwrap() {
                Ok(receipt) => {
                    assert_eq!(receipt, Receipt { amount: 9, run: 1 });
                    ran += 1;
                }
                Err(e) => assert_eq!(e, refused(ErrorKind::InProgress)),
            }
        }
        assert!(ran >= 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    /// The same key with other arguments is refused, and does not run.
    pub async fn another_payload_is_refused(store: &AnyStore) {
        let idem = runtime(store);
        let runs = AtomicU64::new(0);
        let key = crate::unique("mismatch");
        place(&idem, &runs, Order::new(&key, 5)).await.unwrap();
        let other = place(&idem, &runs, Order::new(&key, 6)).await;
        assert_eq!(other, Err(refused(ErrorKind::KeyReused)));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    /// An `Err` is not stored: the key is free, and the redelivery runs.
    pub async fn an_error_is_not_stored(store: &AnyStore) {
        let idem = runtime(store);
        let runs = AtomicU64::new(0);
        let key = crate::unique("err");
        let mut failing = Order::new(&key, 5);
        failing.fail = true;
        assert_eq!(place(&idem, &runs, failing).await, Err(Failure::Failed(1)));
        let retried = place(&idem, &runs, Order::new(&key, 5)).await;
        assert_eq!(retried, Ok(Receipt { amount: 5, run: 2 }));
    }

    /// With `cache = "all"`, an `Err` is stored and replayed like an `Ok`.
    pub async fn cache_all_stores_errors(store: &AnyStore) {
        let idem = runtime(store);
        let runs = AtomicU64::new(0);
        let key = crate::unique("keep-err");
        let mut failing = Order::new(&key, 5);
        failing.fail = true;
        let first = place_keeping_errors(&idem, &runs, failing.clone()).await;
        assert_eq!(first, Err(Failure::Failed(1)));
        let (again, how) = observe(place_keeping_errors(&idem, &runs, failing)).await;
        assert_eq!(again, Err(Failure::Failed(1)));
        assert_eq!(how, Some(Execution::Replayed));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    /// With `on_conflict = "wait"`, a duplicate waits for the first and
    /// gets its result.
    pub async fn a_waiting_duplicate_gets_the_result(store: &AnyStore) {
        let idem = runtime(store);
        let runs = Arc::new(AtomicU64::new(0));
        let key = crate::unique("wait");
        let mut slow = Order::new(&key, 3);
        slow.hold_ms = 400;
        let first = {
            let (idem, runs, slow) = (idem.clone(), runs.clone(), slow.clone());
            tokio::spawn(async move { place_waiting(&idem, &runs, slow).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (second, how) = observe(place_waiting(&idem, &runs, slow)).await;
        assert_eq!(second, Ok(Receipt { amount: 3, run: 1 }));
        assert_eq!(how, Some(Execution::Replayed));
        assert_eq!(first.await.unwrap(), Ok(Receipt { amount: 3, run: 1 }));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    /// A key that is not one (empty, too long, not visible ASCII) is an
    /// error value, never a panic, and nothing runs.
    pub async fn an_invalid_key_is_refused(store: &AnyStore) {
        let idem = runtime(store);
        let runs = AtomicU64::new(0);
        for key in ["", "with space", &"k".repeat(300), "naïve"] {
            let result = place(&idem, &runs, Order::new(key, 1)).await;
            assert_eq!(result, Err(refused(ErrorKind::InvalidKey)), "{key:?}");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }

    /// A result over the storage limit: the first call gets it, later calls
    /// are refused as too large, and the body never runs again.
    pub async fn a_result_too_large_is_not_run_again(store: &AnyStore) {
        let idem = Idempotency::builder(store.unguarded())
            .limits(Limits::default().max_response_body(8))
            .build();
        let runs = AtomicU64::new(0);
        let key = crate::unique("large");
        let first = place(&idem, &runs, Order::new(&key, 123_456_789)).await;
        assert_eq!(
            first,
            Ok(Receipt {
                amount: 123_456_789,
                run: 1
            })
        );
        let again = place(&idem, &runs, Order::new(&key, 123_456_789)).await;
        assert_eq!(again, Err(refused(ErrorKind::TooLarge)));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    /// A caller that stops waiting does not stop a detached body: it
    /// finishes, its result is stored, and the next call replays it.
    pub async fn a_dropped_caller_still_completes(store: &AnyStore) {
        let idem = runtime(store);
        let runs = Arc::new(AtomicU64::new(0));
        let key = crate::unique("dropped");
        let mut slow = Order::new(&key, 4);
        slow.hold_ms = 300;
        let call = place_owned(idem.clone(), runs.clone(), slow.clone());
        // The caller gives up while the body runs.
        assert!(tokio::time::timeout(Duration::from_millis(100), call)
            .await
            .is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the body started");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (again, how) = observe(place_owned(idem, runs.clone(), slow)).await;
        assert_eq!(again, Ok(Receipt { amount: 4, run: 1 }));
        assert_eq!(how, Some(Execution::Replayed));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    /// The store out of reach: the call is refused as unavailable (a
    /// consumer redelivers it later), the body does not run, and once the
    /// store is back the call runs.
    pub async fn a_store_down_refuses_without_running(store: &AnyStore) {
        let runs = AtomicU64::new(0);
        let key = crate::unique("down");
        let Some(down) = crate::outage::Outage::of(store).await else {
            return;
        };
        let idem = Idempotency::new(down.store().unguarded());
        down.begin().await;
        let refused_call = place(&idem, &runs, Order::new(&key, 1)).await;
        assert_eq!(refused_call, Err(refused(ErrorKind::Unavailable)));
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        down.end().await;
        let ran = place(&idem, &runs, Order::new(&key, 1)).await;
        assert_eq!(ran, Ok(Receipt { amount: 1, run: 1 }));
    }
);
