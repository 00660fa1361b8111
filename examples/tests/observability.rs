//! `GET /metrics`, `GET /openapi.json` and `GET /ready` of both example
//! servers, run as real processes.
//!
//! The OpenAPI document is validated against the official OpenAPI 3.1
//! schema (`openapi-3.1-schema.json` beside this file: the OpenAPI
//! Initiative's schema `https://spec.openapis.org/oas/3.1/schema/2022-10-07`,
//! Apache-2.0, as shipped in the `openapi-spec-validator` package), which
//! checks the document's structure; its Schema Objects are checked by the
//! assertions below.

use std::collections::BTreeMap;
use std::time::Duration;

use idempotent_tests::{Remote, Resp};
use serde_json::{json, Value};

mod common;

use common::{start, ACTIX, AXUM};

const SERVERS: [&str; 2] = [AXUM, ACTIX];

/// The official OpenAPI 3.1 schema (JSON Schema 2020-12).
const OPENAPI_31_SCHEMA: &str = include_str!("openapi-3.1-schema.json");

fn payment(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

async fn get(api: &Remote, path: &str) -> Resp {
    api.get(path).send().await
}

/// The example's document, checked against the OpenAPI 3.1 schema and for
/// what the runtime's `openapi` feature adds to `POST /payments`.
fn check_document(doc: &Value) {
    let schema: Value = serde_json::from_str(OPENAPI_31_SCHEMA).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not a valid OpenAPI 3.1 document: {errors:#?}"
    );
    // The validator does reject what is not OpenAPI 3.1.
    let mut broken = doc.clone();
    broken["paths"]["/payments"]["post"]["parameters"][0]["in"] = json!("body");
    assert!(!validator.is_valid(&broken));

    assert_eq!(doc["openapi"], "3.1.0");
    let post = &doc["paths"]["/payments"]["post"];
    let key = post["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .expect("the key header parameter");
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], true);
    assert_eq!(key["schema"]["type"], "string");

    let created = &post["responses"]["201"];
    assert_eq!(
        created["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Payment"
    );
    assert_eq!(
        created["headers"]["Idempotent-Replayed"]["schema"]["enum"],
        json!(["true"])
    );

    let problem_ref = "#/components/schemas/IdempotencyProblem";
    for (status, kinds) in [
        (
            "400",
            &["missing-key", "invalid-key", "request-unreadable"][..],
        ),
        ("409", &["request-in-progress", "lease-lost"][..]),
        ("410", &["response-not-stored"][..]),
        ("413", &["request-too-large"][..]),
        ("422", &["key-reused"][..]),
        (
            "503",
            &["store-unavailable", "store-full", "shutting-down"][..],
        ),
    ] {
        let content = &post["responses"][status]["content"]["application/problem+json"];
        assert_eq!(content["schema"]["$ref"], problem_ref, "{status}");
        for kind in kinds {
            let example = &content["examples"][*kind]["value"];
            assert_eq!(
                example["status"].as_u64(),
                status.parse().ok(),
                "{status} {kind}"
            );
            assert!(
                example["type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(&format!("#{kind}"))),
                "{status} {kind}: {example}"
            );
        }
    }
    for status in ["409", "503"] {
        assert_eq!(
            post["responses"][status]["headers"]["Retry-After"]["schema"]["type"],
            "integer"
        );
    }
    let problem = &doc["components"]["schemas"]["IdempotencyProblem"];
    for field in ["type", "title", "status", "detail", "instance"] {
        assert!(problem["properties"][field].is_object(), "{field}");
    }
    assert_eq!(
        problem["required"],
        json!(["type", "title", "status", "detail"])
    );
    // `GET /payments` is not idempotent: nothing added.
    assert!(doc["paths"]["/payments"]["get"]["parameters"].is_null());
}

#[tokio::test]
async fn openapi_documents_the_idempotency_contract() {
    let mut documents = Vec::new();
    for bin in SERVERS {
        let server = start(bin, &[]);
        let api = Remote::new(server.addr);
        let r = get(&api, "/openapi.json").await;
        assert_eq!(r.status, 200, "{bin}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let doc = r.json();
        check_document(&doc);
        documents.push(doc);
    }
    assert_eq!(documents[0], documents[1], "both servers document one API");
}

/// `name{labels} value` lines of a Prometheus text exposition.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the series named `name` with these `labels` (any order).
fn sample(all: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    all.iter()
        .find(|(series, _)| {
            series.split_once('{').is_some_and(|(n, rest)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
        })
        .map(|(_, v)| *v)
}

/// One executed, one replayed (with the executed duplicate of a conflict,
/// two executed), one conflict, one mismatch, one missing key and one
/// invalid key: `/metrics` of the fresh process counts exactly that.
async fn metrics_count_every_outcome(bin: &str) {
    let server = start(bin, &[]);
    let api = Remote::new(server.addr);
    let scrape = || async { samples(&String::from_utf8_lossy(&get(&api, "/metrics").await.body)) };

    assert_eq!(
        api.post("/payments")
            .key("m-1")
            .json(payment(100))
            .send()
            .await
            .status,
        201
    );
    assert!(api
        .post("/payments")
        .key("m-1")
        .json(payment(100))
        .send()
        .await
        .replayed());
    api.post("/payments")
        .key("m-1")
        .json(payment(999))
        .send()
        .await
        .assert_problem(422, "key-reused");
    let slow = api
        .post("/payments")
        .key("m-2")
        .json(json!({"amount": 5, "currency": "EUR", "delay_ms": 1500}))
        .spawn();
    let mut running = false;
    for _ in 0..100 {
        let now = scrape().await;
        if sample(
            &now,
            "idempotent_handlers_in_flight",
            &[("scope", "payments")],
        ) == Some(1.0)
        {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running, "{bin}: the in-flight gauge shows the slow handler");
    api.post("/payments")
        .key("m-2")
        .json(json!({"amount": 5, "currency": "EUR", "delay_ms": 1500}))
        .send()
        .await
        .assert_problem(409, "request-in-progress");
    assert_eq!(slow.await.expect("slow request").status, 201);
    api.post("/payments")
        .json(payment(1))
        .send()
        .await
        .assert_problem(400, "missing-key");
    api.post("/payments")
        .key("not visible ascii")
        .json(payment(1))
        .send()
        .await
        .assert_problem(400, "invalid-key");

    let r = get(&api, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let all = samples(&text);
    let requests = |outcome: &str| {
        sample(
            &all,
            "idempotent_requests_total",
            &[("scope", "payments"), ("outcome", outcome)],
        )
    };
    for (outcome, n) in [
        ("executed", 2.0),
        ("replayed", 1.0),
        ("conflict", 1.0),
        ("mismatch", 1.0),
        ("missing_key", 1.0),
        ("invalid_key", 1.0),
    ] {
        assert_eq!(requests(outcome), Some(n), "{bin} {outcome}:\n{text}");
    }
    let counted: usize = all
        .keys()
        .filter(|s| s.starts_with("idempotent_requests_total{"))
        .count();
    assert_eq!(counted, 6, "{bin}: no other outcome:\n{text}");
    let count = |name: &str, labels: &[(&str, &str)]| sample(&all, name, labels);
    assert_eq!(
        count(
            "idempotent_handler_duration_seconds_count",
            &[("scope", "payments")]
        ),
        Some(2.0),
        "{bin}:\n{text}"
    );
    assert_eq!(
        count(
            "idempotent_store_duration_seconds_count",
            &[("operation", "claim")]
        ),
        Some(5.0),
        "{bin}:\n{text}"
    );
    assert_eq!(
        count(
            "idempotent_store_duration_seconds_count",
            &[("operation", "complete")]
        ),
        Some(2.0),
        "{bin}:\n{text}"
    );
    assert_eq!(
        count("idempotent_handlers_in_flight", &[("scope", "payments")]),
        Some(0.0),
        "{bin}:\n{text}"
    );
    assert!(text.contains("# HELP idempotent_requests_total "), "{text}");
}

#[tokio::test]
async fn metrics_axum() {
    metrics_count_every_outcome(AXUM).await;
}

#[tokio::test]
async fn metrics_actix() {
    metrics_count_every_outcome(ACTIX).await;
}

/// `GET /ready` answers 200 while the store answers; with Redis, 503 once
/// Redis is gone, and 200 again once it is back.
#[tokio::test]
async fn ready_follows_the_store() {
    for bin in SERVERS {
        let server = start(bin, &[]);
        let api = Remote::new(server.addr);
        let r = get(&api, "/ready").await;
        assert_eq!((r.status, &r.body[..]), (200, &b"ready\n"[..]), "{bin}");
    }
    let Some(redis) = idempotent_tests::redis_server::RedisServer::for_test() else {
        return;
    };
    for bin in SERVERS {
        let server = start(bin, &["--store", "redis", "--redis-url", redis.url()]);
        let api = Remote::new(server.addr);
        assert_eq!(get(&api, "/ready").await.status, 200, "{bin}");
        redis.stop();
        let r = get(&api, "/ready").await;
        assert_eq!(r.status, 503, "{bin}");
        assert!(String::from_utf8_lossy(&r.body).starts_with("not ready: "));
        redis.restart();
        let mut back = false;
        for _ in 0..100 {
            if get(&api, "/ready").await.status == 200 {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(back, "{bin}: ready again once Redis is back");
    }
}
