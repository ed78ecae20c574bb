//! padlock's gRPC contracts, generated from `proto/` by `build.rs`, plus the
//! encoded descriptor sets that server reflection serves. Nothing here is
//! edited by hand; services depend on this crate, never on each other.

#![allow(missing_debug_implementations, clippy::all)]

pub mod codec;

/// `padlock.auth.v1`: sessions, second factors, signing keys, support.
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("padlock.auth.v1");
        include!(concat!(env!("OUT_DIR"), "/clients/padlock.auth.v1.rs"));
    }
}

/// `padlock.deploy.v1`: apps, packages, transports, nodes, node
/// permissions and the padlock policy.
pub mod deploy {
    pub mod v1 {
        tonic::include_proto!("padlock.deploy.v1");
        include!(concat!(env!("OUT_DIR"), "/clients/padlock.deploy.v1.rs"));
    }
}

/// The auth contracts as an encoded `FileDescriptorSet`, for reflection.
pub const AUTH_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("auth_descriptor");

/// The deploy contracts as an encoded `FileDescriptorSet`, for reflection.
pub const DEPLOY_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("deploy_descriptor");

/// Every method of every service in `descriptor_set` (an encoded
/// `FileDescriptorSet`), as `package.Service/Method`: what a table of rules
/// per RPC must cover. Empty if the set does not decode.
pub fn methods(descriptor_set: &[u8]) -> Vec<String> {
    use prost::Message as _;
    let Ok(set) = prost_types::FileDescriptorSet::decode(descriptor_set) else {
        return Vec::new();
    };
    let mut methods = Vec::new();
    for file in &set.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                methods.push(format!("{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    methods
}
