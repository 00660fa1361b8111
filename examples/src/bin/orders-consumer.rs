//! `orders-consumer`: one `#[idempotent]` order function
//! (`idempotent_examples::orders::place_order`) behind a JetStream pull
//! consumer or a RabbitMQ consumer, and optionally an HTTP route.
//!
//! ```text
//! orders-consumer [--broker nats|rabbitmq] [--nats-url nats://127.0.0.1:4222]
//!                 [--amqp-url amqp://guest:guest@127.0.0.1:5672/%2f]
//!                 [--name orders] [--ack-wait-ms 30000] [--http ADDR]
//!                 [--store memory|redis|postgres] [--redis-url URL]
//!                 [--database-url URL] [--lease-secs N]
//! ```
//!
//! Messages are JSON `{"key": str, "amount": int, "currency": str}` (and
//! the test knobs `"hold_ms"` and `"fail"`), published to `NAME.created`
//! (the stream `NAME`, subjects `NAME.>`, durable pull consumer `NAME`) or
//! to the default exchange with routing key `NAME` (the queue `NAME`).
//! Each is paid once per key, however often it is delivered: acknowledged
//! once paid or replayed; redelivered after a delay while a duplicate runs,
//! the store is unreachable or the order fails; dropped (JetStream `term`,
//! RabbitMQ reject without requeue) when it is not an order, or its key was
//! used for another order.
//!
//! Prints `consuming NAME` once it pulls messages. On SIGTERM or Ctrl-C it
//! stops pulling, lets the messages in hand finish and acknowledges them,
//! and exits 0.

// A command-line program reports its errors on stderr.
#![allow(clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use idempotent_examples::orders::{self, App};
use idempotent_examples::{
    flags, observability, report_drain, shutdown_signal, Backend, BACKEND_USAGE, DRAIN_DEADLINE,
};
use tokio::net::TcpListener;

struct Options {
    broker: String,
    nats_url: String,
    amqp_url: String,
    name: String,
    ack_wait_ms: String,
    http: String,
    backend: Backend,
}

fn usage() -> String {
    format!(
        "usage: orders-consumer [--broker nats|rabbitmq] [--nats-url URL] [--amqp-url URL] \
         [--name NAME] [--ack-wait-ms N] [--http ADDR] {BACKEND_USAGE}"
    )
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        broker: "nats".into(),
        nats_url: "nats://127.0.0.1:4222".into(),
        amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        name: "orders".into(),
        ack_wait_ms: "30000".into(),
        http: String::new(),
        backend: Backend::default(),
    };
    for (flag, value) in flags(&usage())? {
        let slot = match flag.as_str() {
            "--broker" => &mut o.broker,
            "--nats-url" => &mut o.nats_url,
            "--amqp-url" => &mut o.amqp_url,
            "--name" => &mut o.name,
            "--ack-wait-ms" => &mut o.ack_wait_ms,
            "--http" => &mut o.http,
            other => o
                .backend
                .slot(other)
                .ok_or_else(|| format!("unknown argument `{other}`; try --help"))?,
        };
        *slot = value;
    }
    o.backend.finish()?;
    if !matches!(o.broker.as_str(), "nats" | "rabbitmq") {
        return Err(format!(
            "unknown broker `{}`: expected `nats` or `rabbitmq`",
            o.broker
        ));
    }
    let name_ok = !o.name.is_empty()
        && o.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(format!(
            "`--name {}`: expected letters, digits, `-` and `_` (a stream and queue name)",
            o.name
        ));
    }
    o.ack_wait_ms
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms >= 1)
        .ok_or_else(|| {
            format!(
                "`--ack-wait-ms {}`: expected milliseconds, at least 1",
                o.ack_wait_ms
            )
        })?;
    Ok(o)
}

fn main() {
    let opts = options().unwrap_or_else(|e| {
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
    let code = rt.block_on(run(opts));
    std::process::exit(code);
}

async fn run(opts: Options) -> i32 {
    let (idempotency, payments) = match opts.backend.backends().await {
        Ok(backends) => backends,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let app = Arc::new(App {
        idempotency: idempotency.clone(),
        payments,
    });
    if !opts.http.is_empty() {
        let prometheus = match observability::install_prometheus() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        };
        let listener = match TcpListener::bind(&opts.http).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {}: {e}", opts.http);
                return 1;
            }
        };
        let router = orders::http::router(app.clone(), prometheus);
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
    }
    let consumed = match opts.broker.as_str() {
        "nats" => {
            let ack_wait = Duration::from_millis(opts.ack_wait_ms.parse().unwrap_or(30_000));
            let source = orders::nats::Source {
                url: opts.nats_url,
                name: opts.name,
                ack_wait,
            };
            orders::nats::consume(app, source, shutdown_signal()).await
        }
        _ => orders::rabbitmq::consume(app, &opts.amqp_url, &opts.name, shutdown_signal()).await,
    };
    if let Err(e) = consumed {
        eprintln!("{e}");
        return 1;
    }
    // Every message in hand has finished; what a caller of the HTTP door
    // left behind finishes too, up to the deadline.
    report_drain(idempotency.drain(DRAIN_DEADLINE).await);
    0
}
