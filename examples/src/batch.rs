//! `POST /payments/batch`: each item idempotent on its own key, through the
//! plain API.

use idempotent_runtime::{Fingerprint, HandlerConfig, Idempotency, IdempotencyKey, StoredResponse};
use serde::{Deserialize, Serialize};

use crate::{failure_body, NewPayment, Payments};

/// `POST /payments/batch` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Batch {
    /// The items, each with its own idempotency key.
    pub items: Vec<BatchItem>,
}

/// One batch item.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    /// Its idempotency key, read as an `Idempotency-Key` header value is:
    /// `q-7f3a`, `"q-7f3a"` (an RFC 8941 string) and ` q-7f3a` are one key.
    pub key: String,
    /// Amount in minor units.
    #[serde(deserialize_with = "crate::payments::integer")]
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

/// What became of one batch item, in the order of the items.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum BatchResult {
    /// It ran now, or ran before and was replayed.
    Done {
        /// The item's key, as sent.
        key: String,
        /// The status of its outcome (201, or the failure's).
        status: u16,
        /// Whether this is the outcome of an earlier request with the key.
        replayed: bool,
        /// The payment (or the failure's body); `null` if it cannot be read.
        #[schema(value_type = Option<Object>)]
        payment: Option<serde_json::Value>,
    },
    /// It was refused: its key is invalid, reused for another item, still
    /// running, or the store failed.
    Refused {
        /// The item's key, as sent.
        key: String,
        /// The refusal's status (400, 409, 422, 503, …).
        status: u16,
        /// Why.
        error: String,
    },
}

/// Runs a batch: each item idempotent on its own key, through the plain API.
pub async fn run_batch(
    idempotency: &Idempotency,
    payments: &Payments,
    batch: Batch,
) -> Vec<BatchResult> {
    static ITEMS: HandlerConfig = HandlerConfig::new("payments-batch");
    let mut results = Vec::with_capacity(batch.items.len());
    for item in batch.items {
        let Ok(key) = IdempotencyKey::parse(item.key.as_bytes()) else {
            results.push(BatchResult::Refused {
                key: item.key,
                status: 400,
                error: "invalid key".into(),
            });
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
                BatchResult::Done {
                    key: item.key,
                    status: o.response().status,
                    replayed: o.is_replay(),
                    payment: serde_json::from_slice(&body).ok(),
                }
            }
            Err(problem) => BatchResult::Refused {
                key: item.key,
                status: problem.status,
                error: problem.detail,
            },
        });
    }
    results
}
