//! [`PaymentsTx`]: the `Tx` of `POST /payments` where the store has one.

use idempotent_runtime::tx::Tx;

use crate::Payments;

/// `POST /payments`'s handler takes this instead of [`Tx`], so that one
/// handler serves every store: with `--store postgres` it holds the
/// request's [`Tx`] (the handler's transaction, committed by the runtime
/// together with the idempotency record), with the other stores nothing.
///
/// [`Tx`] alone would not do: its extractor refuses a request (500
/// `no-transactional-store`) unless the installed store is the Postgres
/// store, and axum has no `Option<Tx>`. Two handlers chosen at routing time
/// would have worked too, at the cost of a second `#[idempotent]` function
/// per framework saying the same thing. Which one applies follows the app's
/// [`Payments`] (axum state, actix-web app data), set with the store.
pub struct PaymentsTx(Option<Tx>);

impl PaymentsTx {
    /// No transaction: the payment is written on its own (the memory and
    /// Redis stores, and the batch route, which has no `Tx`).
    pub fn none() -> Self {
        PaymentsTx(None)
    }

    /// The transaction, where there is one.
    pub(crate) fn as_mut(&mut self) -> Option<&mut Tx> {
        self.0.as_mut()
    }
}

impl axum::extract::FromRequestParts<Payments> for PaymentsTx {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        payments: &Payments,
    ) -> Result<Self, Self::Rejection> {
        match payments {
            Payments::Postgres(_) => {
                <Tx as axum::extract::FromRequestParts<Payments>>::from_request_parts(
                    parts, payments,
                )
                .await
                .map(|tx| PaymentsTx(Some(tx)))
            }
            _ => Ok(PaymentsTx(None)),
        }
    }
}

impl actix_web::FromRequest for PaymentsTx {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(
        req: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        let postgres = req
            .app_data::<actix_web::web::Data<Payments>>()
            .is_some_and(|p| matches!(p.get_ref(), Payments::Postgres(_)));
        if !postgres {
            return std::future::ready(Ok(PaymentsTx(None)));
        }
        std::future::ready(
            <Tx as actix_web::FromRequest>::from_request(req, payload)
                .into_inner()
                .map(|tx| PaymentsTx(Some(tx))),
        )
    }
}
