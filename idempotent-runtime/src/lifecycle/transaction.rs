//! The handler's own database transaction, where the store offers one: the
//! handler writes through it, and the runtime commits it together with the
//! completed record, or rolls it back, so that "stored" and "committed" are
//! the same event.
//!
//! The store-specific part (the `Tx` extractor, the transaction itself) lives
//! with its store; this module holds what the life cycle needs of it: a cell
//! that a request carries from extraction to completion, and the transaction
//! handed back through it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::store::StoreError;
use crate::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What became of a record written in the handler's transaction.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) enum Completion {
    /// Written, and committed with the handler's writes.
    Written,
    /// Not written: the claim was no longer this request's, or a live record
    /// was already there (the record, where it was read back). Everything
    /// was rolled back.
    Lost(Option<Record>),
}

/// A transaction of the handler: begun by the life cycle (the claim itself,
/// on the in-transaction path) or by the handler's first statement, and
/// handed back when the handler finished.
pub(crate) trait OpenTx: Send + 'static {
    /// Writes the completed record in this transaction, fenced by `owner`
    /// (on the lease path; on the in-transaction path the lock and the
    /// record's primary key fence it), and commits both.
    fn commit_with(
        self: Box<Self>,
        id: RecordId,
        owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> BoxFuture<Result<Completion, StoreError>>;

    /// The transaction's connection, for the handler's statements.
    #[cfg(feature = "postgres")]
    fn connection(&mut self) -> &mut sqlx::PgConnection;

    /// Commits without a record (a request without a key).
    fn commit(self: Box<Self>) -> BoxFuture<Result<(), StoreError>>;

    /// Rolls back: nothing of the attempt remains.
    fn rollback(self: Box<Self>) -> BoxFuture<()>;
}

/// Where a request's transaction is, from the `Tx` extractor to the end of
/// the life cycle. Requests carry it in their extensions (`Arc<TxCell>`),
/// put there by whichever comes first: the adapter or the extractor.
#[derive(Default)]
pub(crate) struct TxCell(Mutex<TxState>);

#[derive(Default)]
enum TxState {
    /// No handler of the life cycle runs with it (yet): a transaction may
    /// not begin, or nobody would commit it.
    #[default]
    Unadopted,
    /// The life cycle will run the handler and resolve the transaction.
    Adopted,
    /// The life cycle began the transaction (it is the claim): the
    /// handler's `Tx` takes it on first use.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Ready(Box<dyn OpenTx>),
    /// The handler's `Tx` holds a live transaction.
    Live,
    /// The handler finished and handed its transaction back.
    Returned(Box<dyn OpenTx>),
}

/// What became of a request's transaction once its handler finished.
pub(crate) enum TxOutcome {
    /// The handler began none: ordinary store semantics.
    Unused,
    /// The handler's `Tx` is still alive (moved out of the handler, into a
    /// task say): it cannot be committed with the record.
    Escaped,
    /// The transaction, to commit with the record or roll back.
    Returned(Box<dyn OpenTx>),
}

impl TxCell {
    fn state(&self) -> MutexGuard<'_, TxState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The life cycle takes charge of the transaction: from now on the
    /// handler may begin one.
    pub(crate) fn adopt(&self) {
        let mut state = self.state();
        if matches!(*state, TxState::Unadopted) {
            *state = TxState::Adopted;
        }
    }

    /// The life cycle takes charge of the transaction it began (the claim):
    /// the handler's `Tx` takes it on first use.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn adopt_begun(&self, tx: Box<dyn OpenTx>) {
        *self.state() = TxState::Ready(tx);
    }

    /// Called by the `Tx` extractor on first use: the transaction the life
    /// cycle began, if it did.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn take_begun(&self) -> Option<Box<dyn OpenTx>> {
        let mut state = self.state();
        match std::mem::replace(&mut *state, TxState::Live) {
            TxState::Ready(tx) => Some(tx),
            other => {
                *state = other;
                None
            }
        }
    }

    /// Called by the `Tx` extractor before it begins a transaction: `false`
    /// when no life cycle adopted the cell (the handler is not idempotent),
    /// so that no transaction begins that nobody would commit.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn begin_live(&self) -> bool {
        let mut state = self.state();
        match *state {
            TxState::Adopted => {
                *state = TxState::Live;
                true
            }
            _ => false,
        }
    }

    /// Called by the `Tx` extractor when it is dropped with a live
    /// transaction.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn hand_back(&self, tx: Box<dyn OpenTx>) {
        *self.state() = TxState::Returned(tx);
    }

    /// Called once the handler finished: what became of the transaction.
    pub(crate) fn take(&self) -> TxOutcome {
        match std::mem::take(&mut *self.state()) {
            TxState::Unadopted | TxState::Adopted => TxOutcome::Unused,
            TxState::Live => TxOutcome::Escaped,
            // Begun as the claim and never used: the record still commits
            // in it.
            TxState::Ready(tx) | TxState::Returned(tx) => TxOutcome::Returned(tx),
        }
    }
}
