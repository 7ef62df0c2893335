//! Compiles the wire protocol in `proto/` with a pure-Rust protobuf parser (no `protoc`).

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "plugin/grpc_broker.proto",
    "plugin/grpc_controller.proto",
    "plugin/grpc_stdio.proto",
    "pluginutil/multiplexing.proto",
    "logical/identity.proto",
    "logical/plugin.proto",
    "logical/version.proto",
    "pb/backend.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    for p in PROTOS {
        println!("cargo:rerun-if-changed=proto/{p}");
    }
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let descriptors = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
