//! Shutting down: on SIGTERM or Ctrl-C, stop taking work, let what runs
//! finish (handlers whose client hung up included), then exit.

use std::time::Duration;

use idempotent_runtime::Drained;

/// How long, on SIGTERM or Ctrl-C, the servers let running handlers (those
/// whose client hung up included) finish before they exit anyway: the
/// claims of handlers still running then are released, so that a retry
/// need not wait for their lease to end.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Reports on stderr the handlers a drain cut off, if any.
#[allow(clippy::print_stderr)]
pub fn report_drain(drained: Drained) {
    if drained.cut_off > 0 {
        eprintln!(
            "shutdown: {} handler(s) still running after {} s were cut off; their keys were released",
            drained.cut_off,
            DRAIN_DEADLINE.as_secs()
        );
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: both servers then stop
/// accepting connections, let the handlers running finish (those whose
/// client hung up included) for up to [`DRAIN_DEADLINE`], and exit.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
