//! The claimed-request guard, [`Claimed`]: owns a claim while its handler
//! runs (renewing the lease), then stores the response fenced by the owner
//! token, or releases the claim; dropped unfinished, it releases the claim.
//! A claim that is the handler's own transaction (the Postgres store, for
//! handlers that take `Tx`) has no lease: the transaction commits the
//! record or rolls everything back, and dropped, ends on the server.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use super::capture::ResponsePolicy;
use super::renewals::renewals;
use super::transaction::{Completion, OpenTx, TxCell, TxOutcome};
use super::{trace, Idempotency};
use crate::config::HandlerConfig;
use crate::problem::Problem;
use crate::store::StoreError;
use crate::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};

/// How a claimed request ended, when not with its handler's own answer.
#[derive(Debug)]
pub(crate) enum Diverted {
    /// Refused or failed: answer this problem.
    Refused(Problem),
    /// Another request with the key completed first (found when this one's
    /// record met it at commit, everything of this attempt rolled back):
    /// answer with its stored response.
    Replayed(Arc<StoredResponse>),
}

impl From<Problem> for Diverted {
    fn from(p: Problem) -> Self {
        Diverted::Refused(p)
    }
}

/// A claim the caller owns. Dropped without [`Claimed::run`] finishing (the
/// runtime shutting down), it releases the claim.
pub(crate) struct Claimed {
    idempotency: Idempotency,
    id: RecordId,
    fingerprint: Fingerprint,
    owner: OwnerToken,
    config: HandlerConfig,
    started: Instant,
    finished: bool,
    /// Whether the claim is a record with a lease (renewed, released); not
    /// when it is the handler's own transaction.
    leased: bool,
    /// The handler's own transaction, where the store offers one.
    tx: Option<Arc<TxCell>>,
}

impl Claimed {
    pub(super) fn new(
        idempotency: Idempotency,
        id: RecordId,
        fingerprint: Fingerprint,
        owner: OwnerToken,
        config: HandlerConfig,
        started: Instant,
    ) -> Self {
        idempotency.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        #[cfg(feature = "metrics")]
        crate::metrics::in_flight(config.scope, 1.0);
        Self {
            idempotency,
            id,
            fingerprint,
            owner,
            config,
            started,
            finished: false,
            leased: true,
            tx: None,
        }
    }

    /// A claim that is the handler's own transaction, begun and holding the
    /// key's lock, in `cell` (the handler's `Tx` takes it from there).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(super) fn in_transaction(
        idempotency: Idempotency,
        id: RecordId,
        fingerprint: Fingerprint,
        config: HandlerConfig,
        started: Instant,
        cell: Arc<TxCell>,
    ) -> Self {
        let mut claimed = Self::new(
            idempotency,
            id,
            fingerprint,
            OwnerToken::generate(),
            config,
            started,
        );
        claimed.leased = false;
        claimed.tx = Some(cell);
        claimed
    }

    /// Lets the handler write through its own transaction, committed with
    /// the record (see [`TxCell`]).
    pub(crate) fn with_transaction(mut self, cell: Option<Arc<TxCell>>) -> Self {
        if !self.leased {
            // Already the transaction's.
            return self;
        }
        if let Some(cell) = &cell {
            cell.adopt();
        }
        self.tx = cell;
        self
    }

    /// Which responses of this handler are stored, and up to what size.
    pub(crate) fn policy(&self) -> ResponsePolicy {
        ResponsePolicy {
            cache: self.config.cache,
            retry_inviting: self.config.retry_inviting,
            max_body: self.idempotency.limits().max_response_body,
        }
    }

    /// Drives the handler to completion: renews the lease meanwhile, then stores
    /// the response (fenced by the owner token) or releases the claim when the
    /// response is not to be stored (`None`) or the handler panicked.
    ///
    /// `handler` yields the live value to answer with and what to store.
    pub(crate) async fn run<T, F>(mut self, handler: F) -> Result<T, Diverted>
    where
        F: Future<Output = (T, Option<Arc<StoredResponse>>)>,
    {
        // The handler runs inside a span naming the scope (never the key).
        let span =
            tracing::info_span!(target: "idempotent", "idempotent", scope = self.config.scope);
        let mut handler = pin!(tracing::Instrument::instrument(
            AssertUnwindSafe(handler).catch_unwind(),
            span
        ));
        // Renewals run on the background thread: a handler that blocks its
        // worker (actix workers are single-threaded), even in its first
        // poll, must not starve them. Registering wakes no thread.
        let renewing = self.leased.then(|| {
            renewals().register(
                self.idempotency.clone(),
                self.id.clone(),
                self.owner,
                self.config,
            )
        });
        #[cfg(feature = "metrics")]
        let handler_started = Instant::now();
        let result = (&mut handler).await;
        #[cfg(feature = "metrics")]
        crate::metrics::handler(self.config.scope, handler_started.elapsed());
        drop(renewing);
        self.finished = true;
        let tx = self.tx.take().map(|cell| cell.take());
        let outcome = match (result, tx) {
            (Err(_panic), tx) => {
                tracing::error!(target: "idempotent", scope = self.config.scope, "handler panicked; its claim is released so a retry may run it again");
                self.abandon(tx, "panicked").await;
                return Err(Problem::handler_failed().into());
            }
            (Ok((value, None)), tx) => {
                self.abandon(tx, "executed_not_stored").await;
                value
            }
            (Ok((value, Some(response))), None | Some(TxOutcome::Unused)) => {
                self.complete(response).await;
                value
            }
            (Ok((_, Some(_))), Some(TxOutcome::Escaped)) => {
                tracing::error!(target: "idempotent", scope = self.config.scope, "the handler's transaction outlived the handler; it cannot be committed with the record");
                self.abandon(None, "transaction_escaped").await;
                return Err(Problem::transaction_escaped().into());
            }
            (Ok((value, Some(response))), Some(TxOutcome::Returned(tx))) => {
                self.commit(tx, response).await?;
                value
            }
        };
        self.idempotency.slot(&self.id).notify_waiters();
        Ok(outcome)
    }

    /// The response is not stored (or the handler panicked): the handler's
    /// transaction, if any, is rolled back and the claim released, so a retry
    /// runs again.
    async fn abandon(&self, tx: Option<TxOutcome>, outcome: &'static str) {
        if let Some(TxOutcome::Returned(tx)) = tx {
            tx.rollback().await;
        }
        if self.leased {
            if let Err(e) = self.idempotency.store().release(&self.id, self.owner).await {
                tracing::warn!(target: "idempotent", scope = self.config.scope, error = %e, "releasing the claim failed; the key frees up when its lease ends");
            }
        }
        self.idempotency.slot(&self.id).notify_waiters();
        trace(&self.config, outcome, self.started);
    }

    /// Stores the response (sealed, if the runtime seals), fenced by the
    /// owner token.
    async fn complete(&self, response: Arc<StoredResponse>) {
        let response = match self.idempotency.sealing().seal(&self.id, response) {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::error!(target: "idempotent", scope = self.config.scope, error = %e, "the response cannot be sealed; it is not stored");
                return self.abandon(None, "executed_not_stored").await;
            }
        };
        let stored = self
            .idempotency
            .store()
            .complete(
                &self.id,
                self.owner,
                self.fingerprint,
                response.clone(),
                self.config.ttl,
            )
            .await;
        match stored {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(target: "idempotent", scope = self.config.scope, "the claim was taken over after its lease ran out; the newer owner's result stands and this response was not stored")
            }
            Err(e) => {
                tracing::warn!(target: "idempotent", scope = self.config.scope, error = %e, "storing the response failed; retrying in the background");
                self.retry_completion(response);
            }
        }
        trace(&self.config, "executed", self.started);
    }

    /// Writes the record in the handler's own transaction and commits both.
    /// A response that cannot be replayed (over the storage limit) is not
    /// committed either: stored and committed are one event.
    async fn commit(
        &self,
        tx: Box<dyn OpenTx>,
        response: Arc<StoredResponse>,
    ) -> Result<(), Diverted> {
        if response.body.is_none() {
            self.abandon(Some(TxOutcome::Returned(tx)), "executed_not_stored")
                .await;
            return Err(Problem::transaction_response_too_large(
                self.idempotency.limits().max_response_body,
            )
            .into());
        }
        let Ok(response) = self.idempotency.sealing().seal(&self.id, response) else {
            self.abandon(Some(TxOutcome::Returned(tx)), "executed_not_stored")
                .await;
            return Err(Problem::transaction_response_too_large(
                self.idempotency.limits().max_response_body,
            )
            .into());
        };
        #[cfg(feature = "metrics")]
        let commit_started = Instant::now();
        let committed = tx
            .commit_with(
                self.id.clone(),
                self.owner,
                self.fingerprint,
                response,
                self.config.ttl,
            )
            .await;
        #[cfg(feature = "metrics")]
        crate::metrics::store("commit", commit_started.elapsed());
        match committed {
            Ok(Completion::Written) => {
                trace(&self.config, "executed", self.started);
                Ok(())
            }
            Ok(Completion::Lost(record)) => Err(self.lost(record)),
            Err(e) => {
                // Rolled back, or (the connection lost during COMMIT) maybe
                // committed: releasing is safe either way, since a completed
                // record has no owner to match.
                if self.leased {
                    self.idempotency.release_in_background(
                        self.id.clone(),
                        self.owner,
                        self.config.lease,
                    );
                }
                trace(&self.config, super::claim::store_outcome(&e), self.started);
                Err(Problem::store(&e).into())
            }
        }
    }

    /// This attempt's record was not written (everything rolled back): on the
    /// lease path, its claim was taken over; in a transaction, a live record
    /// was already there, which answers instead: another request with the key
    /// completed first (its response, replayed), or runs (409).
    fn lost(&self, record: Option<Record>) -> Diverted {
        let record = match record {
            Some(Record::Completed {
                fingerprint,
                response,
            }) => match self.idempotency.sealing().open(&self.id, response) {
                Ok(response) => Some(Record::Completed {
                    fingerprint,
                    response,
                }),
                Err(e) => {
                    trace(&self.config, "record_unreadable", self.started);
                    return Problem::store(&StoreError::Corrupt(e)).into();
                }
            },
            other => other,
        };
        match record {
            Some(Record::Completed {
                fingerprint,
                response,
            }) if fingerprint == self.fingerprint && response.body.is_some() => {
                tracing::info!(target: "idempotent", scope = self.config.scope, "another request with this key committed first; this attempt was rolled back and answers with its response");
                trace(&self.config, "replayed", self.started);
                Diverted::Replayed(response)
            }
            Some(Record::Completed { fingerprint, .. }) if fingerprint != self.fingerprint => {
                trace(&self.config, "mismatch", self.started);
                Problem::key_reused().into()
            }
            Some(Record::Completed { response, .. }) => {
                trace(&self.config, "replayed", self.started);
                Problem::response_not_stored(response.status).into()
            }
            _ => {
                tracing::warn!(target: "idempotent", scope = self.config.scope, "the claim was taken over after its lease ran out; this attempt's writes were rolled back and the newer owner's result stands");
                trace(&self.config, "lease_lost", self.started);
                Problem::lease_lost().into()
            }
        }
    }

    /// Retries a failed completion until it lands or the lease would have run
    /// out (after which another request may have claimed the key).
    fn retry_completion(&self, response: Arc<StoredResponse>) {
        let idempotency = self.idempotency.clone();
        let id = self.id.clone();
        let owner = self.owner;
        let fingerprint = self.fingerprint;
        let config = self.config;
        tokio::spawn(async move {
            let until = Instant::now() + config.lease;
            let mut delay = Duration::from_millis(50);
            loop {
                tokio::time::sleep(delay).await;
                match idempotency
                    .store()
                    .complete(&id, owner, fingerprint, response.clone(), config.ttl)
                    .await
                {
                    Ok(_) => break,
                    Err(e) if Instant::now() >= until => {
                        tracing::error!(target: "idempotent", scope = config.scope, error = %e, "giving up storing a response; a retry after the lease ends will run the handler again");
                        break;
                    }
                    Err(_) => delay = (delay * 2).min(Duration::from_secs(1)),
                }
            }
            idempotency.slot(&id).notify_waiters();
        });
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        self.idempotency
            .inner
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
        #[cfg(feature = "metrics")]
        crate::metrics::in_flight(self.config.scope, -1.0);
        if self.finished || !self.leased {
            // Unfinished and not leased: the transaction (in the cell) ends on
            // the server when it is dropped.
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let idempotency = self.idempotency.clone();
            let id = self.id.clone();
            let owner = self.owner;
            rt.spawn(async move {
                let _ = idempotency.store().release(&id, owner).await;
                idempotency.slot(&id).notify_waiters();
            });
        }
    }
}
