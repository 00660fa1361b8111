//! `POST /payments/batch`: each item idempotent on its own key, through the
//! plain API.

use idempotent_runtime::{Fingerprint, HandlerConfig, Idempotency, IdempotencyKey, StoredResponse};
use serde::{Deserialize, Serialize};

use crate::{failure_body, NewPayment, Payments};

/// `POST /payments/batch` body.
#[derive(Deserialize)]
pub struct Batch {
    /// The items, each with its own idempotency key.
    pub items: Vec<BatchItem>,
}

/// One batch item.
#[derive(Deserialize, Serialize)]
pub struct BatchItem {
    /// Its idempotency key, read as an `Idempotency-Key` header value is:
    /// `q-7f3a`, `"q-7f3a"` (an RFC 8941 string) and ` q-7f3a` are one key.
    pub key: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// What a batch item asks for, without its key: what its fingerprint covers,
/// so that one key spelled two ways is one request, not a reuse.
#[derive(Serialize)]
struct ItemPayload<'a> {
    amount: i64,
    currency: &'a str,
}

/// Runs a batch: each item idempotent on its own key, through the plain API.
pub async fn run_batch(
    idempotency: &Idempotency,
    payments: &Payments,
    batch: Batch,
) -> Vec<serde_json::Value> {
    static ITEMS: HandlerConfig = HandlerConfig::new("payments-batch");
    let mut results = Vec::with_capacity(batch.items.len());
    for item in batch.items {
        let Ok(key) = IdempotencyKey::parse(item.key.as_bytes()) else {
            results
                .push(serde_json::json!({"key": item.key, "status": 400, "error": "invalid key"}));
            continue;
        };
        let payload = ItemPayload {
            amount: item.amount,
            currency: &item.currency,
        };
        let fingerprint = Fingerprint::of_bytes(&serde_json::to_vec(&payload).unwrap_or_default());
        let payments = payments.clone();
        let req = NewPayment::new(item.amount, item.currency.clone());
        let outcome = idempotency
            .run(&ITEMS, None, &key, fingerprint, || async move {
                // The plain API hands out no `Tx`: with `--store postgres`
                // a batch item's payment commits on its own, before its
                // record (as with Redis), not together with it.
                match payments.create(None, req).await {
                    Ok(p) => StoredResponse::new(201, serde_json::to_vec(&p).unwrap_or_default()),
                    Err(status) => StoredResponse::new(status, failure_body(status).to_string()),
                }
            })
            .await;
        results.push(match outcome {
            Ok(o) => {
                let body = o.response().body.clone().unwrap_or_default();
                serde_json::json!({
                    "key": item.key,
                    "status": o.response().status,
                    "replayed": o.is_replay(),
                    "payment": serde_json::from_slice::<serde_json::Value>(&body).ok(),
                })
            }
            Err(problem) => serde_json::json!({"key": item.key, "status": problem.status, "error": problem.detail}),
        });
    }
    results
}
