//! Generates the gRPC code and one reflection descriptor set per service
//! family from `proto/`, with the vendored protoc (none is installed on the
//! build machines). Each set carries the google.rpc error details, so
//! reflection clients can decode refusals.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let details = root.join("google/rpc/error_details.proto");
    let families = [
        (
            "auth_descriptor.bin",
            root.join("padlock/auth/v1/auth.proto"),
        ),
        (
            "deploy_descriptor.bin",
            root.join("padlock/deploy/v1/deploy.proto"),
        ),
    ];
    for (descriptor, proto) in &families {
        compile(
            &root,
            &out.join(descriptor),
            &[proto.clone(), details.clone()],
        )?;
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    println!("cargo:rerun-if-changed={}", details.display());
    Ok(())
}

fn compile(
    root: &Path,
    descriptor: &Path,
    protos: &[PathBuf],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptor)
        .compile_with_config(config, protos, std::slice::from_ref(&root.to_path_buf()))?;
    Ok(())
}
