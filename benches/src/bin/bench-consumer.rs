//! `bench-consumer`: consumes `--count` orders from a JetStream stream as
//! fast as it can and reports the throughput. One arm per run:
//!
//! | arm | what each message runs before its ack |
//! |---|---|
//! | `bare` | the trivial handler (number the order) |
//! | `memory`, `redis`, `postgres` | that handler as an `#[idempotent]` function on that store |
//! | `bare-pg` | begin, insert one row, commit; no attribute |
//! | `postgres-tx` | `#[idempotent]` on the Postgres store, the same insert through `Tx` |
//!
//! The key of a message is `--prefix` and the order's number, so every run
//! with a new prefix sees fresh keys. A new ephemeral pull consumer reads
//! the stream from its start; up to [`IN_FLIGHT`] messages are handled at
//! once, each acknowledged when its function answered.
//!
//! ```text
//! bench-consumer --arm ARM --stream NAME --count N --prefix P [--nats-url nats://127.0.0.1:4222]
//!     [--redis-url URL] [--database-url URL]
//! ```
//!
//! Prints `messages_per_second=R` once all `N` are acknowledged.

#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use futures_util::StreamExt;
use idempotent_benches::pg;
use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::store::redis::RedisStore;
use idempotent_runtime::tx::Tx;
use idempotent_runtime::{idempotent, Idempotency, IdempotencyError};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// How many messages are handled at once (the consumer's prefetch).
const IN_FLIGHT: usize = 64;

/// An order as published by the runner.
#[derive(Serialize, Deserialize)]
pub struct Order {
    /// Its number in the stream: the key's suffix.
    pub n: u64,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// What the functions answer (and the store keeps).
#[derive(Serialize, Deserialize)]
pub struct Placed {
    /// `ord_N`.
    pub id: String,
}

/// Why a message failed: a refusal of the runtime, or the database.
#[derive(Debug, Serialize, Deserialize)]
pub struct Failed(String);

impl From<IdempotencyError> for Failed {
    fn from(e: IdempotencyError) -> Failed {
        Failed(e.to_string())
    }
}

fn place(order: Order) -> Placed {
    Placed {
        id: idempotent_benches::create(idempotent_benches::Order {
            amount: order.amount,
            currency: order.currency,
        })
        .id,
    }
}

#[idempotent(key = key, scope = "bench-orders", store = store)]
async fn place_idempotent(
    store: &Idempotency,
    key: String,
    order: Order,
) -> Result<Placed, Failed> {
    Ok(place(order))
}

async fn insert(conn: &mut sqlx::PgConnection, order: Order) -> Result<Placed, Failed> {
    let created = pg::insert(
        conn,
        idempotent_benches::Order {
            amount: order.amount,
            currency: order.currency,
        },
    )
    .await
    .map_err(|e| Failed(e.to_string()))?;
    Ok(Placed { id: created.id })
}

#[idempotent(key = key, scope = "bench-orders-tx", store = store)]
async fn place_in_tx(
    store: &Idempotency,
    key: String,
    order: Order,
    mut tx: Tx,
) -> Result<Placed, Failed> {
    let conn = tx.connection().await.map_err(|e| Failed(e.to_string()))?;
    insert(conn, order).await
}

/// What one arm runs for a message.
enum Arm {
    Bare,
    Idempotent(Idempotency),
    BarePg(PgPool),
    InTx(Idempotency),
}

impl Arm {
    async fn handle(&self, prefix: &str, order: Order) -> Result<Placed, Failed> {
        let key = format!("{prefix}-{}", order.n);
        match self {
            Arm::Bare => Ok(place(order)),
            Arm::Idempotent(store) => place_idempotent(store, key, order).await,
            Arm::BarePg(pool) => {
                let mut tx = pool.begin().await.map_err(|e| Failed(e.to_string()))?;
                let placed = insert(&mut tx, order).await?;
                tx.commit().await.map_err(|e| Failed(e.to_string()))?;
                Ok(placed)
            }
            Arm::InTx(store) => place_in_tx(store, key, order).await,
        }
    }
}

struct Options {
    arm: String,
    stream: String,
    count: u64,
    prefix: String,
    nats_url: String,
    redis_url: String,
    database_url: String,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        arm: String::new(),
        stream: String::new(),
        count: 0,
        prefix: String::new(),
        nats_url: "nats://127.0.0.1:4222".into(),
        redis_url: "redis://127.0.0.1:6379".into(),
        database_url: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("`{flag}` needs a value"))?;
        match flag.as_str() {
            "--arm" => o.arm = value,
            "--stream" => o.stream = value,
            "--count" => o.count = value.parse().map_err(|_| "--count: a number")?,
            "--prefix" => o.prefix = value,
            "--nats-url" => o.nats_url = value,
            "--redis-url" => o.redis_url = value,
            "--database-url" => o.database_url = value,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if o.stream.is_empty() || o.prefix.is_empty() || o.count == 0 {
        return Err(
            "usage: bench-consumer --arm bare|memory|redis|postgres|bare-pg|postgres-tx \
             --stream NAME --count N --prefix P [--nats-url URL] [--redis-url URL] \
             [--database-url URL]"
                .into(),
        );
    }
    Ok(o)
}

async fn arm(o: &Options) -> Result<Arm, String> {
    let postgres = || async {
        match o.database_url.as_str() {
            "" => Err(format!("--arm {} needs --database-url", o.arm)),
            url => pg::connect(url).await,
        }
    };
    Ok(match o.arm.as_str() {
        "bare" => Arm::Bare,
        "memory" => Arm::Idempotent(Idempotency::new(MemoryStore::builder().build())),
        "redis" => Arm::Idempotent(Idempotency::new(
            RedisStore::builder(&o.redis_url)
                .prefix("bench-consumer")
                .build()
                .await
                .map_err(|e| format!("cannot use Redis at {}: {e}", o.redis_url))?,
        )),
        "postgres" => Arm::Idempotent(postgres().await?.idempotency),
        "bare-pg" => Arm::BarePg(postgres().await?.pool),
        "postgres-tx" => Arm::InTx(postgres().await?.idempotency),
        other => return Err(format!("unknown arm `{other}`")),
    })
}

async fn run(o: Options) -> Result<f64, String> {
    let arm = Arc::new(arm(&o).await?);
    let client = async_nats::connect(o.nats_url.as_str())
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", o.nats_url))?;
    let js = async_nats::jetstream::new(client.clone());
    let stream = js
        .get_stream(&o.stream)
        .await
        .map_err(|e| format!("stream {}: {e}", o.stream))?;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("create a consumer on {}: {e}", o.stream))?;
    let prefix: Arc<str> = o.prefix.into();
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(IN_FLIGHT)
        .messages()
        .await
        .map_err(|e| format!("pull from {}: {e}", o.stream))?;
    let mut running = tokio::task::JoinSet::new();
    let mut seen = 0;
    let mut failed = 0u64;
    while seen < o.count {
        while running.len() >= IN_FLIGHT {
            if let Some(Ok(Err(()))) = running.join_next().await {
                failed += 1;
            }
        }
        let message = messages
            .next()
            .await
            .ok_or("the stream of messages ended")?
            .map_err(|e| format!("pulling a message: {e}"))?;
        seen += 1;
        let (arm, prefix) = (arm.clone(), prefix.clone());
        running.spawn(async move {
            let order: Order = serde_json::from_slice(&message.payload)
                .map_err(|e| eprintln!("bench-consumer: a message is not an order: {e}"))?;
            arm.handle(&prefix, order)
                .await
                .map_err(|Failed(e)| eprintln!("bench-consumer: {e}"))?;
            message
                .ack()
                .await
                .map_err(|e| eprintln!("bench-consumer: ack: {e}"))
        });
    }
    while let Some(done) = running.join_next().await {
        if let Ok(Err(())) = done {
            failed += 1;
        }
    }
    client
        .flush()
        .await
        .map_err(|e| format!("flushing the acknowledgements: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    if failed > 0 {
        return Err(format!("{failed} of {} messages failed", o.count));
    }
    Ok(o.count as f64 / seconds)
}

fn main() {
    let opts = options().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match rt.block_on(run(opts)) {
        Ok(rate) => println!("messages_per_second={rate:.1}"),
        Err(e) => {
            eprintln!("bench-consumer: {e}");
            std::process::exit(1);
        }
    }
}
