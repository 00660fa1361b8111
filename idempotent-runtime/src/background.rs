//! The runtime crate's own background thread: a one-thread Tokio runtime,
//! apart from the application's, for work no request should wait on or be
//! able to starve (lease renewals, store sweeps and subscriptions).
//!
//! It depends on nothing else in the crate, so the stores and the life cycle
//! can both use it without depending on each other.

use std::sync::OnceLock;

/// The background runtime, started on first use. Its thread lives as long
/// as the process.
///
/// Apart from the request runtime on purpose: a handler that blocks its
/// worker (actix workers are single-threaded), even in its first poll, must
/// not starve lease renewals.
pub(crate) fn background() -> &'static tokio::runtime::Handle {
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a background runtime for idempotent");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("idempotent-background".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .expect("a thread for idempotent's background work");
        handle
    })
}
