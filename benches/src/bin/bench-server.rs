//! `bench-server`: one trivial handler (parse a small JSON body, answer 201
//! with a small JSON body) served five ways in one process, on axum or on
//! actix-web:
//!
//! | route | what runs around the handler |
//! |---|---|
//! | `/bare` | nothing |
//! | `/idempotent` | `#[idempotent]`, memory store (default `ttl` of 24 h: under fresh keys the store only grows) |
//! | `/idempotent-10s` | `#[idempotent(ttl = "10s", lease = "5s")]`, memory store (under fresh keys, records expire and are swept as fast as they come) |
//! | `/idempotent-redis` | `#[idempotent]`, Redis store |
//! | `/idempotent-redis-cached` | `#[idempotent]`, Redis store with the in-process replay cache |
//! | `/floor-redis` | hand-written: one `SET NX GET PX` before, one `SET PX` after |
//!
//! With `--database-url`, three more (see `idempotent_benches::pg`):
//!
//! | route | what runs |
//! |---|---|
//! | `/bare-pg` | begin, insert one row, commit; no attribute |
//! | `/idempotent-pg` | `#[idempotent]` on the Postgres store, the same insert through `Tx` |
//! | `/query-pg` | one primary-key `SELECT`; no attribute |
//!
//! With `--framework tonic`, the same handler as unary gRPC methods over the
//! memory and Redis stores (see `idempotent_benches::grpc`).
//!
//! ```text
//! bench-server --framework axum|actix|tonic [--listen 127.0.0.1:0] [--redis-url redis://127.0.0.1:6379]
//!     [--database-url postgres://…]
//! ```
//!
//! Prints `listening on ADDR` once it accepts connections.

#![allow(clippy::print_stderr)]

use std::time::Duration;

use idempotent_benches::pg::Postgres;
use idempotent_benches::{create, floor_claim, floor_complete, Order, FLOOR_IN_PROGRESS};
use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::store::redis::RedisStore;
use idempotent_runtime::Idempotency;

struct Options {
    framework: String,
    listen: String,
    redis_url: String,
    database_url: String,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        framework: String::new(),
        listen: "127.0.0.1:0".into(),
        redis_url: "redis://127.0.0.1:6379".into(),
        database_url: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--framework" => &mut o.framework,
            "--listen" => &mut o.listen,
            "--redis-url" => &mut o.redis_url,
            "--database-url" => &mut o.database_url,
            other => return Err(format!("unknown argument `{other}`")),
        };
        *slot = args
            .next()
            .ok_or_else(|| format!("`{flag}` needs a value"))?;
    }
    if !["axum", "actix", "tonic"].contains(&o.framework.as_str()) {
        return Err(
            "usage: bench-server --framework axum|actix|tonic [--listen ADDR] [--redis-url URL] \
             [--database-url URL]"
                .into(),
        );
    }
    Ok(o)
}

/// The three runtimes and the floor's connection, built on the runtime that
/// serves (as an app would).
struct Backends {
    memory: Idempotency,
    redis: Idempotency,
    redis_cached: Idempotency,
    floor: redis::aio::ConnectionManager,
    /// With `--database-url`.
    postgres: Option<Postgres>,
}

async fn backends(redis_url: &str, database_url: &str) -> Result<Backends, String> {
    // Big enough that no fresh-key run reaches the bound (a full store
    // answers 503, which the runner would report as errors).
    let memory = MemoryStore::builder()
        .max_entries(50_000_000)
        .max_bytes(32 << 30)
        .build();
    let client = redis::Client::open(redis_url).map_err(|e| e.to_string())?;
    let floor = redis::aio::ConnectionManager::new(client)
        .await
        .map_err(|e| format!("cannot use Redis at {redis_url}: {e}"))?;
    Ok(Backends {
        memory: Idempotency::new(memory),
        redis: Idempotency::new(redis_store(RedisStore::builder(redis_url).prefix("bench")).await?),
        redis_cached: Idempotency::new(
            redis_store(
                RedisStore::builder(redis_url)
                    .prefix("bench-cached")
                    .replay_cache(100_000, Duration::from_secs(60)),
            )
            .await?,
        ),
        floor,
        postgres: match database_url {
            "" => None,
            url => Some(idempotent_benches::pg::connect(url).await?),
        },
    })
}

async fn redis_store(
    builder: idempotent_runtime::store::redis::RedisStoreBuilder,
) -> Result<RedisStore, String> {
    builder
        .build()
        .await
        .map_err(|e| format!("cannot use Redis: {e}"))
}

/// What `/floor-redis` answers, framework aside: status and JSON body.
async fn floor(
    mut conn: redis::aio::ConnectionManager,
    key: Option<String>,
    order: Order,
) -> (u16, Vec<u8>) {
    let Some(key) = key else {
        return (400, b"{\"error\":\"missing Idempotency-Key\"}".to_vec());
    };
    match floor_claim(&mut conn, &key).await {
        Err(_) => (503, b"{\"error\":\"redis\"}".to_vec()),
        Ok(Some(stored)) if stored == FLOOR_IN_PROGRESS => {
            (409, b"{\"error\":\"in progress\"}".to_vec())
        }
        Ok(Some(stored)) => (201, stored),
        Ok(None) => {
            let body = serde_json::to_vec(&create(order)).unwrap_or_default();
            match floor_complete(&mut conn, &key, &body).await {
                Ok(()) => (201, body),
                Err(_) => (503, b"{\"error\":\"redis\"}".to_vec()),
            }
        }
    }
}

mod on_axum {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use axum::{Json, Router};
    use idempotent_benches::pg;
    use idempotent_runtime::axum::{idempotent, IdempotencyLayer};
    use idempotent_runtime::tx::Tx;
    use sqlx::PgPool;

    use super::{create, Backends, Order};

    async fn bare(Json(order): Json<Order>) -> Response {
        (StatusCode::CREATED, Json(create(order))).into_response()
    }

    #[idempotent(scope = "bench")]
    async fn idempotent_handler(Json(order): Json<Order>) -> Response {
        (StatusCode::CREATED, Json(create(order))).into_response()
    }

    #[idempotent(scope = "bench-10s", ttl = "10s", lease = "5s")]
    async fn idempotent_10s(Json(order): Json<Order>) -> Response {
        (StatusCode::CREATED, Json(create(order))).into_response()
    }

    async fn floor(
        State(conn): State<redis::aio::ConnectionManager>,
        headers: HeaderMap,
        Json(order): Json<Order>,
    ) -> Response {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (status, body) = super::floor(conn, key, order).await;
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [("content-type", "application/json")],
            body,
        )
            .into_response()
    }

    /// 201 with the created order, or 500.
    fn created(result: Result<idempotent_benches::Created, sqlx::Error>) -> Response {
        match result {
            Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }

    async fn bare_pg(State(pool): State<PgPool>, Json(order): Json<Order>) -> Response {
        created(pg::insert_in_transaction(&pool, order).await)
    }

    async fn query_pg(State(pool): State<PgPool>) -> Response {
        created(pg::query_one(&pool).await)
    }

    #[idempotent(scope = "bench-pg")]
    async fn idempotent_pg(mut tx: Tx, Json(order): Json<Order>) -> Response {
        match tx.connection().await {
            Ok(conn) => created(pg::insert(conn, order).await),
            Err(e) => created(Err(e)),
        }
    }

    pub(super) async fn serve(listen: &str, b: Backends) -> Result<(), String> {
        let mut app = Router::new()
            .route("/bare", post(bare))
            .route(
                "/idempotent",
                post(idempotent_handler).layer(IdempotencyLayer::new(b.memory.clone())),
            )
            .route(
                "/idempotent-10s",
                post(idempotent_10s).layer(IdempotencyLayer::new(b.memory)),
            )
            .route(
                "/idempotent-redis",
                post(idempotent_handler).layer(IdempotencyLayer::new(b.redis)),
            )
            .route(
                "/idempotent-redis-cached",
                post(idempotent_handler).layer(IdempotencyLayer::new(b.redis_cached)),
            )
            .route("/floor-redis", post(floor))
            .with_state(b.floor);
        if let Some(postgres) = b.postgres {
            app = app.merge(
                Router::new()
                    .route("/bare-pg", post(bare_pg))
                    .route("/query-pg", post(query_pg))
                    .route(
                        "/idempotent-pg",
                        post(idempotent_pg).layer(IdempotencyLayer::new(postgres.idempotency)),
                    )
                    .with_state(postgres.pool),
            );
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on {addr}");
        axum::serve(listener, app)
            .with_graceful_shutdown(super::shutdown())
            .await
            .map_err(|e| e.to_string())
    }
}

mod on_actix {
    use actix_web::http::StatusCode;
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    use idempotent_benches::pg;
    use idempotent_runtime::actix::idempotent;
    use idempotent_runtime::tx::Tx;
    use sqlx::PgPool;

    use super::{create, Backends, Order};

    async fn bare(order: web::Json<Order>) -> HttpResponse {
        HttpResponse::Created().json(create(order.into_inner()))
    }

    #[idempotent(scope = "bench")]
    async fn idempotent_handler(order: web::Json<Order>) -> HttpResponse {
        HttpResponse::Created().json(create(order.into_inner()))
    }

    #[idempotent(scope = "bench-10s", ttl = "10s", lease = "5s")]
    async fn idempotent_10s(order: web::Json<Order>) -> HttpResponse {
        HttpResponse::Created().json(create(order.into_inner()))
    }

    async fn floor(
        req: HttpRequest,
        conn: web::Data<redis::aio::ConnectionManager>,
        order: web::Json<Order>,
    ) -> HttpResponse {
        let key = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (status, body) = super::floor(conn.get_ref().clone(), key, order.into_inner()).await;
        HttpResponse::build(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )
        .content_type("application/json")
        .body(body)
    }

    /// 201 with the created order, or 500.
    fn created(result: Result<idempotent_benches::Created, sqlx::Error>) -> HttpResponse {
        match result {
            Ok(created) => HttpResponse::Created().json(created),
            Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
        }
    }

    async fn bare_pg(pool: web::Data<PgPool>, order: web::Json<Order>) -> HttpResponse {
        created(pg::insert_in_transaction(&pool, order.into_inner()).await)
    }

    async fn query_pg(pool: web::Data<PgPool>) -> HttpResponse {
        created(pg::query_one(&pool).await)
    }

    #[idempotent(scope = "bench-pg")]
    async fn idempotent_pg(mut tx: Tx, order: web::Json<Order>) -> HttpResponse {
        match tx.connection().await {
            Ok(conn) => created(pg::insert(conn, order.into_inner()).await),
            Err(e) => created(Err(e)),
        }
    }

    pub(super) async fn serve(listen: &str, b: Backends) -> Result<(), String> {
        let floor_conn = web::Data::new(b.floor);
        let (memory, redis, redis_cached) = (b.memory, b.redis, b.redis_cached);
        let postgres = b.postgres.map(|p| (web::Data::new(p.pool), p.idempotency));
        let server = HttpServer::new(move || {
            let app = App::new()
                .app_data(floor_conn.clone())
                .route("/bare", web::post().to(bare))
                .service(
                    web::resource("/idempotent")
                        .app_data(memory.clone())
                        .route(web::post().to(idempotent_handler)),
                )
                .service(
                    web::resource("/idempotent-10s")
                        .app_data(memory.clone())
                        .route(web::post().to(idempotent_10s)),
                )
                .service(
                    web::resource("/idempotent-redis")
                        .app_data(redis.clone())
                        .route(web::post().to(idempotent_handler)),
                )
                .service(
                    web::resource("/idempotent-redis-cached")
                        .app_data(redis_cached.clone())
                        .route(web::post().to(idempotent_handler)),
                )
                .route("/floor-redis", web::post().to(floor));
            match &postgres {
                None => app,
                Some((pool, idempotency)) => app
                    .app_data(pool.clone())
                    .route("/bare-pg", web::post().to(bare_pg))
                    .route("/query-pg", web::post().to(query_pg))
                    .service(
                        web::resource("/idempotent-pg")
                            .app_data(idempotency.clone())
                            .route(web::post().to(idempotent_pg)),
                    ),
            }
        })
        .shutdown_signal(super::shutdown())
        .bind(listen)
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = server
            .addrs()
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        println!("listening on {addr}");
        server.run().await.map_err(|e| e.to_string())
    }
}

async fn serve_tonic(listen: &str, b: Backends) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    idempotent_benches::grpc::serve(listener, b.memory, b.redis, b.floor, shutdown()).await
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

fn main() {
    let opts = options().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let result = if opts.framework != "actix" {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(async {
                    let b = backends(&opts.redis_url, &opts.database_url).await?;
                    if opts.framework == "axum" {
                        on_axum::serve(&opts.listen, b).await
                    } else {
                        serve_tonic(&opts.listen, b).await
                    }
                })
            })
    } else {
        actix_web::rt::System::new().block_on(async {
            let b = backends(&opts.redis_url, &opts.database_url).await?;
            on_actix::serve(&opts.listen, b).await
        })
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
