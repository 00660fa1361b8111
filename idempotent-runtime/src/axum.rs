//! The axum 0.8 adapter.
//!
//! Handlers marked `#[idempotent]` work with no set-up: they use a process-wide
//! memory store. To choose the store or the limits, install an [`Idempotency`](crate::Idempotency)
//! once with [`IdempotencyLayer`]:
//!
//! ```
//! use axum::{routing::post, Json, Router};
//! use idempotent_runtime::axum::IdempotencyLayer;
//! use idempotent_runtime::store::memory::MemoryStore;
//! use idempotent_runtime::axum::idempotent;
//! use idempotent_runtime::Idempotency;
//!
//! #[idempotent(scope = "orders")]
//! async fn create_order(Json(order): Json<serde_json::Value>) -> Json<serde_json::Value> {
//!     Json(order)
//! }
//!
//! let store = MemoryStore::builder().max_entries(10_000).build();
//! let app: Router = Router::new()
//!     .route("/orders", post(create_order))
//!     .layer(IdempotencyLayer::new(Idempotency::new(store)));
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, StatusCode};

use crate::config::{HandlerConfig, RequestHead};
use crate::lifecycle::{
    drain_in_background, finish_even_if_dropped, is_safe_method, Body as Prepared, Exchange,
    Framework, Refused, ResponsePolicy, Step, Unread,
};
use crate::problem::{self, Problem};
use crate::tower::{idempotency_of, tx_cell};
use crate::StoredResponse;

mod rejection;

pub use rejection::{method_not_allowed, not_found, ProblemJson};

/// `#[idempotent]` for axum handlers.
#[cfg(feature = "macros")]
#[doc(inline)]
pub use idempotent_macros::idempotent_axum as idempotent;

pub use crate::tower::{IdempotencyLayer, IdempotencyService};

/// Makes every request under it idempotent with one set of options: the same
/// life cycle as `#[idempotent]`, for handlers without the attribute (a whole
/// router, a nested group of routes).
///
/// It uses the store of an [`IdempotencyLayer`] outside it, or the default one.
/// Prefer `route_layer`, so that unmatched paths answer 404 without a key.
/// Safe methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`) pass through untouched
/// unless [`include_safe_methods`](Self::include_safe_methods) says otherwise:
/// they need no key.
///
/// ```
/// use axum::{routing::post, Router};
/// use idempotent_runtime::axum::{IdempotencyLayer, IdempotentRoutesLayer};
/// use idempotent_runtime::{HandlerConfig, Idempotency};
/// use idempotent_runtime::store::memory::MemoryStore;
///
/// static TRANSFERS: HandlerConfig = HandlerConfig::new("transfers");
///
/// async fn create_transfer(body: String) -> String { body }
///
/// let app: Router = Router::new()
///     .route("/transfers", post(create_transfer))
///     .route_layer(IdempotentRoutesLayer::new(&TRANSFERS))
///     .layer(IdempotencyLayer::new(Idempotency::new(MemoryStore::default())));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct IdempotentRoutesLayer {
    config: &'static HandlerConfig,
    safe_methods: bool,
}

impl IdempotentRoutesLayer {
    /// A layer applying `config` to every request under it with an unsafe
    /// method (`POST`, `PUT`, `PATCH`, `DELETE`, …).
    pub fn new(config: &'static HandlerConfig) -> Self {
        Self {
            config,
            safe_methods: false,
        }
    }

    /// Whether safe methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`) go through the
    /// life cycle too, needing a key (default `false`: they pass through).
    pub fn include_safe_methods(mut self, include: bool) -> Self {
        self.safe_methods = include;
        self
    }
}

impl<S> tower_layer::Layer<S> for IdempotentRoutesLayer {
    type Service = IdempotentRoutes<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotentRoutes {
            inner,
            config: self.config,
            safe_methods: self.safe_methods,
        }
    }
}

/// The service of [`IdempotentRoutesLayer`].
#[derive(Clone, Debug)]
pub struct IdempotentRoutes<S> {
    inner: S,
    config: &'static HandlerConfig,
    safe_methods: bool,
}

impl<S> tower_service::Service<Request> for IdempotentRoutes<S>
where
    S: tower_service::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The service that was polled ready handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config;
        if !self.safe_methods && is_safe_method(req.method().as_str()) {
            return Box::pin(inner.call(req));
        }
        Box::pin(async move {
            let (ctx, req) = match prepare(config, req).await {
                Ok(prepared) => prepared,
                Err(rejection) => return Ok(rejection),
            };
            let handler = inner.call(req);
            Ok(execute(ctx, async move {
                match handler.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            })
            .await)
        })
    }
}

/// The attribute's function takes the handler's leading arguments unchanged
/// and its last one wrapped in `Extract<spec, last>`: the spec type has the
/// options.
macro_rules! attribute_handler {
    ($($arg:ident),*) => {
        impl<F, Fut, C, E, $($arg,)*> crate::AttributeHandler<($($arg,)* __private::Extract<C, E>,)> for F
        where
            F: FnOnce($($arg,)* __private::Extract<C, E>) -> Fut,
            C: crate::__private::HandlerSpec,
        {
            fn config() -> &'static HandlerConfig {
                C::config()
            }
        }
    };
}

attribute_handler!();
attribute_handler!(A1);
attribute_handler!(A1, A2);
attribute_handler!(A1, A2, A3);
attribute_handler!(A1, A2, A3, A4);
attribute_handler!(A1, A2, A3, A4, A5);
attribute_handler!(A1, A2, A3, A4, A5, A6);
attribute_handler!(A1, A2, A3, A4, A5, A6, A7);
attribute_handler!(A1, A2, A3, A4, A5, A6, A7, A8);
attribute_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9);
attribute_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10);
attribute_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11);
attribute_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12);
attribute_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13);
attribute_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14);
attribute_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15);

/// A problem as an axum response.
impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::from(self.to_json()));
        *r.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = r.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(problem::CONTENT_TYPE),
        );
        if let Some(secs) = self.retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.no_store {
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        r
    }
}

/// Path and query as the client sent them: inside `Router::nest`, axum strips
/// the matched prefix from `parts.uri`, and `/accounts/1/pay` and
/// `/accounts/2/pay` must not fingerprint alike.
fn original_uri(parts: &http::request::Parts) -> &http::Uri {
    parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(&parts.uri, |o| &o.0)
}

/// Reads the key (and principal) and, when there is one, the body for the
/// fingerprint. Returns the request rebuilt around the buffered body.
async fn prepare(
    config: &'static HandlerConfig,
    req: Request,
) -> Result<(Exchange, Request), Response> {
    let (mut parts, body) = req.into_parts();
    let idempotency =
        idempotency_of(&parts.extensions, parts.uri.path()).map_err(IntoResponse::into_response)?;
    let uri = original_uri(&parts).clone();
    // `?` with nothing after it is no query, as on actix.
    let query = uri.query().filter(|q| !q.is_empty());
    let head = RequestHead::new(parts.method.as_str(), uri.path(), query, &parts.headers);
    let expects_continue = Exchange::expects_continue(&head);
    let extensions = &mut parts.extensions;
    let prepared = Exchange::prepare(
        idempotency,
        config,
        &head,
        || tx_cell(extensions),
        body,
        Body::into_data_stream,
    )
    .await;
    match prepared {
        Ok((ctx, Prepared::Untouched(body))) => Ok((ctx, Request::from_parts(parts, body))),
        Ok((ctx, Prepared::Buffered(bytes))) => {
            Ok((ctx, Request::from_parts(parts, Body::from(bytes))))
        }
        Err(Refused { problem, unread }) => {
            let mut response = problem.into_response();
            let rest = match unread {
                Unread::Body(body) if !http_body::Body::is_end_stream(&body) => {
                    Some(body.into_data_stream())
                }
                Unread::Rest(rest) => Some(rest),
                Unread::Body(_) | Unread::Nothing => None,
            };
            if let Some(rest) = rest {
                // Left unread, the body keeps the connection from being
                // used again: hyper closes it after this answer. Say so, or
                // a keep-alive client sends its next request into it; and let
                // the client finish sending first (unless it waits for a
                // go-ahead, which it must not get).
                response
                    .headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                if !expects_continue {
                    drain_in_background(rest);
                }
            }
            Err(response)
        }
    }
}

/// Runs a handler through the life cycle and answers.
async fn execute<Fut, R>(ctx: Exchange, handler: Fut) -> Response
where
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse,
{
    match ctx
        .start::<Axum, _>(async move { handler.await.into_response() })
        .await
    {
        Step::Answer(response) => response,
        Step::Plain(handler) => handler.await,
        // The handler finishes and its response is stored even when the
        // client goes away and this future is dropped.
        Step::Run(task) => finish_even_if_dropped(task)
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

/// axum's side of the shared exchange.
struct Axum;

impl Framework for Axum {
    type Response = Response;

    fn problem(problem: Problem) -> Response {
        problem.into_response()
    }

    fn replay(stored: &StoredResponse, replay_header: &'static str) -> Response {
        let mut r = Response::new(Body::from(stored.body.clone().unwrap_or_default()));
        *r.status_mut() =
            StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = r.headers_mut();
        for (name, value) in &stored.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_maybe_shared(value.clone()),
            ) {
                h.append(n, v);
            }
        }
        if let Ok(n) = HeaderName::from_bytes(replay_header.as_bytes()) {
            h.insert(n, HeaderValue::from_static("true"));
        }
        r
    }

    fn status(response: &Response) -> u16 {
        response.status().as_u16()
    }

    async fn capture(
        response: Response,
        policy: ResponsePolicy,
    ) -> (Response, Option<Arc<StoredResponse>>) {
        let (parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        let headers = || {
            parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes()))
        };
        let Some(headers) = policy.headers_to_store(status, headers) else {
            return (Response::from_parts(parts, body), None);
        };
        // Trailers are not stored (axum handlers rarely send them).
        let (stored, live) = policy
            .capture(status, headers, body.into_data_stream())
            .await;
        let live = match live {
            Ok(whole) => Body::from(whole),
            Err(stream) => Body::from_stream(stream),
        };
        (Response::from_parts(parts, live), Some(stored))
    }
}

/// `Tx` as an axum extractor (any position): rejected with 500
/// `no-transactional-store` unless the installed store is a Postgres store.
#[cfg(feature = "postgres")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for crate::tx::Tx {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let idempotency = idempotency_of(&parts.extensions, parts.uri.path())
            .map_err(IntoResponse::into_response)?;
        crate::tx::Tx::new(&idempotency, || tx_cell(&mut parts.extensions))
            .map_err(IntoResponse::into_response)
    }
}

/// `Option<Tx>` as an axum extractor: `Some` over the Postgres store, `None`
/// over any other, so that one handler serves every store.
#[cfg(feature = "postgres")]
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for crate::tx::Tx {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let idempotency = idempotency_of(&parts.extensions, parts.uri.path())
            .map_err(IntoResponse::into_response)?;
        if idempotency.postgres().is_none() {
            return Ok(None);
        }
        crate::tx::Tx::new(&idempotency, || tx_cell(&mut parts.extensions))
            .map(Some)
            .map_err(IntoResponse::into_response)
    }
}

/// What `#[idempotent]` handlers compile to on axum. Not public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use axum::response::Response;

    /// The request's place in the life cycle, from [`Extract`] to [`run`].
    pub struct Ctx(Exchange);

    /// Wraps the handler's last extractor `E` (a body extractor such as `Json`,
    /// or any parts extractor, or `()`): reads the key, buffers the body for
    /// the fingerprint, then runs `E` on the buffered request. `E`'s rejection
    /// is returned unchanged and nothing is claimed.
    pub struct Extract<C, E> {
        ctx: Ctx,
        inner: E,
        _spec: PhantomData<fn() -> C>,
    }

    impl<C, E> Extract<C, E> {
        /// The life-cycle context and the user's extractor.
        pub fn into_parts(self) -> (Ctx, E) {
            (self.ctx, self.inner)
        }
    }

    /// Marker of [`Extract`]'s `FromRequest` impl: never equal to axum's own
    /// markers, so the impl does not overlap axum's blanket impl for parts
    /// extractors, while `M` lets `E` be a body or a parts extractor.
    pub struct Wrapped;

    impl<S, C, E, M> FromRequest<S, (Wrapped, M)> for Extract<C, E>
    where
        S: Send + Sync,
        C: crate::__private::HandlerSpec,
        E: FromRequest<S, M>,
    {
        type Rejection = Response;

        async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
            let (ctx, req) = prepare(C::config(), req).await?;
            let inner = E::from_request(req, state)
                .await
                .map_err(IntoResponse::into_response)?;
            Ok(Self {
                ctx: Ctx(ctx),
                inner,
                _spec: PhantomData,
            })
        }
    }

    /// Runs the user's handler through the life cycle.
    pub async fn run<F, Fut, R>(ctx: Ctx, handler: F) -> Response
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoResponse,
    {
        execute(ctx.0, handler()).await
    }
}
