//! The conformance suite on actix-web with the Redis store.
idempotent_tests::conformance_suite!(
    idempotent_tests::actix_app::Actix,
    idempotent_tests::stores::Redis
);
