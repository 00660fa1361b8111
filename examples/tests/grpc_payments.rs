//! `grpc-payments` as a process, through real tonic clients: the contract
//! (replay, refusals as gRPC codes, what is stored), health and reflection,
//! 200 duplicates × 20 rounds over two processes on one database, a process
//! killed mid-transaction, and SIGTERM.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::redis_server::RedisServer;
use tokio::sync::Barrier;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

mod common;

use common::Database;

mod pb {
    #![allow(missing_docs, unreachable_pub, dead_code, clippy::all)]
    tonic::include_proto!("payments.v1");
}

use pb::payments_client::PaymentsClient;
use pb::{CreatePaymentRequest, ListPaymentsRequest};

const GRPC: &str = env!("CARGO_BIN_EXE_grpc-payments");

/// A `grpc-payments` process, killed when dropped.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Running {
    let mut child = Command::new(GRPC)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start grpc-payments");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"))
        .parse()
        .expect("an address");
    Running { child, addr }
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a URI")
        .connect()
        .await
        .expect("connect")
}

fn create(key: Option<&str>, message: CreatePaymentRequest) -> Request<CreatePaymentRequest> {
    let mut r = Request::new(message);
    if let Some(key) = key {
        r.metadata_mut().insert(
            "idempotency-key",
            MetadataValue::try_from(key).expect("a metadata value"),
        );
    }
    r
}

fn pay(amount: i64) -> CreatePaymentRequest {
    CreatePaymentRequest {
        amount,
        currency: "EUR".into(),
        ..Default::default()
    }
}

fn replayed(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

async fn count(client: &mut PaymentsClient<Channel>) -> usize {
    client
        .list_payments(ListPaymentsRequest {})
        .await
        .expect("ListPayments")
        .into_inner()
        .payments
        .len()
}

/// The contract of `CreatePayment`, on the memory store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_payment_answers_as_documented() {
    let server = start(&[]);
    let mut c = PaymentsClient::new(channel(server.addr).await);

    let labels: HashMap<String, String> = (0..16)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    let first = c
        .create_payment(create(
            Some("order-1"),
            CreatePaymentRequest {
                labels: labels.clone(),
                ..pay(1000)
            },
        ))
        .await
        .unwrap();
    let paid = first.get_ref().clone();
    assert_eq!((paid.id.as_str(), paid.amount), ("pay_1", 1000));
    assert_eq!(paid.labels, labels, "labels echoed");
    assert!(!replayed(first.metadata()));
    // The retry, its map built again: the same message, replayed.
    let again_labels: HashMap<String, String> = labels.into_iter().collect();
    let again = c
        .create_payment(create(
            Some("order-1"),
            CreatePaymentRequest {
                labels: again_labels,
                ..pay(1000)
            },
        ))
        .await
        .unwrap();
    assert!(replayed(again.metadata()));
    assert_eq!(again.into_inner(), paid);

    let missing = c.create_payment(create(None, pay(5))).await.unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    let reused = c
        .create_payment(create(Some("order-1"), pay(2000)))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::FailedPrecondition);

    let slow = CreatePaymentRequest {
        delay_ms: 800,
        ..pay(500)
    };
    let running = {
        let mut c = c.clone();
        let r = create(Some("order-2"), slow.clone());
        tokio::spawn(async move { c.create_payment(r).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy = c
        .create_payment(create(Some("order-2"), slow))
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::Aborted);
    assert!(running.await.unwrap().is_ok());

    // `fail`: INTERNAL, stored and replayed; `unavailable`: not stored.
    let fails = CreatePaymentRequest {
        fail: true,
        ..pay(7)
    };
    let first = c
        .create_payment(create(Some("order-3"), fails.clone()))
        .await
        .unwrap_err();
    assert_eq!(first.code(), Code::Internal);
    let again = c
        .create_payment(create(Some("order-3"), fails))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::Internal);
    assert!(replayed(again.metadata()));
    let unavailable = CreatePaymentRequest {
        unavailable: true,
        ..pay(8)
    };
    for _ in 0..2 {
        let answer = c
            .create_payment(create(Some("order-4"), unavailable.clone()))
            .await
            .unwrap_err();
        assert_eq!(answer.code(), Code::Unavailable);
        assert!(!replayed(answer.metadata()), "UNAVAILABLE is not stored");
    }
    assert_eq!(count(&mut c).await, 2, "pay_1 and order-2's");
}

/// Health: `SERVING` while the store answers, `NOT_SERVING` once it stops;
/// reflection lists the services, so grpcurl and grpcui can call them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_store_and_reflection_lists_the_services() {
    let Some(redis) = RedisServer::for_test() else {
        return;
    };
    let server = start(&["--store", "redis", "--redis-url", redis.url()]);
    let ch = channel(server.addr).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let status = |health: &mut tonic_health::pb::health_client::HealthClient<Channel>| {
        let mut health = health.clone();
        async move {
            health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "payments.v1.Payments".into(),
                })
                .await
                .map(|r| r.into_inner().status)
        }
    };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let until = Instant::now() + Duration::from_secs(10);
    while status(&mut health).await.ok() != Some(serving) {
        assert!(Instant::now() < until, "not SERVING within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.stop();
    let until = Instant::now() + Duration::from_secs(15);
    while status(&mut health).await.ok() != Some(not_serving) {
        assert!(
            Instant::now() < until,
            "still SERVING 15 s after Redis stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(ch);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream_once(request))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers.message().await.expect("an answer").expect("one");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"payments.v1.Payments".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

/// A stream of one request.
fn tokio_stream_once<T: Send + 'static>(item: T) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::iter([item])
}

/// 20 rounds of 200 concurrent duplicates of a new key, spread over two
/// processes on one database: one payment a round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_across_processes_pay_once() {
    let Some(pg) = PostgresServer::shared() else {
        return;
    };
    let db = Database::create(&pg).await;
    let args = ["--store", "postgres", "--database-url", db.url.as_str()];
    let (one, two) = (start(&args), start(&args));
    let clients = [
        PaymentsClient::new(channel(one.addr).await),
        PaymentsClient::new(channel(two.addr).await),
    ];
    for round in 0..20 {
        let key = format!("round-{round}");
        let barrier = Arc::new(Barrier::new(200));
        let calls = (0..200).map(|i| {
            let mut c = clients[i % 2].clone();
            let (barrier, key) = (barrier.clone(), key.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                c.create_payment(create(Some(&key), pay(100 + round))).await
            })
        });
        let mut ids = Vec::new();
        for answer in futures_util::future::join_all(calls).await {
            match answer.unwrap() {
                Ok(p) => ids.push(p.into_inner().id),
                Err(s) => assert_eq!(s.code(), Code::Aborted, "{s:?}"),
            }
        }
        assert!(
            !ids.is_empty() && ids.iter().all(|id| *id == ids[0]),
            "{ids:?}"
        );
    }
    let mut c = clients[0].clone();
    assert_eq!(count(&mut c).await, 20, "one payment a round");
    drop((one, two));
    db.drop_now().await;
}

/// A process killed while its payment sits in its open transaction: after
/// a restart nothing holds the key, and the first retry runs: one payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_transaction_pays_once() {
    let Some(pg) = PostgresServer::shared() else {
        return;
    };
    let db = Database::create(&pg).await;
    let args = ["--store", "postgres", "--database-url", db.url.as_str()];
    let doomed = start(&args);
    let held = CreatePaymentRequest {
        hold_ms: 3000,
        ..pay(4242)
    };
    let in_flight = {
        let mut c = PaymentsClient::new(channel(doomed.addr).await);
        let r = create(Some("killed"), held.clone());
        tokio::spawn(async move { c.create_payment(r).await })
    };
    let mut look = db.connect().await;
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let seq: Option<(i64, bool)> =
            sqlx::query_as("SELECT last_value, is_called FROM payments_id_seq")
                .fetch_optional(&mut look)
                .await
                .unwrap_or(None);
        if seq.is_some_and(|(_, called)| called) {
            break;
        }
        assert!(Instant::now() < until, "no payment inserted within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(doomed);
    assert!(
        in_flight.await.unwrap().is_err(),
        "the killed call got no answer"
    );
    let again = start(&args);
    let mut c = PaymentsClient::new(channel(again.addr).await);
    let restarted = Instant::now();
    let paid = c
        .create_payment(create(Some("killed"), held.clone()))
        .await
        .expect("the first retry runs");
    println!(
        "grpc-payments: the first retry after the restart answered in {} ms (its 3 s hold included)",
        restarted.elapsed().as_millis()
    );
    assert!(!replayed(paid.metadata()));
    let again_answer = c
        .create_payment(create(Some("killed"), held))
        .await
        .unwrap();
    assert!(replayed(again_answer.metadata()));
    assert_eq!(count(&mut c).await, 1);
    drop(again);
    drop(look);
    db.drop_now().await;
}

/// SIGTERM: the call in flight finishes and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_call_in_flight_finish() {
    let mut server = start(&[]);
    let mut c = PaymentsClient::new(channel(server.addr).await);
    let call = {
        let r = create(
            Some("drained"),
            CreatePaymentRequest {
                delay_ms: 1000,
                ..pay(9)
            },
        );
        tokio::spawn(async move { c.create_payment(r).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .is_ok_and(|s| s.success()));
    let answer = call.await.unwrap();
    assert!(answer.is_ok(), "{answer:?}");
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "exit status {status}");
}
