//! Identify and claim: read a request's key and principal, then claim its
//! record atomically, or decide what to answer instead (replay, 409, 422,
//! 503), waiting for a running duplicate when the handler asks to.

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::claimed::Claimed;
use super::transaction::TxCell;
use super::{trace, Idempotency};
use crate::config::{HandlerConfig, OnConflict, Principal, RequestHead};
use crate::problem::Problem;
use crate::store::{Claim, StoreError};
use crate::{Fingerprint, IdempotencyKey, OwnerToken, Record, RecordId, StoredResponse};

/// What to do with a request after [`Idempotency::begin`].
pub(crate) enum Begin {
    /// Replay this stored response.
    Replay(Arc<StoredResponse>),
    /// Answer this problem; the handler does not run.
    Refuse(Problem),
    /// The caller owns the claim and must run the handler through
    /// [`Claimed::run`].
    Run(Claimed),
}

impl Idempotency {
    /// Reads the key and principal of a request. `Ok(None)`: no key and the
    /// handler does not require one, so it runs without idempotency.
    pub(crate) fn identify(
        &self,
        config: &HandlerConfig,
        head: &RequestHead<'_>,
    ) -> Result<Option<RecordId>, Problem> {
        self.identify_with(config, head, None)
    }

    /// As [`identify`](Self::identify), with the key given (`Some`: taken
    /// from the request's message, say) rather than read from the header.
    pub(crate) fn identify_with(
        &self,
        config: &HandlerConfig,
        head: &RequestHead<'_>,
        given: Option<&[u8]>,
    ) -> Result<Option<RecordId>, Problem> {
        let started = Instant::now();
        // A refusal here is the request's one event, as later ones are.
        let refuse = |outcome: &'static str, problem: Problem| {
            trace(config, outcome, started);
            problem
        };
        let raw = match given {
            Some(raw) => Some(raw),
            None => head
                .header_bytes(config.header)
                .map_err(|_| refuse("invalid_key", Problem::repeated_key(config.header)))?,
        };
        let Some(raw) = raw else {
            return if config.required {
                Err(refuse("missing_key", Problem::missing_key(config.header)))
            } else {
                Ok(None)
            };
        };
        let key = IdempotencyKey::parse_with_limit(raw, self.limits().max_key_len)
            .map_err(|e| refuse("invalid_key", Problem::invalid_key(&e)))?;
        let principal = match config.principal {
            Principal::None => None,
            Principal::Header(h) => Some(head.header(h).map(str::to_owned).ok_or_else(|| {
                refuse("missing_principal", Problem::missing_principal_header(h))
            })?),
            Principal::Fn(f) => Some(f(head).ok_or_else(|| {
                refuse(
                    "missing_principal",
                    Problem::missing_principal("the request"),
                )
            })?),
        };
        Ok(Some(RecordId::new_static(
            config.scope,
            principal.as_deref(),
            &key,
        )))
    }

    /// Claims the identity, or says what to answer instead. `tx`: where the
    /// handler's transaction goes, if the store offers one; a transactional
    /// handler on the Postgres store claims inside it (see
    /// [`begin_in_transaction`](Self::begin_in_transaction)).
    pub(crate) async fn begin(
        &self,
        config: &HandlerConfig,
        id: RecordId,
        fingerprint: Fingerprint,
        tx: Option<Arc<TxCell>>,
    ) -> Begin {
        let started = Instant::now();
        let deadline = match config.on_conflict {
            OnConflict::Reject => None,
            OnConflict::Wait(d) => Some(started + d),
        };
        if self.inner.draining.load(Ordering::Acquire) {
            trace(config, "shutting_down", started);
            return Begin::Refuse(Problem::shutting_down());
        }
        #[cfg(feature = "postgres")]
        if let (true, Some(cell)) = (config.transactional, &tx) {
            if let Some(store) = self.postgres() {
                let store = store.clone();
                let cell = cell.clone();
                return self
                    .begin_in_transaction(&store, config, id, fingerprint, cell, started, deadline)
                    .await;
            }
        }
        let slot = self.slot(&id);
        // Whether the store was asked to publish this record's change (once,
        // before the first wait).
        let mut watching = false;
        loop {
            // Registered before the read, so a completion between the read and
            // the wait still wakes us.
            let mut notified = pin!(slot.notified());
            if deadline.is_some() {
                notified.as_mut().enable();
            }
            let owner = OwnerToken::generate();
            let claim = self
                .store()
                .claim(&id, fingerprint, owner, config.lease)
                .await;
            let record = match claim {
                Ok(Claim::Acquired) => None,
                // Our own claim, read back: a command re-sent after a dropped
                // connection, whose first attempt had landed.
                Ok(Claim::Existing(Record::InProgress { owner: o, .. })) if o == owner => None,
                Ok(Claim::Existing(record)) => Some(record),
                Err(e) => {
                    // The claim may have landed although its answer was lost
                    // (timeout, connection dropped): release it in the
                    // background, or it would block the key, ownerless, for a
                    // whole lease. A full store or a record it cannot read
                    // answered for sure, and nothing was written.
                    if matches!(e, StoreError::Timeout | StoreError::Unavailable(_)) {
                        self.release_in_background(id.clone(), owner, config.lease);
                    }
                    trace(config, store_outcome(&e), started);
                    return Begin::Refuse(Problem::store(&e));
                }
            };
            let Some(record) = record else {
                return Begin::Run(
                    Claimed::new(self.clone(), id, fingerprint, owner, *config, started)
                        .with_transaction(tx),
                );
            };
            if record.fingerprint().is_some_and(|f| f != fingerprint) {
                trace(config, "mismatch", started);
                return Begin::Refuse(Problem::key_reused());
            }
            match record {
                Record::Completed { response, .. } => {
                    return self.replay(config, &id, response, started);
                }
                Record::InProgress { .. } | Record::Running => {
                    let now = Instant::now();
                    match deadline {
                        Some(deadline) if now < deadline && !watching => {
                            // Then read again: a change before the store
                            // knew we watch was not published.
                            watching = true;
                            let watch_for = (deadline - now).max(Duration::from_millis(1));
                            if let Err(e) = self.store().watch(&id, watch_for).await {
                                tracing::debug!(target: "idempotent", scope = config.scope, error = %e, "cannot watch a record; waiting by re-reading it");
                            }
                        }
                        Some(deadline) if now < deadline => {
                            let nap = (deadline - now).min(self.inner.wait_recheck);
                            let _ = tokio::time::timeout(nap, notified).await;
                        }
                        _ => {
                            trace(config, "conflict", started);
                            return Begin::Refuse(Problem::request_in_progress(deadline.is_some()));
                        }
                    }
                }
            }
        }
    }

    /// The claim of a transactional handler on the Postgres store: its own
    /// transaction, holding the key's lock (see `store/postgres/held.rs`). A
    /// duplicate in flight is refused, or waited for on the lock itself.
    #[cfg(feature = "postgres")]
    #[allow(clippy::too_many_arguments)]
    async fn begin_in_transaction(
        &self,
        store: &crate::store::postgres::PostgresStore,
        config: &HandlerConfig,
        id: RecordId,
        fingerprint: Fingerprint,
        cell: Arc<TxCell>,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Begin {
        use crate::store::postgres::TxClaim;
        loop {
            #[cfg(feature = "metrics")]
            let claim_started = Instant::now();
            // Boxed: inline, its statements' futures would make every
            // future holding this one (the whole exchange) larger.
            let claim = Box::pin(store.claim_in_transaction(&id, deadline)).await;
            #[cfg(feature = "metrics")]
            crate::metrics::store("claim", claim_started.elapsed());
            let record = match claim {
                Ok(TxClaim::Acquired(held)) => {
                    cell.adopt_begun(Box::new(held));
                    return Begin::Run(Claimed::in_transaction(
                        self.clone(),
                        id,
                        fingerprint,
                        *config,
                        started,
                        cell,
                    ));
                }
                Ok(TxClaim::Busy) => {
                    trace(config, "conflict", started);
                    return Begin::Refuse(Problem::request_in_progress(deadline.is_some()));
                }
                Ok(TxClaim::Existing(record)) => record,
                Err(e) => {
                    trace(config, store_outcome(&e), started);
                    return Begin::Refuse(Problem::store(&e));
                }
            };
            if record.fingerprint().is_some_and(|f| f != fingerprint) {
                trace(config, "mismatch", started);
                return Begin::Refuse(Problem::key_reused());
            }
            match record {
                Record::Completed { response, .. } => {
                    return self.replay(config, &id, response, started);
                }
                // A claim of the lease path (a handler of this scope without
                // `Tx`): waited for by re-reading, as the lease path does.
                Record::InProgress { .. } | Record::Running => {
                    let now = Instant::now();
                    match deadline {
                        Some(deadline) if now < deadline => {
                            tokio::time::sleep((deadline - now).min(self.inner.wait_recheck)).await;
                        }
                        _ => {
                            trace(config, "conflict", started);
                            return Begin::Refuse(Problem::request_in_progress(deadline.is_some()));
                        }
                    }
                }
            }
        }
    }

    /// The answer of a duplicate that found `stored`: the response opened
    /// and replayed, 410 when it was not kept, 500 when it cannot be opened
    /// (the handler does not run again).
    fn replay(
        &self,
        config: &HandlerConfig,
        id: &RecordId,
        stored: Arc<StoredResponse>,
        started: Instant,
    ) -> Begin {
        let response = match self.sealing().open(id, stored) {
            Ok(response) => response,
            Err(e) => {
                trace(config, "record_unreadable", started);
                return Begin::Refuse(Problem::store(&StoreError::Corrupt(e)));
            }
        };
        trace(config, "replayed", started);
        match response.body {
            Some(_) => Begin::Replay(response),
            None => Begin::Refuse(Problem::response_not_stored(response.status)),
        }
    }
}

/// The outcome of a request whose store operation failed with `e`.
pub(super) fn store_outcome(e: &StoreError) -> &'static str {
    match e {
        StoreError::Corrupt(_) => "record_unreadable",
        _ => "store_error",
    }
}
