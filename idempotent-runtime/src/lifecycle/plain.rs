//! The life cycle as plain API, for code without the attribute (a batch
//! endpoint making each item idempotent on its own key), and the operator
//! API (look a record up, forget it).

use std::future::Future;
use std::sync::Arc;

use super::claim::Begin;
use super::claimed::Diverted;
use super::detach::finish_even_if_dropped;
use super::Idempotency;
use crate::config::HandlerConfig;
use crate::problem::Problem;
use crate::store::StoreError;
use crate::{Fingerprint, IdempotencyKey, Record, RecordId, StoredResponse};

/// What the plain API answers when it did not refuse the request.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// This call ran the block; here is what it returned.
    Executed(Arc<StoredResponse>),
    /// An earlier call with the same key ran it; here is what it returned.
    Replayed(Arc<StoredResponse>),
}

impl Outcome {
    /// The response, whoever produced it.
    pub fn response(&self) -> &Arc<StoredResponse> {
        match self {
            Outcome::Executed(r) | Outcome::Replayed(r) => r,
        }
    }

    /// Whether it was replayed.
    pub fn is_replay(&self) -> bool {
        matches!(self, Outcome::Replayed(_))
    }
}

impl Idempotency {
    /// For operators: the record of `key` sent by `principal` under `scope`.
    /// On the Postgres store, a handler that takes `Tx` and still runs
    /// writes nothing before it commits; it shows as [`Record::Running`]
    /// (read from `pg_locks`).
    pub async fn lookup(
        &self,
        scope: &str,
        principal: Option<&str>,
        key: &IdempotencyKey,
    ) -> Result<Option<Record>, StoreError> {
        let id = RecordId::new(scope, principal, key);
        let record = match self.store().get(&id).await? {
            Some(Record::Completed {
                fingerprint,
                response,
            }) => Some(Record::Completed {
                fingerprint,
                response: self
                    .sealing()
                    .open(&id, response)
                    .map_err(StoreError::Corrupt)?,
            }),
            other => other,
        };
        // A handler in its own transaction has written nothing yet: it
        // shows as the key's lock, held.
        #[cfg(feature = "postgres")]
        if record.is_none() {
            if let Some(store) = self.postgres() {
                if store.running(&id).await? {
                    return Ok(Some(Record::Running));
                }
            }
        }
        Ok(record)
    }

    /// For operators: deletes the record of `key` sent by `principal` under
    /// `scope`, so the next request with it runs again. `Ok(false)`: none.
    pub async fn forget(
        &self,
        scope: &str,
        principal: Option<&str>,
        key: &IdempotencyKey,
    ) -> Result<bool, StoreError> {
        let id = RecordId::new(scope, principal, key);
        let deleted = self.store().delete(&id).await?;
        self.slot(&id).notify_waiters();
        Ok(deleted)
    }

    /// The plain API: runs `block` at most once per (`config`'s scope,
    /// `principal`, `key`), with the same guarantees as an `#[idempotent]`
    /// handler. A batch endpoint uses it to make each item idempotent on its own
    /// key; the fingerprint is whatever identifies the item's payload.
    ///
    /// The block runs to completion and its result is stored even if the
    /// caller stops waiting (it is then handed to a Tokio task). Which
    /// results are stored follows `config`'s cache policy and `Cache-Control:
    /// no-store`, as for handlers. Refusals (409, 422, 503, …) come back as a
    /// [`Problem`].
    ///
    /// ```
    /// use idempotent_runtime::{Fingerprint, HandlerConfig, Idempotency, IdempotencyKey, StoredResponse};
    /// use idempotent_runtime::store::memory::MemoryStore;
    ///
    /// static ITEMS: HandlerConfig = HandlerConfig::new("batch-items");
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let idempotency = Idempotency::new(MemoryStore::default());
    /// let key = IdempotencyKey::parse(b"item-1").unwrap();
    /// let fp = Fingerprint::of_bytes(b"{\"amount\":5}");
    /// let first = idempotency
    ///     .run(&ITEMS, None, &key, fp, || async { StoredResponse::new(201, "paid") })
    ///     .await
    ///     .unwrap();
    /// let again = idempotency
    ///     .run(&ITEMS, None, &key, fp, || async { StoredResponse::new(201, "paid twice!") })
    ///     .await
    ///     .unwrap();
    /// assert!(!first.is_replay() && again.is_replay());
    /// assert_eq!(again.response().body.as_deref(), Some(&b"paid"[..]));
    /// # }
    /// ```
    pub async fn run<F, Fut>(
        &self,
        config: &HandlerConfig,
        principal: Option<&str>,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        block: F,
    ) -> Result<Outcome, Problem>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StoredResponse> + Send + 'static,
    {
        let id = RecordId::new_static(config.scope, principal, key);
        match self.begin(config, id, fingerprint, None).await {
            Begin::Replay(r) => Ok(Outcome::Replayed(r)),
            Begin::Refuse(p) => Err(p),
            Begin::Run(claimed) => {
                let policy = claimed.policy();
                let fut = block();
                let task = claimed.run(async move {
                    let response = Arc::new(fut.await);
                    let stored = policy.capture_whole(&response);
                    (response, stored)
                });
                let task = async move {
                    match task.await {
                        Ok(response) => Ok(Outcome::Executed(response)),
                        Err(Diverted::Refused(p)) => Err(p),
                        Err(Diverted::Replayed(r)) => Ok(Outcome::Replayed(r)),
                    }
                };
                finish_even_if_dropped(tracing::Instrument::in_current_span(task)).await
            }
        }
    }
}
