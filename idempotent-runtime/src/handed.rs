//! What the runtime hands a body besides the arguments its caller passed:
//! nothing, or the Postgres store's `Tx`, opened as the claim. The doors
//! whose signatures leave no room for an extractor take it this way: the
//! function form and tonic methods, where the user writes a `Tx` argument
//! that callers never pass.

use std::sync::Arc;

use crate::lifecycle::TxCell;
use crate::problem::Problem;
use crate::Idempotency;

/// What the body is given besides its arguments: nothing, or the
/// runtime's `Tx` (opened on the Postgres store, committed with the
/// record).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the runtime's `Tx`",
    label = "a `Tx` argument is handed over by the runtime",
    note = "take `idempotent_runtime::tx::Tx` (feature `postgres`) to write in the transaction the record commits in"
)]
pub trait BodyArg: Sized {
    /// Prepares for a call on `runtime` (before the claim).
    fn prepare(runtime: &Idempotency) -> Result<Slot, Problem>;
    /// The value, once the key is claimed.
    fn make(slot: Slot) -> Result<Self, Problem>;
}

/// Where a body's `Tx` comes from.
pub struct Slot {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    runtime: Idempotency,
    cell: Option<Arc<TxCell>>,
}

impl Slot {
    /// The cell the claim puts the transaction in, where there is one.
    pub(crate) fn cell(&self) -> Option<Arc<TxCell>> {
        self.cell.clone()
    }
}

impl BodyArg for () {
    fn prepare(runtime: &Idempotency) -> Result<Slot, Problem> {
        Ok(Slot {
            runtime: runtime.clone(),
            cell: None,
        })
    }
    fn make(_: Slot) -> Result<(), Problem> {
        Ok(())
    }
}

#[cfg(feature = "postgres")]
impl BodyArg for crate::tx::Tx {
    fn prepare(runtime: &Idempotency) -> Result<Slot, Problem> {
        if runtime.postgres().is_none() {
            return Err(Problem::no_transactional_store());
        }
        Ok(Slot {
            runtime: runtime.clone(),
            cell: Some(Arc::default()),
        })
    }
    fn make(slot: Slot) -> Result<Self, Problem> {
        let cell = slot.cell.unwrap_or_default();
        crate::tx::Tx::new(&slot.runtime, || cell)
    }
}

/// A `Tx` where the store has one (the Postgres store), else `None`: one
/// function for every store.
#[cfg(feature = "postgres")]
impl BodyArg for Option<crate::tx::Tx> {
    fn prepare(runtime: &Idempotency) -> Result<Slot, Problem> {
        Ok(Slot {
            runtime: runtime.clone(),
            cell: runtime.postgres().map(|_| Arc::default()),
        })
    }
    fn make(slot: Slot) -> Result<Self, Problem> {
        match slot.cell {
            Some(cell) => crate::tx::Tx::new(&slot.runtime, || cell).map(Some),
            None => Ok(None),
        }
    }
}
