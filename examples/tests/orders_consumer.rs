//! `orders-consumer` against the real brokers (NATS JetStream on
//! 127.0.0.1:4222, RabbitMQ on 127.0.0.1:5672): thousands of orders with
//! duplicates and redeliveries over two consumer processes pay each key
//! exactly once; a consumer killed while payments sit in open transactions
//! pays each key once with PostgreSQL after a restart (and, with Redis,
//! pays some twice: asserted, as documented).
//!
//! Each test uses a stream or queue of its own (`--name`), deleted at the
//! end, and a database (or Redis server) of its own. Without a broker the
//! tests report themselves skipped, and fail under `CI=true`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::redis_server::RedisServer;
use idempotent_tests::unique;
use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
use lapin::BasicProperties;
use serde_json::json;

mod common;

use common::Database;

const CONSUMER: &str = env!("CARGO_BIN_EXE_orders-consumer");
const NATS: &str = "nats://127.0.0.1:4222";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Broker {
    Nats,
    Rabbit,
}

impl Broker {
    fn flag(self) -> &'static str {
        match self {
            Broker::Nats => "nats",
            Broker::Rabbit => "rabbitmq",
        }
    }

    /// Whether the broker answers on loopback; under `CI=true` it must. A
    /// skip is reported on stderr, where the test runner shows it.
    #[allow(clippy::print_stderr)]
    fn up(self) -> bool {
        let addr = match self {
            Broker::Nats => "127.0.0.1:4222",
            Broker::Rabbit => "127.0.0.1:5672",
        };
        let up = std::net::TcpStream::connect_timeout(
            &addr.parse().expect("an address"),
            Duration::from_secs(2),
        )
        .is_ok();
        if !up {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{self:?} is not running on {addr} (CI=true: .ci/run starts it)"
            );
            eprintln!("skipped: {self:?} is not running on {addr}");
        }
        up
    }
}

/// A consumer process, killed when dropped.
struct Consumer {
    child: Child,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `orders-consumer` on `broker` and `name` with `args`, and waits
/// for its `consuming NAME` line.
fn consumer(broker: Broker, name: &str, args: &[&str]) -> Consumer {
    let mut child = Command::new(CONSUMER)
        .args(["--broker", broker.flag(), "--name", name])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start orders-consumer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    assert_eq!(line.trim(), format!("consuming {name}"));
    Consumer { child }
}

/// Publishes `messages` to the broker's `name`: JetStream `NAME.created`
/// (each acknowledged as stored) or RabbitMQ's default exchange with
/// routing key `NAME` (the queue declared first).
async fn publish(broker: Broker, name: &str, messages: &[serde_json::Value]) {
    match broker {
        Broker::Nats => {
            let client = async_nats::connect(NATS).await.expect("connect to NATS");
            let js = async_nats::jetstream::new(client);
            idempotent_examples::orders::nats::consumer(
                &js,
                &idempotent_examples::orders::nats::Source {
                    url: NATS.into(),
                    name: name.into(),
                    ack_wait: Duration::from_secs(30),
                },
            )
            .await
            .expect("the stream");
            let subject = format!("{name}.created");
            let mut acks = Vec::new();
            for m in messages {
                acks.push(
                    js.publish(subject.clone(), m.to_string().into())
                        .await
                        .expect("publish"),
                );
            }
            for ack in acks {
                ack.await.expect("stored by JetStream");
            }
        }
        Broker::Rabbit => {
            let (connection, channel) = idempotent_examples::orders::rabbitmq::channel(AMQP, name)
                .await
                .expect("RabbitMQ");
            for m in messages {
                channel
                    .basic_publish(
                        "".into(),
                        name.into(),
                        BasicPublishOptions::default(),
                        m.to_string().as_bytes(),
                        BasicProperties::default(),
                    )
                    .await
                    .expect("publish");
            }
            let _ = channel.close(200, "bye".into()).await;
            let _ = connection.close(200, "bye".into()).await;
        }
    }
}

/// Deletes the test's stream or queue.
async fn clean_up(broker: Broker, name: &str) {
    match broker {
        Broker::Nats => {
            if let Ok(client) = async_nats::connect(NATS).await {
                let _ = async_nats::jetstream::new(client).delete_stream(name).await;
            }
        }
        Broker::Rabbit => {
            if let Ok((connection, channel)) =
                idempotent_examples::orders::rabbitmq::channel(AMQP, name).await
            {
                let _ = channel
                    .queue_delete(name.into(), QueueDeleteOptions::default())
                    .await;
                let _ = connection.close(200, "bye".into()).await;
            }
        }
    }
}

/// An order: `amount` tells orders apart (one key, one amount), so the
/// payments show which keys were paid how often.
fn order(key: &str, amount: i64, hold_ms: u64) -> serde_json::Value {
    json!({"key": key, "amount": amount, "currency": "EUR", "hold_ms": hold_ms})
}

/// How many payments each amount got, in the test's database.
async fn paid_pg(db: &Database) -> HashMap<i64, i64> {
    let mut conn = db.connect().await;
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT amount, count(*) FROM payments GROUP BY amount")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    rows.into_iter().collect()
}

/// How many payments each amount got, in the test's Redis.
async fn paid_redis(url: &str) -> HashMap<i64, i64> {
    let client = redis::Client::open(url).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg("idempotent-examples:payments")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    let mut paid = HashMap::new();
    for item in items {
        let p: serde_json::Value = serde_json::from_str(&item).expect("a payment");
        *paid
            .entry(p["amount"].as_i64().expect("an amount"))
            .or_insert(0) += 1;
    }
    paid
}

/// Waits (up to `within`) until `paid` has every one of `keys` amounts,
/// the broker has nothing left to deliver on `name`, and the payments stay
/// unchanged for two seconds (late duplicates would show by then).
async fn settle<F, Fut>(
    broker: Broker,
    name: &str,
    keys: usize,
    within: Duration,
    mut paid: F,
) -> HashMap<i64, i64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = HashMap<i64, i64>>,
{
    let until = Instant::now() + within;
    let mut last = HashMap::new();
    let mut stable_since = Instant::now();
    loop {
        let now = paid().await;
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if last.len() >= keys
            && stable_since.elapsed() >= Duration::from_secs(2)
            && pending(broker, name).await == 0
        {
            return last;
        }
        assert!(
            Instant::now() < until,
            "{} of {keys} keys paid after {within:?}",
            last.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 2,000 orders, 20 % of them duplicates (the same key and body, a message
/// of their own), 5 % held past JetStream's ack wait (redelivered while
/// they still run, so refused as in progress and nak'ed, on RabbitMQ
/// requeued when their duplicate meets them), over two consumer processes
/// on one database: every key paid, and exactly once.
async fn duplicates_and_redeliveries_pay_once(broker: Broker) {
    if !broker.up() {
        return;
    }
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let db = Database::create(&server).await;
    let name = unique("orders").replace('.', "-");
    const KEYS: i64 = 1_600;
    let mut messages: Vec<serde_json::Value> = (0..KEYS)
        .map(|i| {
            let hold = if i % 20 == 0 { 1_500 } else { 0 };
            order(&format!("{name}-{i}"), 10_000 + i, hold)
        })
        .collect();
    // The duplicates: every fourth key again, spread among the others.
    for i in (0..KEYS).step_by(4) {
        let dup = messages[i as usize].clone();
        messages.insert((i as usize * 5 / 4).min(messages.len()), dup);
    }
    assert_eq!(messages.len(), 2_000);
    let args = [
        "--store",
        "postgres",
        "--database-url",
        db.url.as_str(),
        "--ack-wait-ms",
        "1000",
    ];
    let (http_one, http_two) = (free_addr(), free_addr());
    let one = consumer(
        broker,
        &name,
        &[&args[..], &["--http", &http_one.to_string()]].concat(),
    );
    let two = consumer(
        broker,
        &name,
        &[&args[..], &["--http", &http_two.to_string()]].concat(),
    );
    publish(broker, &name, &messages).await;
    let paid = settle(
        broker,
        &name,
        KEYS as usize,
        Duration::from_secs(120),
        || paid_pg(&db),
    )
    .await;
    let twice: Vec<_> = paid.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "{broker:?}: keys paid more than once: {twice:?}"
    );
    assert_eq!(paid.len(), KEYS as usize, "{broker:?}: every key paid");
    // The duplicates were replayed, and some deliveries met a duplicate
    // still running and were redelivered: what the test is about.
    let (mut replayed, mut conflicts) = (0, 0);
    for addr in [http_one, http_two] {
        replayed += outcomes(addr, "replayed").await;
        conflicts += outcomes(addr, "conflict").await;
    }
    assert!(replayed > 0, "{broker:?}: no duplicate was replayed");
    assert!(
        conflicts > 0,
        "{broker:?}: no delivery met its duplicate running"
    );
    println!(
        "{broker:?}: 2000 messages (400 duplicates, 80 held 1.5 s) over two consumers: {} keys, {} payments; {replayed} replays, {conflicts} deliveries redelivered for a duplicate in progress",
        paid.len(),
        paid.values().sum::<i64>()
    );
    drop((one, two));
    clean_up(broker, &name).await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_duplicates_and_redeliveries_pay_once() {
    duplicates_and_redeliveries_pay_once(Broker::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_duplicates_and_redeliveries_pay_once() {
    duplicates_and_redeliveries_pay_once(Broker::Rabbit).await;
}

/// A consumer killed while its messages sit in open transactions (each
/// payment written, then held 3 s), then started again: with PostgreSQL the
/// killed transactions roll back, nothing holds their keys, the broker
/// redelivers, and every key is paid exactly once.
async fn killed_consumer_pays_once_with_postgres(broker: Broker) {
    if !broker.up() {
        return;
    }
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let db = Database::create(&server).await;
    let name = unique("killed").replace('.', "-");
    const KEYS: i64 = 40;
    let messages: Vec<_> = (0..KEYS)
        .map(|i| order(&format!("{name}-{i}"), 20_000 + i, 3_000))
        .collect();
    let args = [
        "--store",
        "postgres",
        "--database-url",
        db.url.as_str(),
        "--ack-wait-ms",
        "2000",
    ];
    let doomed = consumer(broker, &name, &args);
    publish(broker, &name, &messages).await;
    // Kill it once payments were written (the sequence moved) but, held,
    // none committed.
    let mut look = db.connect().await;
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let inserts: Option<(i64, bool)> =
            sqlx::query_as("SELECT last_value, is_called FROM payments_id_seq")
                .fetch_optional(&mut look)
                .await
                .unwrap_or(None);
        if inserts.is_some_and(|(n, called)| called && n >= 5) {
            break;
        }
        assert!(Instant::now() < until, "no payment written within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(paid_pg(&db).await.is_empty(), "held: nothing committed yet");
    drop(doomed);
    let again = consumer(broker, &name, &args);
    let paid = settle(
        broker,
        &name,
        KEYS as usize,
        Duration::from_secs(60),
        || paid_pg(&db),
    )
    .await;
    assert!(
        paid.values().all(|n| *n == 1),
        "{broker:?}: a key paid twice: {paid:?}"
    );
    println!(
        "{broker:?} + PostgreSQL, killed mid-transaction: {} keys, {} payments",
        paid.len(),
        paid.values().sum::<i64>()
    );
    drop(again);
    drop(look);
    clean_up(broker, &name).await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_consumer_pays_once_with_postgres() {
    killed_consumer_pays_once_with_postgres(Broker::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_killed_consumer_pays_once_with_postgres() {
    killed_consumer_pays_once_with_postgres(Broker::Rabbit).await;
}

/// The same kill with Redis: the payments written before the kill survive
/// it (they are not in a transaction with the record), the killed claims
/// expire after their lease (`--lease-secs 2`), the redeliveries run the
/// function again, and those keys are paid twice. Every key is paid, none
/// more than twice. (JetStream's ack wait, 5 s, outlasts a message's 3 s
/// hold here: a redelivery during a run would find its 2 s claim lapsed,
/// the example's lease override being renewed only every 10 s, and pay a
/// third time.)
async fn killed_consumer_pays_twice_with_redis(broker: Broker) {
    if !broker.up() {
        return;
    }
    let Some(redis) = RedisServer::for_test() else {
        return;
    };
    let name = unique("killed-redis").replace('.', "-");
    const KEYS: i64 = 40;
    let messages: Vec<_> = (0..KEYS)
        .map(|i| order(&format!("{name}-{i}"), 30_000 + i, 3_000))
        .collect();
    let args = [
        "--store",
        "redis",
        "--redis-url",
        redis.url(),
        "--lease-secs",
        "2",
        "--ack-wait-ms",
        "5000",
    ];
    let doomed = consumer(broker, &name, &args);
    publish(broker, &name, &messages).await;
    let until = Instant::now() + Duration::from_secs(20);
    while paid_redis(redis.url()).await.len() < 5 {
        assert!(Instant::now() < until, "no payment within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(doomed);
    let killed_with = paid_redis(redis.url()).await.len();
    let again = consumer(broker, &name, &args);
    let paid = settle(
        broker,
        &name,
        KEYS as usize,
        Duration::from_secs(60),
        || paid_redis(redis.url()),
    )
    .await;
    let twice = paid.values().filter(|n| **n == 2).count();
    assert!(paid.values().all(|n| *n <= 2), "{paid:?}");
    assert!(
        twice >= 1,
        "{broker:?} + Redis: the payments made before the kill are made again"
    );
    println!(
        "{broker:?} + Redis, killed while {killed_with} payments were held: {} keys, {} payments ({twice} keys paid twice)",
        paid.len(),
        paid.values().sum::<i64>()
    );
    drop(again);
    clean_up(broker, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_consumer_pays_twice_with_redis() {
    killed_consumer_pays_twice_with_redis(Broker::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_killed_consumer_pays_twice_with_redis() {
    killed_consumer_pays_twice_with_redis(Broker::Rabbit).await;
}

/// A message that is not an order is dropped (JetStream `term`, RabbitMQ
/// reject without requeue), never redelivered forever; and on SIGTERM the
/// consumer stops pulling, lets the order it holds finish, acknowledges it
/// and exits 0. Afterwards nothing is left pending on the broker.
async fn drops_garbage_and_drains_on_sigterm(broker: Broker) {
    if !broker.up() {
        return;
    }
    let name = unique("drain").replace('.', "-");
    let http = free_addr();
    let mut running = consumer(broker, &name, &["--http", &http.to_string()]);
    let held = order(&format!("{name}-held"), 40_000, 2_000);
    publish(
        broker,
        &name,
        &[json!("not an order"), json!({"key": 1}), held],
    )
    .await;
    let api = idempotent_tests::Remote::new(http);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let paid = api.get("/payments").send().await.json();
        if paid.as_array().is_some_and(|p| !p.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the held order was not paid within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its payment is written and it holds 2 s more: SIGTERM now.
    let pid = running.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .is_ok_and(|s| s.success()));
    let status = running.child.wait().expect("wait for the consumer");
    assert!(status.success(), "{broker:?}: exit status {status}");
    assert_eq!(
        pending(broker, &name).await,
        0,
        "{broker:?}: the held order was acknowledged and the garbage dropped"
    );
    clean_up(broker, &name).await;
}

/// `idempotent_requests_total{scope="orders",outcome}` from a consumer's
/// `GET /metrics`.
async fn outcomes(addr: std::net::SocketAddr, outcome: &str) -> u64 {
    let text = idempotent_tests::Remote::new(addr)
        .get("/metrics")
        .send()
        .await
        .body;
    let needle = format!("idempotent_requests_total{{scope=\"orders\",outcome=\"{outcome}\"}} ");
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(&needle)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A free loopback address.
fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("an address")
}

/// Messages not settled: JetStream's pending and unacknowledged, or
/// RabbitMQ's ready ones (without a consumer attached, a message left
/// unacknowledged is ready again).
async fn pending(broker: Broker, name: &str) -> u64 {
    match broker {
        Broker::Nats => {
            let client = async_nats::connect(NATS).await.expect("connect");
            let js = async_nats::jetstream::new(client);
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
                .get_stream(name)
                .await
                .expect("the stream")
                .get_consumer(name)
                .await
                .expect("the consumer");
            let info = consumer.info().await.expect("consumer info");
            info.num_pending + info.num_ack_pending as u64
        }
        Broker::Rabbit => {
            let (connection, channel) = idempotent_examples::orders::rabbitmq::channel(AMQP, name)
                .await
                .expect("RabbitMQ");
            let queue = channel
                .queue_declare(
                    name.into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .expect("the queue");
            let _ = connection.close(200, "bye".into()).await;
            u64::from(queue.message_count())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_drops_garbage_and_drains_on_sigterm() {
    drops_garbage_and_drains_on_sigterm(Broker::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_drops_garbage_and_drains_on_sigterm() {
    drops_garbage_and_drains_on_sigterm(Broker::Rabbit).await;
}
