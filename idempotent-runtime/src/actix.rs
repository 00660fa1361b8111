//! The actix-web 4 adapter.
//!
//! Handlers marked `#[idempotent]` (this module's [`idempotent`]) work with no
//! set-up: they use a process-wide memory store. To choose the store or the
//! limits, give the app an [`Idempotency`] as app data:
//!
//! ```
//! use actix_web::{web, App, HttpResponse, Responder};
//! use idempotent_runtime::actix::idempotent;
//! use idempotent_runtime::store::memory::MemoryStore;
//! use idempotent_runtime::Idempotency;
//!
//! #[idempotent(scope = "orders")]
//! async fn create_order(order: web::Json<serde_json::Value>) -> impl Responder {
//!     HttpResponse::Created().json(order.into_inner())
//! }
//!
//! let idempotency = Idempotency::new(MemoryStore::default());
//! let app = App::new()
//!     .app_data(idempotency.clone())
//!     .route("/orders", web::post().to(create_order));
//! ```
//!
//! Build the `Idempotency` once, outside the `HttpServer::new` factory, and
//! clone it in: a store built inside the factory would be one per worker, and
//! duplicates reaching different workers would both run. Once an app builds
//! its own `Idempotency`, a handler that finds none in its app data answers
//! 500 `no-store` rather than falling back to the process-wide default.
//!
//! Handlers run on actix's per-worker single-threaded runtimes: their futures
//! need not be `Send`. One whose client hangs up is handed to a task on its
//! worker (`spawn_local`), so it runs to completion and its response is
//! stored; the service must therefore run inside actix's runtime (in tests,
//! `#[actix_web::test]` or an `actix_web::rt::System`). Blocking work still
//! belongs in `web::block`: lease renewals run on a thread of their own, but a
//! blocked worker serves no one else.
//!
//! On actix the key (and principal) is read before the handler's extractors
//! run; on axum, after the extractors that precede the body. A request that
//! is both missing its key and rejected by an extractor therefore gets 400
//! `missing-key` on actix and the extractor's rejection on axum.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{
    HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER,
};
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, Responder};

use crate::config::{HandlerConfig, HeaderLookup, Repeated, RequestHead};
use crate::lifecycle::{
    finish_even_if_dropped_local, is_safe_method, Body as Prepared, Exchange, Framework,
    ResponsePolicy, Step,
};
use crate::problem::{self, Problem};
use crate::{Idempotency, StoredResponse};

mod rejection;

pub use rejection::{json_config, method_not_allowed, not_found};

/// `#[idempotent]` for actix-web handlers.
#[cfg(feature = "macros")]
#[doc(inline)]
pub use idempotent_macros::idempotent_actix as idempotent;

impl HeaderLookup for HeaderMap {
    fn get(&self, name: &str) -> Result<Option<&[u8]>, Repeated> {
        let mut values = self.get_all(name);
        let first = values.next().map(HeaderValue::as_bytes);
        match values.next() {
            Some(_) => Err(Repeated),
            None => Ok(first),
        }
    }
}

fn problem_response(p: Problem) -> HttpResponse {
    let mut b = HttpResponse::build(
        StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    b.insert_header((CONTENT_TYPE, problem::CONTENT_TYPE));
    if let Some(secs) = p.retry_after {
        b.insert_header((RETRY_AFTER, secs.to_string()));
    }
    if p.no_store {
        b.insert_header((CACHE_CONTROL, "no-store"));
    }
    b.body(p.to_json())
}

impl Responder for Problem {
    type Body = BoxBody;

    fn respond_to(self, _req: &HttpRequest) -> HttpResponse {
        problem_response(self)
    }
}

fn idempotency_of(req: &HttpRequest) -> Result<Idempotency, Problem> {
    if let Some(i) = req.app_data::<Idempotency>() {
        return Ok(i.clone());
    }
    if let Some(i) = req.app_data::<actix_web::web::Data<Idempotency>>() {
        return Ok(Idempotency::clone(i));
    }
    Idempotency::fallback("add `.app_data(idempotency.clone())` to the App (build the `Idempotency` once, outside the `HttpServer::new` factory)")
}

/// Reads the key (and principal) and, when there is one, the body for the
/// fingerprint; returns a payload refilled from the buffered body.
async fn prepare(
    config: &'static HandlerConfig,
    req: &HttpRequest,
    payload: Payload,
) -> Result<(Exchange, Payload), HttpResponse> {
    let idempotency = idempotency_of(req).map_err(problem_response)?;
    let query = Some(req.query_string()).filter(|q| !q.is_empty());
    let head = RequestHead::new(req.method().as_str(), req.path(), query, req.headers());
    // actix-web reads (and drops) what a handler left of a body before it
    // closes the connection, so a refused request's body is simply left.
    let (ctx, body) =
        Exchange::prepare(idempotency, config, &head, || tx_cell(req), payload, |p| p)
            .await
            .map_err(|refused| problem_response(refused.problem))?;
    let payload = match body {
        Prepared::Untouched(payload) => payload,
        Prepared::Buffered(bytes) => Payload::from(bytes),
    };
    Ok((ctx, payload))
}

/// The request's transaction cell, put in its extensions by whichever comes
/// first: [`prepare`] or the `Tx` extractor.
fn tx_cell(req: &HttpRequest) -> Arc<crate::lifecycle::TxCell> {
    use actix_web::HttpMessage;
    if let Some(cell) = req.extensions().get::<Arc<crate::lifecycle::TxCell>>() {
        return cell.clone();
    }
    let cell = Arc::<crate::lifecycle::TxCell>::default();
    req.extensions_mut().insert(cell.clone());
    cell
}

/// `Tx` as an actix-web extractor: rejected with 500
/// `no-transactional-store` unless the installed store is a Postgres store.
#[cfg(feature = "postgres")]
impl FromRequest for crate::tx::Tx {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let tx = idempotency_of(req).and_then(|i| crate::tx::Tx::new(&i, || tx_cell(req)));
        std::future::ready(tx.map_err(|p| {
            actix_web::error::InternalError::from_response("idempotent", problem_response(p)).into()
        }))
    }
}

/// Runs a handler through the life cycle and answers.
async fn execute<Fut>(ctx: Exchange, handler: Fut) -> HttpResponse
where
    Fut: Future<Output = HttpResponse> + 'static,
{
    match ctx.start::<Actix, _>(handler).await {
        Step::Answer(response) => response,
        Step::Plain(handler) => handler.await,
        // Handed to a task on this worker if the client goes away, so
        // that the handler finishes and its response is stored.
        Step::Run(task) => finish_even_if_dropped_local(task)
            .await
            .unwrap_or_else(problem_response),
    }
}

/// actix-web's side of the shared exchange.
struct Actix;

impl Framework for Actix {
    type Response = HttpResponse;

    fn problem(problem: Problem) -> HttpResponse {
        problem_response(problem)
    }

    fn replay(stored: &StoredResponse, replay_header: &'static str) -> HttpResponse {
        let mut b = HttpResponse::build(
            StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        );
        for (name, value) in &stored.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_maybe_shared(value.clone()),
            ) {
                b.append_header((n, v));
            }
        }
        if let Ok(n) = HeaderName::from_bytes(replay_header.as_bytes()) {
            b.insert_header((n, HeaderValue::from_static("true")));
        }
        b.body(stored.body.clone().unwrap_or_default())
    }

    fn status(response: &HttpResponse) -> u16 {
        response.status().as_u16()
    }

    async fn capture(
        response: HttpResponse,
        policy: ResponsePolicy,
    ) -> (HttpResponse, Option<Arc<StoredResponse>>) {
        let status = response.status().as_u16();
        let headers = || {
            response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes()))
        };
        let Some(headers) = policy.headers_to_store(status, headers) else {
            return (response, None);
        };
        let (head, mut body) = response.into_parts();
        let chunks = futures_util::stream::poll_fn(move |cx| Pin::new(&mut body).poll_next(cx));
        let (stored, live) = policy.capture(status, headers, chunks).await;
        let live = match live {
            Ok(whole) => BoxBody::new(whole),
            Err(stream) => BoxBody::new(actix_web::body::BodyStream::new(stream)),
        };
        (head.set_body(live), Some(stored))
    }
}

/// Makes every request under it idempotent with one set of options: the same
/// life cycle as `#[idempotent]`, as middleware for handlers without the
/// attribute (a `Scope` or `Resource`; on an `App`, every request, 404s
/// included, needs a key).
///
/// Safe methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`) pass through untouched
/// unless [`include_safe_methods`](Self::include_safe_methods) says otherwise:
/// they need no key.
///
/// Middleware sees responses only: an extractor rejection inside it (bad JSON,
/// say) is stored like any other answer under `cache = "all"`, where the
/// attribute keeps the key free. Use `CachePolicy::Success` or the attribute
/// where that matters.
///
/// ```
/// use actix_web::{web, App};
/// use idempotent_runtime::actix::IdempotentRoutes;
/// use idempotent_runtime::HandlerConfig;
///
/// static TRANSFERS: HandlerConfig = HandlerConfig::new("transfers");
///
/// async fn create_transfer(body: String) -> String { body }
///
/// let app = App::new().service(
///     web::scope("/transfers")
///         .wrap(IdempotentRoutes::new(&TRANSFERS))
///         .route("", web::post().to(create_transfer)),
/// );
/// ```
#[derive(Clone, Copy, Debug)]
pub struct IdempotentRoutes {
    config: &'static HandlerConfig,
    safe_methods: bool,
}

impl IdempotentRoutes {
    /// Middleware applying `config` to every request it wraps with an unsafe
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

impl<S, B> Transform<S, ServiceRequest> for IdempotentRoutes
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Transform = IdempotentRoutesMiddleware<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(IdempotentRoutesMiddleware {
            service: Rc::new(service),
            config: self.config,
            safe_methods: self.safe_methods,
        }))
    }
}

/// The service of [`IdempotentRoutes`].
pub struct IdempotentRoutesMiddleware<S> {
    service: Rc<S>,
    config: &'static HandlerConfig,
    safe_methods: bool,
}

impl<S, B> Service<ServiceRequest> for IdempotentRoutesMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = self.service.clone();
        let config = self.config;
        if !self.safe_methods && is_safe_method(req.method().as_str()) {
            return Box::pin(async move {
                service
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_boxed_body)
            });
        }
        Box::pin(async move {
            let (http_req, payload) = req.into_parts();
            let (ctx, payload) = match prepare(config, &http_req, payload).await {
                Ok(prepared) => prepared,
                Err(rejection) => return Ok(ServiceResponse::new(http_req, rejection)),
            };
            // The inner service must own the request alone (actix mutates it
            // through its `Rc`), so it is lent through a slot, and handed back
            // (or the inner service's error) from the inner answer.
            let slot = Rc::new(std::cell::RefCell::new(Lent::Request(http_req)));
            let lent = slot.clone();
            let response = execute(ctx, async move {
                let Lent::Request(req) = lent.replace(Lent::Gone) else {
                    return problem_response(Problem::handler_failed());
                };
                match service.call(ServiceRequest::from_parts(req, payload)).await {
                    Ok(res) => {
                        let (req, response) = res.into_parts();
                        lent.replace(Lent::Request(req));
                        response.map_into_boxed_body()
                    }
                    Err(e) => {
                        let response = e.error_response();
                        lent.replace(Lent::Failed(e));
                        response
                    }
                }
            })
            .await;
            match slot.replace(Lent::Gone) {
                Lent::Request(req) => Ok(ServiceResponse::new(req, response)),
                // The inner service failed: its error goes on unchanged.
                Lent::Failed(e) => Err(e),
                // The inner service panicked with the request: answer through
                // an error that renders the problem.
                Lent::Gone => Err(actix_web::error::InternalError::from_response(
                    "idempotent",
                    response,
                )
                .into()),
            }
        })
    }
}

/// Where the middleware's request is while the inner service has it.
enum Lent {
    Request(HttpRequest),
    Failed(actix_web::Error),
    Gone,
}

/// What `#[idempotent]` handlers compile to on actix-web. Not public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use actix_web::web::Payload;
    pub use actix_web::{HttpRequest, HttpResponse};

    /// The request, as the first argument of a generated handler: it is
    /// `HttpRequest`'s own extraction (a clone of the request), typed by the
    /// handler's spec `C`, so that the handler's signature carries its
    /// options (for [`handler_config`](crate::handler_config)).
    pub struct Request<C>(HttpRequest, PhantomData<fn() -> C>);

    impl<C> Request<C> {
        /// The request itself.
        pub fn http(&self) -> &HttpRequest {
            &self.0
        }
    }

    impl<C> FromRequest for Request<C> {
        type Error = actix_web::Error;
        type Future = std::future::Ready<Result<Self, Self::Error>>;

        fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
            std::future::ready(Ok(Request(req.clone(), PhantomData)))
        }
    }

    impl<F, Fut, C> crate::AttributeHandler<(Request<C>, Payload)> for F
    where
        F: FnOnce(Request<C>, Payload) -> Fut,
        C: crate::__private::HandlerSpec,
    {
        fn config() -> &'static HandlerConfig {
            C::config()
        }
    }

    /// Runs the user's extractors `A` (a tuple, in order, over the buffered
    /// body) and handler through the life cycle.
    pub async fn run<C, A, F, Fut, R>(
        Request(req, _): Request<C>,
        payload: Payload,
        handler: F,
    ) -> HttpResponse
    where
        C: crate::__private::HandlerSpec,
        A: FromRequest + 'static,
        F: FnOnce(A) -> Fut + 'static,
        Fut: Future<Output = R> + 'static,
        R: Responder + 'static,
    {
        let (ctx, mut payload) = match prepare(C::config(), &req, payload.into_inner()).await {
            Ok(prepared) => prepared,
            Err(rejection) => return rejection,
        };
        let args = match A::from_request(&req, &mut payload).await {
            Ok(args) => args,
            // As actix's own handlers answer extractor errors (the error stays
            // attached for loggers and error handlers).
            Err(e) => return HttpResponse::from_error(e),
        };
        execute(ctx, async move {
            handler(args).await.respond_to(&req).map_into_boxed_body()
        })
        .await
    }
}
