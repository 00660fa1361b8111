//! The conformance suite on actix-web with the PostgreSQL store.
idempotent_tests::conformance_suite!(
    idempotent_tests::actix_app::Actix,
    idempotent_tests::stores::Postgres
);
