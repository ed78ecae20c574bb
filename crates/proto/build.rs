//! Generates the gRPC code and one reflection descriptor set per service
//! family from `proto/`, with the vendored protoc (none is installed on the
//! build machines). Servers and clients are generated apart, since they
//! decode with different codecs. Each set carries the google.rpc error details and padlock's
//! error reasons, so reflection clients can decode refusals.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let details = root.join("google/rpc/error_details.proto");
    let reasons = root.join("padlock/errors/v1/errors.proto");
    let families = [
        (
            "auth_descriptor.bin",
            root.join("padlock/auth/v1/auth.proto"),
            ".padlock.auth.v1",
            "crate::auth::v1",
        ),
        (
            "deploy_descriptor.bin",
            root.join("padlock/deploy/v1/deploy.proto"),
            ".padlock.deploy.v1",
            "crate::deploy::v1",
        ),
    ];
    std::fs::create_dir_all(out.join("clients"))?;
    for (descriptor, proto, package, module) in &families {
        let protos = [proto.clone(), details.clone(), reasons.clone()];
        // Messages and servers, whose codec answers an undecodable request
        // INVALID_ARGUMENT (src/codec.rs)...
        compile(
            &root,
            &protos,
            tonic_prost_build::configure()
                .build_client(false)
                .codec_path("crate::codec::RequestCodec")
                .file_descriptor_set_path(out.join(descriptor)),
        )?;
        // ...and clients, with prost's codec (an undecodable response is
        // the server's fault: INTERNAL), over the same message types.
        compile(
            &root,
            &protos,
            tonic_prost_build::configure()
                .build_server(false)
                .extern_path(*package, *module)
                .out_dir(out.join("clients")),
        )?;
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    println!("cargo:rerun-if-changed={}", details.display());
    println!("cargo:rerun-if-changed={}", reasons.display());
    Ok(())
}

fn compile(
    root: &Path,
    protos: &[PathBuf],
    builder: tonic_prost_build::Builder,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    builder.compile_with_config(config, protos, std::slice::from_ref(&root.to_path_buf()))?;
    Ok(())
}
