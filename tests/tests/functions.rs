//! The function form's suite, for every store.

mod memory {
    idempotent_tests::function_suite!(idempotent_tests::stores::Memory);
}

mod redis {
    idempotent_tests::function_suite!(idempotent_tests::stores::Redis);
}

mod postgres {
    idempotent_tests::function_suite!(idempotent_tests::stores::Postgres);
}
