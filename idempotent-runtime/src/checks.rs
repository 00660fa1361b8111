//! Compile-time checks that `#[idempotent]` emits on the user's own tokens.
//!
//! A handler whose return type is not a response, or one of whose arguments
//! is not an extractor, must fail on that type with a message naming the
//! trait, never with "required by a bound in" a function of this crate. Each
//! trait below is implemented for exactly the types the framework accepts,
//! carries the message in `#[diagnostic::on_unimplemented]`, and its one
//! blanket impl is `#[diagnostic::do_not_recommend]` so that rustc reports
//! the trait itself (with our message) instead of the framework bound behind
//! it. The macro calls them with `quote_spanned!` on the user's type.
//!
//! Not public API: reached through `__private`.

use crate::config::HandlerConfig;

/// Whether a handler's lease outlives its TTL. The macro rejects that when
/// the handler sets both; when it sets one, the other is the default of
/// [`HandlerConfig::new`], so it checks the built options in a `const`.
pub const fn lease_exceeds_ttl(config: &HandlerConfig) -> bool {
    config.lease.as_nanos() > config.ttl.as_nanos()
}

/// Whether a written `lease` or `ttl` of `ms` milliseconds is shorter than
/// [`MIN_LEASE`](crate::MIN_LEASE): the one definition of the shortest
/// lease, which the macro checks written values against in a `const`.
pub const fn below_min_lease(ms: u64) -> bool {
    (ms as u128) * 1_000_000 < crate::MIN_LEASE.as_nanos()
}

/// Checks for axum handlers.
#[cfg(feature = "axum")]
pub(crate) mod axum {
    use axum::extract::{FromRequest, FromRequestParts};
    use axum::response::{IntoResponse, Response};

    /// What an axum handler may return: any `IntoResponse`.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a response: an axum `#[idempotent]` handler must return a type that implements `IntoResponse`",
        label = "does not implement `IntoResponse`",
        note = "return e.g. `String`, `Json<T>`, `(StatusCode, T)`, `Response` or `Result<T, E>` where `T` and `E` implement `IntoResponse`, or implement `IntoResponse` for this type"
    )]
    pub trait AxumResponse {
        /// The response.
        fn into_axum_response(self) -> Response;
    }

    #[diagnostic::do_not_recommend]
    impl<T: IntoResponse> AxumResponse for T {
        fn into_axum_response(self) -> Response {
            self.into_response()
        }
    }

    /// What an argument before the last may be: an extractor of the request
    /// head (`FromRequestParts`), for the state `S`: the macro's `state`
    /// argument, else the `T` of the handler's `State<T>` (without either,
    /// the macro checks no argument).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be an argument before the last one of an axum handler with the state `{S}`",
        label = "does not implement `FromRequestParts<{S}>`",
        note = "arguments before the last must implement `FromRequestParts`, e.g. `Path<T>`, `Query<T>`, `State<T>`, `HeaderMap`; a body extractor (`Json<T>`, `Form<T>`, `String`, `Bytes`) must be the last argument",
        note = "arguments are checked with the state `{S}`, written as `#[idempotent(state = ...)]` or taken from the handler's `State<T>` argument; it must be the state of the `Router` the handler is routed in"
    )]
    pub trait AxumPartsExtractor<S> {
        /// Named by the check.
        fn check() {}
    }

    #[diagnostic::do_not_recommend]
    impl<S, T: FromRequestParts<S>> AxumPartsExtractor<S> for T {}

    /// What the last argument may be: any extractor (`FromRequest`, which
    /// `FromRequestParts` extractors implement too), for the state `S`.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not an axum extractor for the state `{S}`",
        label = "does not implement `FromRequest<{S}>` or `FromRequestParts<{S}>`",
        note = "handler arguments must be extractors, e.g. `Json<T>`, `Form<T>`, `String`, `Bytes`, `Path<T>`, `Query<T>`, `State<T>`; to read the body into a type of yours, take `Json<T>` or `Form<T>` of it",
        note = "arguments are checked with the state `{S}`, written as `#[idempotent(state = ...)]` or taken from the handler's `State<T>` argument; it must be the state of the `Router` the handler is routed in"
    )]
    pub trait AxumExtractor<S, M> {
        /// Named by the check.
        fn check() {}
    }

    #[diagnostic::do_not_recommend]
    impl<S, M, T: FromRequest<S, M>> AxumExtractor<S, M> for T {}
}

/// Checks for actix-web handlers.
#[cfg(feature = "actix")]
pub(crate) mod actix {
    use std::future::Future;
    use std::pin::Pin;

    use actix_web::dev::Payload;
    use actix_web::{FromRequest, HttpRequest, HttpResponse, Responder};
    use futures_util::future::{ErrInto, TryFutureExt};

    /// What an actix-web handler may return: any `Responder`.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a response: an actix-web `#[idempotent]` handler must return a type that implements `Responder`",
        label = "does not implement `Responder`",
        note = "return e.g. `HttpResponse`, `String`, `web::Json<T>`, `impl Responder` or `Result<T, E>` where `T: Responder` and `E: Into<actix_web::Error>`, or implement `Responder` for this type"
    )]
    pub trait ActixResponse {
        /// The response to `req`.
        fn into_actix_response(self, req: &HttpRequest) -> HttpResponse;
    }

    #[diagnostic::do_not_recommend]
    impl<T: Responder> ActixResponse for T {
        fn into_actix_response(self, req: &HttpRequest) -> HttpResponse {
            self.respond_to(req).map_into_boxed_body()
        }
    }

    /// What a handler argument may be: any `FromRequest`.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not an actix-web extractor",
        label = "does not implement `FromRequest`",
        note = "handler arguments must be extractors, e.g. `web::Json<T>`, `web::Form<T>`, `web::Path<T>`, `web::Query<T>`, `web::Data<T>`, `HttpRequest`, `String`, `web::Bytes`; to read the body into a type of yours, take `web::Json<T>` or `web::Form<T>` of it"
    )]
    pub trait ActixExtractor: Sized {
        /// The future of [`extract`](Self::extract).
        type Future: Future<Output = Result<Self, actix_web::Error>> + 'static;
        /// Starts extracting, as `FromRequest::from_request` does.
        fn extract(req: &HttpRequest, payload: &mut Payload) -> Self::Future;
        /// Named by the check, before the extraction: with the same span and
        /// the same unmet bound, rustc reports only this first one.
        fn check() {}
    }

    #[diagnostic::do_not_recommend]
    impl<T: FromRequest + 'static> ActixExtractor for T {
        type Future = ErrInto<T::Future, actix_web::Error>;
        fn extract(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
            T::from_request(req, payload).err_into()
        }
    }

    /// A handler's arguments, extracted by an impl the macro writes for the
    /// handler: it starts every extractor in order, then awaits them in order,
    /// as actix extracts a tuple. Its impl has no bounds, so an argument that
    /// is not an extractor fails only where that impl names it (through
    /// [`ActixExtractor`], on the user's type), never as a bound of the
    /// runtime's `run`.
    pub trait Arguments: Sized + 'static {
        /// The arguments, as a tuple.
        type Values: 'static;
        /// Extracts them.
        fn extract(req: &HttpRequest, payload: &mut Payload) -> ExtractFuture<Self>;
    }

    /// What extracting gives.
    pub type ExtractResult<T> = Result<T, actix_web::Error>;

    /// The future of [`Arguments::extract`].
    pub type ExtractFuture<A> = Pin<Box<dyn Future<Output = ExtractResult<Extracted<A>>>>>;

    /// The extracted arguments of the handler `A`.
    pub struct Extracted<A: Arguments>(pub A::Values);

    impl<A: Arguments> FromRequest for Extracted<A> {
        type Error = actix_web::Error;
        type Future = ExtractFuture<A>;

        fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
            A::extract(req, payload)
        }
    }
}
