//! Drain on shutdown: stop taking new claims, let every running handler
//! (those whose client hung up included) finish and store its response, up
//! to a deadline; release the claims of the handlers cut off there.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::renewals::renewals;
use super::Idempotency;

/// How often a drain looks whether the last handler has finished.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// What [`Idempotency::drain`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Requests that held a claim when the drain began and that finished
    /// (stored their response or released their claim) within the deadline.
    pub finished: usize,
    /// Handlers still running at the deadline, whose claims were released
    /// so that a retry (on another process, or after a restart) may run them
    /// at once rather than wait for their lease to end.
    pub cut_off: usize,
}

impl Idempotency {
    /// Drains this runtime for shutdown: from now on no request claims a key
    /// (keyed requests get 503 `shutting-down` with `Retry-After`, for a
    /// load balancer to send elsewhere); then it waits until every request
    /// holding a claim has finished and stored its response, those whose
    /// client hung up included, for at most `deadline`. The claims of
    /// handlers still running then are released.
    ///
    /// Call it after the server stopped accepting connections and before the
    /// async runtime ends (a handler whose client hung up runs as a task of
    /// its own, which ends with the runtime). With axum, after
    /// `axum::serve(..).with_graceful_shutdown(..)` returns; with actix-web,
    /// between pausing the server and stopping it (see the README).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use idempotent_runtime::Idempotency;
    /// use idempotent_runtime::store::memory::MemoryStore;
    ///
    /// let idempotency = Idempotency::new(MemoryStore::default());
    /// // … serve until a shutdown signal, then:
    /// let drained = idempotency.drain(Duration::from_secs(10)).await;
    /// assert_eq!(drained.cut_off, 0);
    /// # }
    /// ```
    pub async fn drain(&self, deadline: Duration) -> Drained {
        self.inner.draining.store(true, Ordering::Release);
        let at_start = self.inner.in_flight.load(Ordering::Acquire);
        let until = Instant::now() + deadline;
        while self.inner.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < until {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let cut = renewals().take_all_of(self);
        for (id, owner) in &cut {
            if let Err(e) = self.store().release(id, *owner).await {
                tracing::warn!(target: "idempotent", error = %e, "releasing a cut-off handler's claim failed; its key frees up when its lease ends");
            }
            self.slot(id).notify_waiters();
        }
        if !cut.is_empty() {
            tracing::warn!(target: "idempotent", cut_off = cut.len(), "drain deadline passed; the claims of the handlers still running were released");
        }
        Drained {
            finished: at_start.saturating_sub(cut.len()),
            cut_off: cut.len(),
        }
    }

    /// Whether [`drain`](Self::drain) has begun.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }
}
