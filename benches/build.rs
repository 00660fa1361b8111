//! Generates the bench server's gRPC code from `proto/bench.proto` with
//! protox (no `protoc` needed), and keeps its file descriptor set for the
//! fingerprints.

use prost::Message;

fn main() {
    println!("cargo:rerun-if-changed=proto/bench.proto");
    let fds = protox::compile(["proto/bench.proto"], ["proto"]).expect("compile bench.proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("bench.bin"), fds.encode_to_vec()).expect("write bench.bin");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("generate the gRPC code");
}
