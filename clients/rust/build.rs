//! Client stubs from the daemon's proto (protox: no system protoc).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/modelwatch/v1/modelwatch.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../../proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(fds)?;
    Ok(())
}
