//! Generates `grpc-payments`' code from `proto/payments.proto` with protox,
//! a protobuf compiler in Rust (no `protoc` to install), and keeps the file
//! descriptor set: reflection serves it, and the runtime fingerprints
//! requests with it.

use prost::Message;

fn main() {
    println!("cargo:rerun-if-changed=proto/payments.proto");
    let fds = protox::compile(["proto/payments.proto"], ["proto"]).expect("compile payments.proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("payments.bin"), fds.encode_to_vec()).expect("write payments.bin");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("generate the gRPC code");
}
