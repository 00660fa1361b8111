//! `grpc-payments`: the example payment API over gRPC
//! (`examples/proto/payments.proto`), `CreatePayment` idempotent per
//! `idempotency-key` metadata; `ListPayments`; `grpc.health.v1.Health` and
//! server reflection (v1), so `grpcurl` and `grpcui` work against it.
//!
//! ```text
//! grpc-payments [--listen 127.0.0.1:50051] [--store memory|redis|postgres]
//!               [--redis-url redis://127.0.0.1:6379]
//!               [--database-url postgres://postgres@127.0.0.1:5432/postgres]
//!               [--lease-secs N]
//! ```
//!
//! Payments go where the HTTP servers put them, so `GET /payments` of an
//! HTTP server on the same Redis or database lists them too. With `--store
//! postgres` the payment is inserted through the method's `Tx`, committed
//! together with its idempotency record. The health service answers
//! `NOT_SERVING` for `payments.v1.Payments` while the store does not answer
//! its readiness ping.
//!
//! Prints `listening on ADDR` once it accepts connections. On SIGTERM or
//! Ctrl-C it stops accepting, lets the calls in flight finish, and exits 0.
//!
//! ```sh
//! grpcurl -plaintext -H 'idempotency-key: order-1' \
//!   -d '{"amount": 1000, "currency": "EUR"}' \
//!   127.0.0.1:50051 payments.v1.Payments/CreatePayment
//! ```

// A command-line program reports its errors on stderr.
#![allow(clippy::print_stderr)]

use std::time::Duration;

use idempotent_examples::{
    report_drain, shutdown_signal, NewPayment, Options, Payments, DRAIN_DEADLINE,
};
use idempotent_runtime::tonic::{idempotent, IdempotencyLayer};
use idempotent_runtime::tx::Tx;
use idempotent_runtime::Idempotency;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("payments.v1");

    /// The file descriptor set of `payments.proto`.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/payments.bin"));
}

use pb::payments_server::{Payments as PaymentsApi, PaymentsServer};
use pb::{CreatePaymentRequest, ListPaymentsRequest, ListPaymentsResponse, Payment};

/// The service name the health service reports on.
const SERVICE: &str = "payments.v1.Payments";

struct PaymentService {
    payments: Payments,
}

/// A payment of the examples' model, as the proto's `Payment`.
fn payment(
    p: idempotent_examples::Payment,
    labels: std::collections::HashMap<String, String>,
) -> Payment {
    Payment {
        id: p.id,
        amount: p.amount,
        currency: p.currency,
        labels,
    }
}

#[tonic::async_trait]
impl PaymentsApi for PaymentService {
    /// Creates a payment, once per `idempotency-key`. With `--store
    /// postgres`, `tx` is the claim's transaction: the payment is inserted
    /// in it and commits with the stored reply.
    #[idempotent(scope = "payments")]
    async fn create_payment(
        &self,
        request: Request<CreatePaymentRequest>,
        tx: Option<Tx>,
    ) -> Result<Response<Payment>, Status> {
        let r = request.into_inner();
        let new = NewPayment {
            delay_ms: r.delay_ms,
            hold_ms: r.hold_ms,
            fail: r.fail,
            unavailable: r.unavailable,
            ..NewPayment::new(r.amount, r.currency)
        };
        match self.payments.create(tx, new).await {
            Ok(p) => Ok(Response::new(payment(p, r.labels))),
            Err(503) => Err(Status::unavailable("payment service unavailable")),
            Err(_) => Err(Status::internal("payment failed")),
        }
    }

    async fn list_payments(
        &self,
        _: Request<ListPaymentsRequest>,
    ) -> Result<Response<ListPaymentsResponse>, Status> {
        let all = self
            .payments
            .all()
            .await
            .map_err(|_| Status::unavailable("payments unavailable"))?;
        Ok(Response::new(ListPaymentsResponse {
            payments: all
                .into_iter()
                .map(|p| payment(p, Default::default()))
                .collect(),
        }))
    }
}

fn main() {
    let opts =
        Options::from_args_listening("grpc-payments", "127.0.0.1:50051").unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2);
        });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async {
        let (idempotency, payments) = match opts.backends().await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{e}");
                return 2;
            }
        };
        serve(&opts.listen, idempotency, payments).await
    });
    std::process::exit(code);
}

async fn serve(listen: &str, idempotency: Idempotency, payments: Payments) -> i32 {
    if let Err(e) = idempotent_runtime::tonic::register_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
    {
        eprintln!("the descriptors of payments.proto: {e}");
        return 1;
    }
    let reflection = match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reflection: {e}");
            return 1;
        }
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    // NOT_SERVING while the store does not answer its readiness ping.
    let probed = idempotency.clone();
    tokio::spawn(async move {
        loop {
            let status = match probed.ready(Duration::from_secs(1)).await {
                Ok(()) => ServingStatus::Serving,
                Err(_) => ServingStatus::NotServing,
            };
            reporter.set_service_status(SERVICE, status).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            return 1;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| listen.to_owned());
    println!("listening on {addr}");
    let served = Server::builder()
        .layer(IdempotencyLayer::new(idempotency.clone()))
        .add_service(health)
        .add_service(reflection)
        .add_service(PaymentsServer::new(PaymentService { payments }))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown_signal())
        .await;
    if let Err(e) = served {
        eprintln!("serving: {e}");
        return 1;
    }
    report_drain(idempotency.drain(DRAIN_DEADLINE).await);
    0
}
