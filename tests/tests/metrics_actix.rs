//! The metrics of requests through actix-web (a binary of its own: one
//! global recorder per process).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_every_outcome() {
    idempotent_tests::observed::counts_every_outcome::<idempotent_tests::actix_app::Actix>().await;
}
