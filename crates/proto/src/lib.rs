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

/// `padlock.errors.v1`: the reasons of refusals, shared by every service.
pub mod errors {
    pub mod v1 {
        tonic::include_proto!("padlock.errors.v1");
    }
}

/// The reason an ErrorInfo of domain [`codec::DOMAIN`] carries, by its
/// proto name (`Reason::MfaRequired.as_str_name() == "MFA_REQUIRED"`).
pub use errors::v1::ErrorReason as Reason;

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

/// Checks a table of rules per RPC against what a server serves: every
/// method of the `served` descriptor sets listed exactly once, and nothing
/// listed that is not served. `Err` names each missing, doubled or unknown
/// method.
pub fn check_rule_table<'a>(
    served: &[&[u8]],
    listed: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    let served: Vec<String> = served.iter().flat_map(|set| methods(set)).collect();
    let listed: Vec<&str> = listed.into_iter().collect();
    let mut faults = Vec::new();
    if served.is_empty() {
        faults.push("no served methods: the descriptor sets do not decode".to_owned());
    }
    for method in &served {
        match listed.iter().filter(|l| **l == method.as_str()).count() {
            0 => faults.push(format!("{method} has no rule")),
            1 => {}
            n => faults.push(format!("{method} has {n} rules")),
        }
    }
    for method in &listed {
        if !served.iter().any(|m| m == method) {
            faults.push(format!("{method} has a rule but is not served"));
        }
    }
    if faults.is_empty() {
        Ok(())
    } else {
        Err(faults.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_table_must_list_each_served_method_once_and_nothing_else() {
        let served = methods(DEPLOY_DESCRIPTOR_SET);
        assert!(served.contains(&"padlock.deploy.v1.AppService/CreateApp".to_owned()));
        let all = || served.iter().map(String::as_str);
        assert_eq!(check_rule_table(&[DEPLOY_DESCRIPTOR_SET], all()), Ok(()));
        let faults = check_rule_table(
            &[DEPLOY_DESCRIPTOR_SET],
            all()
                .filter(|m| !m.ends_with("/CreateApp"))
                .chain(["padlock.deploy.v1.AppService/GetApp", "x.Y/Z"]),
        )
        .unwrap_err();
        assert!(
            faults.contains("AppService/CreateApp has no rule"),
            "{faults}"
        );
        assert!(faults.contains("AppService/GetApp has 2 rules"), "{faults}");
        assert!(
            faults.contains("x.Y/Z has a rule but is not served"),
            "{faults}"
        );
        assert!(check_rule_table(&[b"not a descriptor set"], []).is_err());
    }

    #[test]
    fn reasons_are_named_as_the_proto_spells_them() {
        assert_eq!(Reason::MfaRequired.as_str_name(), "MFA_REQUIRED");
        assert_eq!(
            Reason::from_str_name("PACKAGE_NOT_PROMOTED"),
            Some(Reason::PackageNotPromoted)
        );
        assert_eq!(Reason::from_str_name("NO_SUCH_REASON"), None);
    }
}
