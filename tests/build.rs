//! Generates the gRPC conformance app's code from `proto/things.proto`,
//! with protox (a protobuf compiler in Rust: no `protoc` needed), and keeps
//! its file descriptor set for the fingerprints.

use prost::Message;

fn main() {
    println!("cargo:rerun-if-changed=proto/things.proto");
    let fds = protox::compile(["proto/things.proto"], ["proto"]).expect("compile things.proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("things.bin"), fds.encode_to_vec()).expect("write things.bin");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("generate the gRPC code");
}
