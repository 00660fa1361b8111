//! The conformance suite on axum with the PostgreSQL store.
idempotent_tests::conformance_suite!(
    idempotent_tests::axum_app::Axum,
    idempotent_tests::stores::Postgres
);
