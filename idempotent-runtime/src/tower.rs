//! What the doors built on tower and `http` (axum, tonic) share: the layer
//! that installs an [`Idempotency`] in request extensions, and reading it
//! (and a request's transaction cell, and its headers) back from there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue};

use crate::config::{HeaderLookup, Repeated};
use crate::lifecycle::TxCell;
use crate::problem::Problem;
use crate::Idempotency;

/// Installs an [`Idempotency`] (store and limits) for the `#[idempotent]`
/// handlers (or tonic methods) below it. Without it, they use a
/// process-wide memory store.
#[derive(Clone, Debug)]
pub struct IdempotencyLayer {
    idempotency: Idempotency,
}

/// Set once an app builds an [`IdempotencyLayer`]: from then on a handler
/// that is not under it fails closed instead of silently using the
/// process-wide default store (axum's `.layer()` covers only the routes added
/// before it).
static LAYER_INSTALLED: AtomicBool = AtomicBool::new(false);

impl IdempotencyLayer {
    /// A layer installing `idempotency`.
    pub fn new(idempotency: Idempotency) -> Self {
        LAYER_INSTALLED.store(true, Ordering::Relaxed);
        Self { idempotency }
    }
}

impl<S> tower_layer::Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            idempotency: self.idempotency.clone(),
        }
    }
}

/// The service of [`IdempotencyLayer`].
#[derive(Clone, Debug)]
pub struct IdempotencyService<S> {
    inner: S,
    idempotency: Idempotency,
}

impl<S, B> tower_service::Service<http::Request<B>> for IdempotencyService<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.idempotency.clone());
        #[cfg(feature = "tonic")]
        if let Some(path) = grpc_path(&req) {
            req.extensions_mut().insert(path);
        }
        self.inner.call(req)
    }
}

/// The path of a gRPC request (`/package.Service/Method`), which tonic does
/// not hand its methods: put in the extensions by [`IdempotencyService`] for
/// the tonic door (the default scope, and which descriptor fingerprints the
/// message).
#[cfg(feature = "tonic")]
#[derive(Clone, Debug)]
pub(crate) struct GrpcPath(pub(crate) String);

#[cfg(feature = "tonic")]
fn grpc_path<B>(req: &http::Request<B>) -> Option<GrpcPath> {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    grpc.then(|| GrpcPath(req.uri().path().to_owned()))
}

/// The runtime of a request: the one its [`IdempotencyLayer`] installed,
/// else the process-wide default (unless the app built a layer, which this
/// request is then missing: `path` says where).
pub(crate) fn idempotency_of(
    extensions: &http::Extensions,
    path: &str,
) -> Result<Idempotency, Problem> {
    if let Some(i) = extensions.get::<Idempotency>() {
        return Ok(i.clone());
    }
    if LAYER_INSTALLED.load(Ordering::Relaxed) {
        return Idempotency::fallback(&format!("`{path}` is not under the app's `IdempotencyLayer`: axum's `.layer()` applies only to routes added before it, so add the layer after every route"));
    }
    Idempotency::fallback("add `IdempotencyLayer` to the router (or the tonic server)")
}

/// The request's transaction cell, put in its extensions by whichever comes
/// first: the life cycle or the `Tx` extractor.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn tx_cell(extensions: &mut http::Extensions) -> Arc<TxCell> {
    if let Some(cell) = extensions.get::<Arc<TxCell>>() {
        return cell.clone();
    }
    let cell = Arc::<TxCell>::default();
    extensions.insert(cell.clone());
    cell
}

impl HeaderLookup for HeaderMap {
    fn get(&self, name: &str) -> Result<Option<&[u8]>, Repeated> {
        let mut values = self.get_all(name).iter();
        let first = values.next().map(HeaderValue::as_bytes);
        match values.next() {
            Some(_) => Err(Repeated),
            None => Ok(first),
        }
    }
}
