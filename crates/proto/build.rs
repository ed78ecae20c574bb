//! Generates the gRPC code and the reflection descriptor set from `proto/`,
//! with the vendored protoc (none is installed on the build machines).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = [
        root.join("padlock/auth/v1/auth.proto"),
        root.join("padlock/deploy/v1/deploy.proto"),
        root.join("google/rpc/error_details.proto"),
    ];
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("padlock_descriptor.bin"))
        .compile_with_config(config, &protos, std::slice::from_ref(&root))?;
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    Ok(())
}
