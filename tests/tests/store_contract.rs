//! The store contract, for every store.

mod memory {
    idempotent_tests::store_contract!(idempotent_tests::stores::Memory);
}

mod redis {
    idempotent_tests::store_contract!(idempotent_tests::stores::Redis);
}

mod redis_cluster {
    idempotent_tests::store_contract!(idempotent_tests::stores::RedisCluster);
}

mod postgres {
    idempotent_tests::store_contract!(idempotent_tests::stores::Postgres);
}
