//! actix-specific behaviour (the rest is in the shared conformance suite).

use actix_web::{web, App, HttpServer};
use idempotent_runtime::actix::idempotent;
use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::Idempotency;
use idempotent_tests::{unique, Remote};

#[idempotent(scope = "unconfigured")]
async fn unconfigured() -> &'static str {
    "ran"
}

/// Once the app has built its own `Idempotency`, a handler whose App lacks it
/// in app data answers 500 instead of silently using a per-process default
/// (which would break exactly-once across processes sharing the real store).
#[tokio::test]
async fn handler_without_app_data_fails_closed() {
    let _configured = Idempotency::new(MemoryStore::default());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(|| App::new().route("/x", web::post().to(unconfigured)))
                .workers(1)
                .disable_signals()
                .bind(("127.0.0.1", 0))
                .unwrap();
            let _ = tx.send(server.addrs()[0]);
            let _ = server.run().await;
        });
    });
    let api = Remote::new(rx.await.unwrap());
    let r = api.post("/x").key(&unique("k")).send().await;
    r.assert_problem(500, "no-store");
    assert!(r.json()["detail"].as_str().unwrap().contains("app_data"));
}
