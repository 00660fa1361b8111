//! One request through the life cycle, as every framework adapter drives
//! it: identify the key, read the body for the fingerprint under the limit,
//! then claim and answer with a replay, a problem, or the handler's own
//! response, captured for storage. An adapter supplies only what its
//! framework forces on it ([`Framework`]: response types and bodies) and
//! how a detached handler is spawned (`Send` or not).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};

use super::capture::{join, ResponsePolicy};
use super::claim::Begin;
use super::claimed::Diverted;
use super::transaction::{TxCell, TxOutcome};
use super::{trace, Idempotency};
use crate::config::{HandlerConfig, RequestHead};
use crate::problem::Problem;
use crate::{Fingerprint, RecordId, StoredResponse};

/// What a framework adapter provides to the shared exchange.
pub(crate) trait Framework {
    /// The framework's response.
    type Response;

    /// A problem as a response.
    fn problem(problem: Problem) -> Self::Response;

    /// A stored response, replayed, with `replay_header` (lowercase) set to
    /// `true`.
    fn replay(stored: &StoredResponse, replay_header: &'static str) -> Self::Response;

    /// Splits a handler's response into what the client gets and what is
    /// stored, through [`ResponsePolicy::headers_to_store`] and
    /// [`ResponsePolicy::capture`].
    fn capture(
        response: Self::Response,
        policy: ResponsePolicy,
    ) -> impl Future<Output = (Self::Response, Option<Arc<StoredResponse>>)>;

    /// The status of a response.
    fn status(response: &Self::Response) -> u16;
}

/// A request's body after [`Exchange::prepare`]: untouched (no key, so no
/// fingerprint), or read whole for the fingerprint, to hand on from the
/// buffer.
pub(crate) enum Body<B> {
    Untouched(B),
    Buffered(Bytes),
}

/// A request refused before its body was read whole: the problem, and what
/// is left of the body, which the adapter may drain (bounded) so that a
/// client that writes its whole body before reading gets to read the answer
/// (see [`Unread`]).
pub(crate) struct Refused<B, S> {
    pub(crate) problem: Problem,
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) unread: Unread<B, S>,
}

/// What is left of a refused request's body.
pub(crate) enum Unread<B, S> {
    /// None of it was read.
    Body(B),
    /// Part of it was read (past the limit).
    Rest(S),
    /// Nothing is left (it ended, or failed).
    Nothing,
}

/// A request's place in the life cycle, from its key to its answer.
pub(crate) struct Exchange {
    idempotency: Idempotency,
    config: &'static HandlerConfig,
    ticket: Ticket,
    /// The handler's own transaction, where the store offers one.
    tx: Option<Arc<TxCell>>,
}

enum Ticket {
    /// No key, and the handler does not require one: no idempotency.
    None,
    /// Keyed; the body is still to be read.
    Unread {
        id: RecordId,
        declared_len: Option<u64>,
    },
    /// Keyed and fingerprinted.
    Ready {
        id: RecordId,
        fingerprint: Fingerprint,
    },
}

/// What to do after [`Exchange::start`].
pub(crate) enum Step<R, H, T> {
    /// Answer this (a replay or a problem); the handler does not run.
    Answer(R),
    /// Run the handler without idempotency: the request has no key.
    Plain(H),
    /// Run this task, which owns the claim: through
    /// `finish_even_if_dropped` (or its local twin), so that it completes
    /// even when the client goes away.
    Run(T),
}

impl Exchange {
    /// Everything before the claim, the same way on every HTTP framework:
    /// reads the key (and principal), gives a transactional store's `Tx`
    /// its cell (`tx_cell`: the request's, made on first use), and, when
    /// there is a key, reads the body for the fingerprint under the limit.
    pub(crate) async fn prepare<B, S, E>(
        idempotency: Idempotency,
        config: &'static HandlerConfig,
        head: &RequestHead<'_>,
        tx_cell: impl FnOnce() -> Arc<TxCell>,
        body: B,
        stream: impl FnOnce(B) -> S,
    ) -> Result<(Exchange, Body<B>), Refused<B, S>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let mut exchange = match Exchange::identify(idempotency, config, head) {
            Ok(exchange) => exchange,
            Err(problem) => {
                return Err(Refused {
                    problem,
                    unread: Unread::Body(body),
                })
            }
        };
        #[cfg(feature = "postgres")]
        if exchange.idempotency.postgres().is_some() {
            exchange.tx = Some(tx_cell());
        }
        #[cfg(not(feature = "postgres"))]
        let _ = tx_cell;
        if !exchange.needs_body() {
            return Ok((exchange, Body::Untouched(body)));
        }
        let bytes = exchange.read_body(stream(body)).await?;
        exchange.fingerprint(head.method(), head.path(), head.query(), &bytes);
        Ok((exchange, Body::Buffered(bytes)))
    }

    /// Whether a request asked `Expect: 100-continue`: its client waits for
    /// a go-ahead before it sends the body, so an early answer must not read
    /// (and so invite) the body.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn expects_continue(head: &RequestHead<'_>) -> bool {
        head.header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }

    /// Reads the key (and principal) of a request.
    fn identify(
        idempotency: Idempotency,
        config: &'static HandlerConfig,
        head: &RequestHead<'_>,
    ) -> Result<Exchange, Problem> {
        let ticket = match idempotency.identify(config, head)? {
            None => Ticket::None,
            Some(id) => Ticket::Unread {
                id,
                declared_len: head
                    .header_bytes("content-length")
                    .ok()
                    .flatten()
                    .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok()),
            },
        };
        Ok(Exchange {
            idempotency,
            config,
            ticket,
            tx: None,
        })
    }

    /// Whether the body must be read (and handed on from a buffer) for the
    /// fingerprint.
    fn needs_body(&self) -> bool {
        matches!(self.ticket, Ticket::Unread { .. })
    }

    /// Reads the body for the fingerprint, the same way on every framework:
    /// a declared `Content-Length` over the limit is refused (413) before any
    /// of the body is read, so a client that asked `Expect: 100-continue`
    /// gets no `100 Continue` for a body that would be refused; a body
    /// without one is refused as soon as it passes the limit.
    async fn read_body<B, S, E>(&self, mut body: S) -> Result<Bytes, Refused<B, S>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let started = Instant::now();
        let limit = self.idempotency.limits().max_request_body;
        // A refusal here is the request's one event, as later ones are.
        let refuse = |outcome: &'static str, problem: Problem, unread| {
            trace(self.config, outcome, started);
            Err(Refused { problem, unread })
        };
        if let Ticket::Unread {
            declared_len: Some(n),
            ..
        } = self.ticket
        {
            if n > limit as u64 {
                let problem = Problem::request_too_large(limit);
                return refuse("request_too_large", problem, Unread::Rest(body));
            }
        }
        let mut chunks = Vec::new();
        let mut len = 0;
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                let problem = Problem::request_unreadable();
                return refuse("request_unreadable", problem, Unread::Nothing);
            };
            len += chunk.len();
            if len > limit {
                let problem = Problem::request_too_large(limit);
                return refuse("request_too_large", problem, Unread::Rest(body));
            }
            chunks.push(chunk);
        }
        Ok(join(chunks, len))
    }

    /// Fingerprints the request once its body is read.
    fn fingerprint(&mut self, method: &str, path: &str, query: Option<&str>, body: &[u8]) {
        if let Ticket::Unread { id, .. } = std::mem::replace(&mut self.ticket, Ticket::None) {
            self.ticket = Ticket::Ready {
                id,
                fingerprint: Fingerprint::of_request(method, path, query, body),
            };
        }
    }

    /// Claims the request's key and says what to do next. `handler` is the
    /// handler's response, not yet run.
    ///
    /// The handler's future is boxed here, before anything awaits. Held by
    /// value, it was a part of every future that carries it (this one while
    /// it claims, the claimed task, the detached task), and each move of
    /// those copied it whole: with `Tx` on the Postgres store the task
    /// axum's adapter moved was 28,400 bytes, and `memcpy` took about 6 % of
    /// the bench server's CPU on fresh keys. It is 2,128 bytes now.
    pub(crate) fn start<X, H>(
        self,
        handler: H,
    ) -> impl Future<
        Output = Step<
            X::Response,
            impl Future<Output = X::Response>,
            impl Future<Output = Result<X::Response, Problem>>,
        >,
    >
    where
        X: Framework,
        H: Future<Output = X::Response>,
    {
        self.claim_then::<X, _>(Box::pin(handler))
    }

    /// [`Exchange::start`], the handler boxed.
    async fn claim_then<X, H>(
        self,
        handler: H,
    ) -> Step<
        X::Response,
        impl Future<Output = X::Response>,
        impl Future<Output = Result<X::Response, Problem>>,
    >
    where
        X: Framework,
        H: Future<Output = X::Response>,
    {
        let (id, fingerprint) = match self.ticket {
            Ticket::Ready { id, fingerprint } => (id, fingerprint),
            Ticket::None => return Step::Plain(plain::<X, _>(self.tx, handler)),
            // An adapter that skipped the body: fail closed.
            Ticket::Unread { .. } => {
                return Step::Answer(X::problem(Problem::idempotency_failed()))
            }
        };
        let replay_header = self.config.replay_header;
        match self
            .idempotency
            .begin(self.config, id, fingerprint, self.tx)
            .await
        {
            Begin::Replay(stored) => Step::Answer(X::replay(&stored, replay_header)),
            Begin::Refuse(problem) => Step::Answer(X::problem(problem)),
            Begin::Run(claimed) => {
                let policy = claimed.policy();
                let task = claimed.run(async move { X::capture(handler.await, policy).await });
                // A map, not an async block awaiting `task`: the block would
                // hold `task` twice (its capture and its await), doubling
                // the future that is moved on every step from here.
                let task = task.map(move |ran| match ran {
                    Ok(response) => Ok(response),
                    Err(Diverted::Refused(problem)) => Err(problem),
                    Err(Diverted::Replayed(stored)) => Ok(X::replay(&stored, replay_header)),
                });
                Step::Run(tracing::Instrument::in_current_span(task))
            }
        }
    }
}

/// Runs a handler without idempotency (its request has no key). A
/// transaction it began commits if it answers below 400, and rolls back
/// otherwise.
async fn plain<X: Framework, H: Future<Output = X::Response>>(
    tx: Option<Arc<TxCell>>,
    handler: H,
) -> X::Response {
    let Some(cell) = tx else {
        return handler.await;
    };
    cell.adopt();
    let response = handler.await;
    if let TxOutcome::Returned(tx) = cell.take() {
        if X::status(&response) < 400 {
            if let Err(e) = tx.commit().await {
                return X::problem(Problem::store(&e));
            }
        } else {
            tx.rollback().await;
        }
    }
    response
}

/// How much of a refused request's body is read and dropped, at most, so
/// that its client (one that writes all of it before reading) can read the
/// answer: a few MiB or a few seconds, whichever comes first.
#[cfg(feature = "axum")]
const DRAIN_BYTES: usize = 4 * 1024 * 1024;
#[cfg(feature = "axum")]
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops what is left of a refused request's body, in a task of
/// its own, within [`DRAIN_BYTES`] and [`DRAIN_TIME`]: the connection closes
/// after the answer, and closing while the client still sends would turn
/// the close into a reset that destroys the answer.
#[cfg(feature = "axum")]
pub(crate) fn drain_in_background<S, E>(mut rest: S)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let drained = async {
            let mut read = 0;
            while let Some(Ok(chunk)) = rest.next().await {
                read += chunk.len();
                if read > DRAIN_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
    });
}

/// Whether a request method is safe (RFC 9110: `GET`, `HEAD`, `OPTIONS`,
/// `TRACE`): the middleware forms let those pass untouched by default, since
/// repeating them has no side effect to guard.
pub(crate) fn is_safe_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE")
}
