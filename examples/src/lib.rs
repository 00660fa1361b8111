//! What the example servers share: the payments, the command line, and the
//! batch endpoint. `axum-payments` and `actix-payments` only add their
//! framework's routing around it, so both serve the same payment API
//! (`POST /payments`, `GET /payments`, `POST /payments/batch`) and answer it
//! alike.
//!
//! Three stores (`--store`): `memory` (this process), `redis` (records and
//! payments in one Redis, shared by several processes) and `postgres`
//! (records and payments in one database, the payment written in the
//! handler's own transaction, which commits together with its idempotency
//! record; see [`PaymentsTx`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::store::postgres::PostgresStore;
use idempotent_runtime::store::redis::RedisStore;
use idempotent_runtime::store::{ChangeListener, Claim, Store, StoreError};
use idempotent_runtime::tx::Tx;
use idempotent_runtime::{
    Drained, Fingerprint, HandlerConfig, Idempotency, IdempotencyKey, OwnerToken, Record, RecordId,
    StoredResponse,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};

pub mod observability;

/// `POST /payments` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewPayment {
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
    /// Sleep this long before creating the payment.
    #[serde(default)]
    pub delay_ms: u64,
    /// Once the payment is recorded, sleep this long before answering (with
    /// `--store postgres`: inside the handler's transaction, not committed
    /// yet).
    #[serde(default)]
    pub hold_ms: u64,
    /// Answer 500 without creating a payment (stored and replayed, like any
    /// final answer).
    #[serde(default)]
    pub fail: bool,
    /// Answer 503 with `Retry-After: 1` without creating a payment, as when
    /// a dependency is down: an answer that invites a retry, so it is not
    /// stored (with `--store postgres`, its transaction rolls back) and the
    /// retry runs the handler again.
    #[serde(default)]
    pub unavailable: bool,
}

impl NewPayment {
    /// A payment of `amount` in `currency`, with none of the test knobs.
    pub fn new(amount: i64, currency: String) -> Self {
        NewPayment {
            amount,
            currency,
            delay_ms: 0,
            hold_ms: 0,
            fail: false,
            unavailable: false,
        }
    }
}

/// A created payment.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Payment {
    /// `pay_N`.
    pub id: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// Every payment created, in order: in this process, or (with
/// `--store redis` or `--store postgres`) in the same Redis or database as
/// the idempotency records, so that several server processes share one list.
#[derive(Clone)]
pub enum Payments {
    /// In this process.
    Memory {
        /// The payments.
        list: Arc<Mutex<Vec<Payment>>>,
        /// The last id handed out.
        next_id: Arc<AtomicU64>,
    },
    /// In Redis: a list of JSON payments and an id counter.
    Redis(redis::aio::ConnectionManager),
    /// In PostgreSQL: the table `payments` (see [`PAYMENTS_TABLE`]), ids
    /// from its sequence. `POST /payments` writes through the handler's
    /// [`Tx`]; the pool serves `GET /payments` and the batch route.
    Postgres(PgPool),
}

impl Default for Payments {
    fn default() -> Self {
        Payments::Memory {
            list: Arc::default(),
            next_id: Arc::default(),
        }
    }
}

const LIST_KEY: &str = "idempotent-examples:payments";
const NEXT_ID_KEY: &str = "idempotent-examples:payments:next-id";

/// The payments table of `--store postgres`, created at start if missing.
/// `id` comes from the table's sequence, so ids are unique across every
/// process sharing the database (and a rolled-back insert leaves a gap).
pub const PAYMENTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS payments (
    id         bigserial   PRIMARY KEY,
    amount     bigint      NOT NULL,
    currency   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)";

/// The idempotency records' table of `--store postgres`, made by
/// `PostgresStore::migrate` at start if missing.
pub const IDEMPOTENCY_TABLE: &str = "payments_idempotency";

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

impl Payments {
    /// Creates a payment (after `delay_ms`, and answering `hold_ms` after
    /// recording it), or fails with 500 or 503 if asked to; `Err` is the
    /// status to answer (see [`failure_body`] and [`retry_after`]).
    ///
    /// With `--store postgres` the payment is inserted through `tx`, and
    /// `hold_ms` passes with that transaction still open: the runtime
    /// commits it with the stored response after the handler returns, or
    /// rolls it back (a 503, a lease lost, a process killed meanwhile).
    pub async fn create(&self, mut tx: PaymentsTx, req: NewPayment) -> Result<Payment, u16> {
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.delay_ms)).await;
        }
        if req.fail {
            return Err(500);
        }
        if req.unavailable {
            return Err(503);
        }
        let hold = Duration::from_millis(req.hold_ms);
        let payment = self.record(&mut tx, req).await?;
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        // The transaction goes back to the runtime only now, after the hold.
        drop(tx);
        Ok(payment)
    }

    async fn record(&self, tx: &mut PaymentsTx, req: NewPayment) -> Result<Payment, u16> {
        match self {
            Payments::Memory { list, next_id } => {
                let n = next_id.fetch_add(1, Ordering::Relaxed) + 1;
                let payment = Payment {
                    id: format!("pay_{n}"),
                    amount: req.amount,
                    currency: req.currency,
                };
                list.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(payment.clone());
                Ok(payment)
            }
            Payments::Redis(conn) => {
                let mut conn = conn.clone();
                let n: u64 = redis::cmd("INCR")
                    .arg(NEXT_ID_KEY)
                    .query_async(&mut conn)
                    .await
                    .map_err(|_| 503u16)?;
                let payment = Payment {
                    id: format!("pay_{n}"),
                    amount: req.amount,
                    currency: req.currency,
                };
                let json = serde_json::to_string(&payment).map_err(|_| 500u16)?;
                let _: i64 = redis::cmd("RPUSH")
                    .arg(LIST_KEY)
                    .arg(json)
                    .query_async(&mut conn)
                    .await
                    .map_err(|_| 503u16)?;
                Ok(payment)
            }
            Payments::Postgres(pool) => match &mut tx.0 {
                Some(tx) => insert_payment(tx, req).await,
                None => insert_payment(pool, req).await,
            },
        }
    }

    /// Every payment created.
    pub async fn all(&self) -> Result<Vec<Payment>, u16> {
        match self {
            Payments::Memory { list, .. } => {
                Ok(list.lock().unwrap_or_else(|e| e.into_inner()).clone())
            }
            Payments::Redis(conn) => {
                let mut conn = conn.clone();
                let items: Vec<String> = redis::cmd("LRANGE")
                    .arg(LIST_KEY)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .map_err(|_| 503u16)?;
                Ok(items
                    .iter()
                    .filter_map(|j| serde_json::from_str(j).ok())
                    .collect())
            }
            Payments::Postgres(pool) => {
                let rows: Vec<(i64, i64, String)> =
                    sqlx::query_as("SELECT id, amount, currency FROM payments ORDER BY id")
                        .fetch_all(pool)
                        .await
                        .map_err(|_| 503u16)?;
                Ok(rows
                    .into_iter()
                    .map(|(id, amount, currency)| Payment {
                        id: format!("pay_{id}"),
                        amount,
                        currency,
                    })
                    .collect())
            }
        }
    }
}

/// Inserts a payment through `conn` (the handler's transaction, or the
/// pool); a database error is a 503, which is not stored.
async fn insert_payment<'c, E>(conn: E, req: NewPayment) -> Result<Payment, u16>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let (id,): (i64,) =
        sqlx::query_as("INSERT INTO payments (amount, currency) VALUES ($1, $2) RETURNING id")
            .bind(req.amount)
            .bind(&req.currency)
            .fetch_one(conn)
            .await
            .map_err(|_| 503u16)?;
    Ok(Payment {
        id: format!("pay_{id}"),
        amount: req.amount,
        currency: req.currency,
    })
}

/// The body of an answer with `status` when no payment was made: 503 when
/// the payment service (or the Redis behind it) is unavailable, 500 when the
/// payment failed.
pub fn failure_body(status: u16) -> serde_json::Value {
    match status {
        503 => serde_json::json!({"error": "payment service unavailable"}),
        _ => serde_json::json!({"error": "payment failed"}),
    }
}

/// The `Retry-After` of an answer with `status` when no payment was made:
/// `1` (second) for a 503, which is worth retrying soon; none otherwise.
pub fn retry_after(status: u16) -> Option<&'static str> {
    (status == 503).then_some("1")
}

/// How long, on SIGTERM or Ctrl-C, the servers let running handlers (those
/// whose client hung up included) finish before they exit anyway: the
/// claims of handlers still running then are released, so that a retry
/// need not wait for their lease to end.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Reports on stderr the handlers a drain cut off, if any.
#[allow(clippy::print_stderr)]
pub fn report_drain(drained: Drained) {
    if drained.cut_off > 0 {
        eprintln!(
            "shutdown: {} handler(s) still running after {} s were cut off; their keys were released",
            drained.cut_off,
            DRAIN_DEADLINE.as_secs()
        );
    }
}

/// `POST /payments/batch` body.
#[derive(Deserialize)]
pub struct Batch {
    /// The items, each with its own idempotency key.
    pub items: Vec<BatchItem>,
}

/// One batch item.
#[derive(Deserialize, Serialize)]
pub struct BatchItem {
    /// Its idempotency key, read as an `Idempotency-Key` header value is:
    /// `q-7f3a`, `"q-7f3a"` (an RFC 8941 string) and ` q-7f3a` are one key.
    pub key: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// What a batch item asks for, without its key: what its fingerprint covers,
/// so that one key spelled two ways is one request, not a reuse.
#[derive(Serialize)]
struct ItemPayload<'a> {
    amount: i64,
    currency: &'a str,
}

/// Runs a batch: each item idempotent on its own key, through the plain API.
pub async fn run_batch(
    idempotency: &Idempotency,
    payments: &Payments,
    batch: Batch,
) -> Vec<serde_json::Value> {
    static ITEMS: HandlerConfig = HandlerConfig::new("payments-batch");
    let mut results = Vec::with_capacity(batch.items.len());
    for item in batch.items {
        let Ok(key) = IdempotencyKey::parse(item.key.as_bytes()) else {
            results
                .push(serde_json::json!({"key": item.key, "status": 400, "error": "invalid key"}));
            continue;
        };
        let payload = ItemPayload {
            amount: item.amount,
            currency: &item.currency,
        };
        let fingerprint = Fingerprint::of_bytes(&serde_json::to_vec(&payload).unwrap_or_default());
        let payments = payments.clone();
        let req = NewPayment::new(item.amount, item.currency.clone());
        let outcome = idempotency
            .run(&ITEMS, None, &key, fingerprint, || async move {
                // The plain API hands out no `Tx`: with `--store postgres`
                // a batch item's payment commits on its own, before its
                // record (as with Redis), not together with it.
                match payments.create(PaymentsTx::none(), req).await {
                    Ok(p) => StoredResponse::new(201, serde_json::to_vec(&p).unwrap_or_default()),
                    Err(status) => StoredResponse::new(status, failure_body(status).to_string()),
                }
            })
            .await;
        results.push(match outcome {
            Ok(o) => {
                let body = o.response().body.clone().unwrap_or_default();
                serde_json::json!({
                    "key": item.key,
                    "status": o.response().status,
                    "replayed": o.is_replay(),
                    "payment": serde_json::from_slice::<serde_json::Value>(&body).ok(),
                })
            }
            Err(problem) => serde_json::json!({"key": item.key, "status": problem.status, "error": problem.detail}),
        });
    }
    results
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: both servers then stop
/// accepting connections, let the handlers running finish (those whose
/// client hung up included) for up to [`DRAIN_DEADLINE`], and exit.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// The command line of both servers.
pub struct Options {
    /// `--listen ADDR`.
    pub listen: String,
    /// `--store memory|redis|postgres`.
    pub store: String,
    /// `--redis-url URL`.
    pub redis_url: String,
    /// `--database-url URL`.
    pub database_url: String,
    /// `--lease-secs N`: claims live `N` s instead of the handler's own 30 s
    /// (see [`LeaseOverride`]); `None`: the handler's own.
    pub lease: Option<Duration>,
}

/// The usage line of `program`.
pub fn usage(program: &str) -> String {
    format!(
        "usage: {program} [--listen ADDR] [--store memory|redis|postgres] [--redis-url URL] \
         [--database-url URL] [--lease-secs N]"
    )
}

impl Options {
    /// Parses `std::env::args()`; `Err` is a message for stderr.
    pub fn from_args(program: &str) -> Result<Options, String> {
        let mut o = Options {
            listen: "127.0.0.1:3000".into(),
            store: "memory".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            lease: None,
        };
        let mut lease_secs = String::new();
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let slot = match flag.as_str() {
                "--listen" => &mut o.listen,
                "--store" => &mut o.store,
                "--redis-url" => &mut o.redis_url,
                "--database-url" => &mut o.database_url,
                "--lease-secs" => &mut lease_secs,
                "-h" | "--help" => return Err(usage(program)),
                other => return Err(format!("unknown argument `{other}`; try --help")),
            };
            *slot = args
                .next()
                .ok_or_else(|| format!("`{flag}` needs a value"))?;
        }
        if !lease_secs.is_empty() {
            let secs: u64 = lease_secs.parse().ok().filter(|s| *s >= 1).ok_or_else(|| {
                format!("`--lease-secs {lease_secs}`: expected whole seconds, at least 1")
            })?;
            o.lease = Some(Duration::from_secs(secs));
        }
        Ok(o)
    }

    /// The runtime and the payments for `--store`: both in this process,
    /// both in the Redis at `--redis-url`, or both in the PostgreSQL
    /// database at `--database-url` (whose tables are created if missing).
    pub async fn backends(&self) -> Result<(Idempotency, Payments), String> {
        match self.store.as_str() {
            "memory" => Ok((self.runtime(MemoryStore::default()), Payments::default())),
            "postgres" => {
                let unusable = |e: &dyn std::fmt::Display| {
                    format!("cannot use PostgreSQL at {}: {e}", self.database_url)
                };
                // Not the default table, `idempotency_records`: with that
                // name `migrate()` currently writes its index name quoted
                // twice and fails. Back to the default once it is fixed.
                let store = PostgresStore::builder(self.database_url.as_str())
                    .table(IDEMPOTENCY_TABLE)
                    .build()
                    .await
                    .map_err(|e| unusable(&e))?;
                store.migrate().await.map_err(|e| unusable(&e))?;
                let pool = PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&self.database_url)
                    .await
                    .map_err(|e| unusable(&e))?;
                create_payments_table(&pool)
                    .await
                    .map_err(|e| unusable(&e))?;
                Ok((self.runtime(store), Payments::Postgres(pool)))
            }
            "redis" => {
                let store = RedisStore::builder(self.redis_url.as_str())
                    .prefix("idempotent-examples")
                    .build()
                    .await
                    .map_err(|e| format!("cannot use Redis at {}: {e}", self.redis_url))?;
                let client =
                    redis::Client::open(self.redis_url.as_str()).map_err(|e| e.to_string())?;
                let conn = redis::aio::ConnectionManager::new(client)
                    .await
                    .map_err(|e| format!("cannot use Redis at {}: {e}", self.redis_url))?;
                Ok((self.runtime(store), Payments::Redis(conn)))
            }
            other => Err(format!(
                "unknown store `{other}`: expected `memory`, `redis` or `postgres`"
            )),
        }
    }

    /// The runtime over `store`, its claims living `--lease-secs` if given.
    fn runtime(&self, store: impl Store) -> Idempotency {
        match self.lease {
            Some(lease) => Idempotency::new(LeaseOverride::new(store, lease)),
            None => Idempotency::new(store),
        }
    }
}

/// Creates the payments table if missing: [`PAYMENTS_TABLE`], under an
/// advisory lock, because two processes starting at once would otherwise
/// race on `CREATE TABLE IF NOT EXISTS` (which is not safe concurrently).
async fn create_payments_table(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut txn = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('idempotent-examples:payments'))")
        .execute(&mut *txn)
        .await?;
    sqlx::query(PAYMENTS_TABLE).execute(&mut *txn).await?;
    txn.commit().await
}

/// `--lease-secs N`: a store whose claims live `N` s instead of the lease
/// the handler asks for (`#[idempotent]`'s `lease`, 30 s by default, fixed
/// at compile time), so that a demonstration or a test of a killed process
/// need not wait 30 s for its key to free up.
///
/// Only the length of a claim changes: the runtime still renews a running
/// handler's claim every third of the handler's own lease (every 10 s),
/// each time for `N` s. With `N` well above 10 (15, say) a handler keeps
/// its claim however long it runs. With less, a handler that runs longer
/// than `N` s can lose its claim to a retry of the same key, and both run:
/// with the memory and Redis stores both make a payment and only one
/// response is stored; with `--store postgres` only one of the two
/// transactions commits, and the other attempt answers 409 `lease-lost`,
/// its payment rolled back. The fencing test (`tests/shared_postgres.rs`)
/// uses exactly that; nothing else should.
pub struct LeaseOverride<S> {
    store: S,
    lease: Duration,
}

impl<S: Store> LeaseOverride<S> {
    /// `store`, its claims living `lease` (at least a second).
    pub fn new(store: S, lease: Duration) -> Self {
        LeaseOverride {
            store,
            lease: lease.max(Duration::from_secs(1)),
        }
    }
}

impl<S: Store> Store for LeaseOverride<S> {
    fn claim(
        &self,
        id: &RecordId,
        fingerprint: Fingerprint,
        owner: OwnerToken,
        _lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        self.store.claim(id, fingerprint, owner, self.lease)
    }

    fn renew(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        _lease: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.store.renew(id, owner, self.lease)
    }

    fn complete(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.store.complete(id, owner, fingerprint, response, ttl)
    }

    fn release(
        &self,
        id: &RecordId,
        owner: OwnerToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.store.release(id, owner)
    }

    fn get(
        &self,
        id: &RecordId,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        self.store.get(id)
    }

    fn delete(&self, id: &RecordId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.store.delete(id)
    }

    fn watch(
        &self,
        id: &RecordId,
        for_: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.store.watch(id, for_)
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.store.ping()
    }

    fn subscribe(&self, on_change: ChangeListener) {
        self.store.subscribe(on_change);
    }

    fn as_postgres(&self) -> Option<&PostgresStore> {
        self.store.as_postgres()
    }
}
