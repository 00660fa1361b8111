//! The gRPC suite (tonic, through a real client over a socket), for every
//! store.

mod memory {
    idempotent_tests::grpc_suite!(idempotent_tests::stores::Memory);
}

mod redis {
    idempotent_tests::grpc_suite!(idempotent_tests::stores::Redis);
}

mod postgres {
    idempotent_tests::grpc_suite!(idempotent_tests::stores::Postgres);
}
