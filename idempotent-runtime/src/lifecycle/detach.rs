//! Detach on disconnect: a handler whose client hangs up still runs to
//! completion (and its response is stored), without a task per request when
//! the client stays.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::problem::Problem;

/// Runs `fut` here, in the caller's task, and hands it to a task of its own
/// (`tokio::spawn`) only if the caller is dropped first (the client went
/// away): the handler then still finishes and its response is stored.
/// Spawning every handler up front did the same at the price of a task
/// allocation and two task switches per request.
///
/// A panic outside the handler (whose own panics the life cycle catches),
/// say in a store, answers [`Problem::idempotency_failed`] rather than
/// unwinding through the connection.
pub(crate) async fn finish_even_if_dropped<F, T>(fut: F) -> F::Output
where
    F: Future<Output = Result<T, Problem>> + Send + 'static,
    T: Send + 'static,
{
    Detach {
        fut: Some(Box::pin(fut)),
        spawn: |f| drop(tokio::spawn(f)),
    }
    .await
}

/// [`finish_even_if_dropped`] for a `!Send` future on a local task set
/// (actix workers): handed to `tokio::task::spawn_local`.
#[cfg(feature = "actix")]
pub(crate) async fn finish_even_if_dropped_local<F, T>(fut: F) -> F::Output
where
    F: Future<Output = Result<T, Problem>> + 'static,
    T: 'static,
{
    Detach {
        fut: Some(Box::pin(fut)),
        spawn: |f| drop(tokio::task::spawn_local(f)),
    }
    .await
}

struct Detach<F: Future> {
    fut: Option<Pin<Box<F>>>,
    spawn: fn(Pin<Box<F>>),
}

impl<F: Future<Output = Result<T, Problem>>, T> Future for Detach<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Pending;
        };
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx)));
        let out = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(out)) => out,
            // Dropped here, not handed to a task that would poll it again.
            Err(_) => Err(Problem::idempotency_failed()),
        };
        self.fut = None;
        Poll::Ready(out)
    }
}

impl<F: Future> Drop for Detach<F> {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            // Outside a runtime (shutting down) there is nowhere to go: the
            // dropped future's claim guard then releases the claim.
            if tokio::runtime::Handle::try_current().is_ok() {
                let spawn = self.spawn;
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| spawn(fut)));
            }
        }
    }
}
