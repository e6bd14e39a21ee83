//! Compiles `proto/` with protox (a protobuf compiler written in Rust, so no system `protoc`),
//! generates the tonic stubs, and writes the encoded descriptor set that server reflection
//! serves.
use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/modelwatch/v1/modelwatch.proto",
        "proto/google/rpc/status.proto",
        "proto/google/rpc/error_details.proto",
        "proto/opentelemetry/common.proto",
        "proto/opentelemetry/metrics_service.proto",
        "proto/opentelemetry/logs_service.proto",
        "proto/opentelemetry/trace_service.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("modelwatch_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
