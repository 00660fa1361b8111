//! The PostgreSQL store's background work, on the runtime crate's
//! background thread: the sweeper, which deletes expired rows, and the
//! listener, which turns notifications into wake-ups. Both hold the store
//! weakly and end once it is dropped.

use std::sync::{Arc, Weak};

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};

use super::{Inner, PostgresStore};

/// Rows deleted per statement, so that one sweep never holds many locks or
/// runs long.
pub(super) const SWEEP_BATCH: i64 = 1000;
/// Batches per sweep at most; the rest waits for the next sweep.
pub(super) const SWEEP_MAX_BATCHES: u32 = 20;

/// Sweeps every `every` while the store lives.
pub(super) fn start_sweeper(store: Weak<Inner>, every: Duration) {
    crate::background::background().spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(store) = store.upgrade().map(|inner| PostgresStore { inner }) else {
                return;
            };
            if store.is_closed() {
                return;
            }
            if let Err(e) = store.sweep().await {
                tracing::debug!(target: "idempotent", error = %e, "sweeping expired idempotency records failed; trying again later");
            }
        }
    });
}

/// How long the listener waits for a notification before it checks that
/// the store still exists.
const LISTEN_CHECK: Duration = Duration::from_secs(1);
/// Pause between two attempts to (re)connect the listener.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// Listens on the store's channel, on a connection of its own (its own
/// one-connection pool, so that it never takes one of the store's), and
/// calls the listeners with each notified digest. Reconnects by itself;
/// notifications sent while it is disconnected are lost, which waiters
/// survive by re-reading periodically. Ends within a second of the store
/// being dropped or closed.
pub(super) fn start_listener(inner: &Arc<Inner>) {
    let store = Arc::downgrade(inner);
    let listeners = Arc::downgrade(&inner.listeners);
    let channel = inner.channel.clone();
    let connect_timeout = inner.acquire_timeout + inner.statement_timeout;
    let options = (*inner.pool.connect_options()).clone();
    crate::background::background().spawn(async move {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(connect_timeout)
            .connect_lazy_with(options);
        // Gone or closed: stop listening.
        let ended = || {
            store
                .upgrade()
                .is_none_or(|inner| inner.closed.load(std::sync::atomic::Ordering::Acquire))
        };
        while !ended() {
            let connected = tokio::time::timeout(connect_timeout * 2, async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(&channel).await?;
                Ok::<_, sqlx::Error>(listener)
            })
            .await;
            match connected {
                Ok(Ok(mut listener)) => loop {
                    // `try_recv` is cancel-safe: a timeout loses nothing.
                    match tokio::time::timeout(LISTEN_CHECK, listener.try_recv()).await {
                        Ok(Ok(Some(notification))) => {
                            let Some(listeners) = listeners.upgrade() else {
                                return;
                            };
                            if let Some(digest) = parse_digest(notification.payload()) {
                                for l in listeners.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                                    l(&digest);
                                }
                            }
                        }
                        // The connection was lost and made again (the channel
                        // listened to again).
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(target: "idempotent", error = %e, "PostgreSQL listener lost; reconnecting");
                            break;
                        }
                        Err(_) if ended() => return,
                        Err(_) => {}
                    }
                },
                Ok(Err(e)) => {
                    tracing::debug!(target: "idempotent", error = %e, "PostgreSQL listener cannot connect; retrying");
                }
                Err(_) => {
                    tracing::debug!(target: "idempotent", "PostgreSQL listener connection timed out; retrying");
                }
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    });
}

/// The 32-byte digest from a notification's payload (64 hex digits).
pub(super) fn parse_digest(payload: &str) -> Option<[u8; 32]> {
    let hex = payload.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}
