//! The deploy service under fuzzing: the real `App` on SQLite in memory
//! (tmpfs) with its package store beside it, a manual clock, a fixed JWKS,
//! and every deploy RPC served in-process, `UploadPackage`'s stream
//! included. Built once per process with an app "Shop" (Technical Contact
//! tina, dev on the team with TRANSPORT on test and acceptance) and a
//! package deployed on test, so the fuzzer starts next to the padlocks.
//!
//! Callers are a fixed cast whose tokens are signed afresh for each input
//! at the clock's time (which moves a minute per input): nobody, garbage,
//! an operator stepped up, tina stepped up / without a second factor / with
//! a stale one, dev stepped up, a stranger, support, and an operator without
//! a second factor.

use std::sync::Arc;
use std::time::Duration;

use padlock_deploy::{App, FetchError, JwksSource, Options};
use padlock_proto::deploy::v1::{self as pb, upload_package_request::Part};
use padlock_runtime::{Clock as _, ManualClock};
use padlock_token::{Claims, JwkSet, KeyRing};
use prost::Message as _;
use sha2::Digest as _;
use tonic::service::Routes;

use crate::grpc;
use crate::input::{self, Substitutions};

/// Every deploy RPC, indexed by an input's method byte.
pub const METHODS: &[&str] = &[
    "/padlock.deploy.v1.AppService/CreateApp",
    "/padlock.deploy.v1.AppService/GetApp",
    "/padlock.deploy.v1.AppService/ListApps",
    "/padlock.deploy.v1.AppService/AddTeamMember",
    "/padlock.deploy.v1.AppService/RemoveTeamMember",
    "/padlock.deploy.v1.AppService/ListTeamMembers",
    "/padlock.deploy.v1.AppService/ListEnvironments",
    UPLOAD,
    "/padlock.deploy.v1.PackageService/ListPackages",
    "/padlock.deploy.v1.PackageService/DeployPackage",
    "/padlock.deploy.v1.PackageService/TransportPackage",
    "/padlock.deploy.v1.PackageService/ListDeployments",
    "/padlock.deploy.v1.NodeService/GetNodeDetails",
    "/padlock.deploy.v1.NodeService/DownloadBackup",
    "/padlock.deploy.v1.PermissionService/GrantNodePermissions",
    "/padlock.deploy.v1.PermissionService/RevokeNodePermissions",
    "/padlock.deploy.v1.PermissionService/ListNodePermissions",
    "/padlock.deploy.v1.PolicyService/ListActions",
    "/padlock.deploy.v1.PolicyService/CheckAccess",
];

/// The one client-streaming RPC: its body is a list of messages.
pub const UPLOAD: &str = "/padlock.deploy.v1.PackageService/UploadPackage";

/// Who makes a call, indexed by an input's caller byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Nobody,
    GarbageToken,
    Operator,
    TinaSteppedUp,
    TinaWithoutMfa,
    TinaStale,
    DevSteppedUp,
    Stranger,
    Support,
    OperatorWithoutMfa,
}

pub const CALLERS: &[Caller] = &[
    Caller::Nobody,
    Caller::GarbageToken,
    Caller::Operator,
    Caller::TinaSteppedUp,
    Caller::TinaWithoutMfa,
    Caller::TinaStale,
    Caller::DevSteppedUp,
    Caller::Stranger,
    Caller::Support,
    Caller::OperatorWithoutMfa,
];

/// Replaced by the id of the app "Shop".
pub const APP_PLACEHOLDER: &str = "00000000-0000-4000-8000-00000000a001";
/// Replaced by the id of the package deployed on test.
pub const PACKAGE_PLACEHOLDER: &str = "00000000-0000-4000-8000-00000000a002";
/// In an upload's metadata, replaced by the SHA-256 of its chunks.
pub const SHA256_PLACEHOLDER: &str =
    "SHA256-PLACEHOLDER-0123456789abcdef0123456789abcdef0123456789abc";

/// The package deployed on test at set-up.
const SHOP_PACKAGE: &[u8] = b"shop package 1.0.0";

/// The clock moves this far before each input.
const STEP: Duration = Duration::from_secs(60);
/// A second factor counts for eight hours by default
/// (`padlock_deploy::policy::MaxAge::DEFAULT`); stale is an hour past that.
const STALE_MFA_SECS: i64 = padlock_deploy::policy::MaxAge::DEFAULT.secs() + 60 * 60;

/// The harness; see the module docs.
#[derive(Debug)]
pub struct DeployTarget {
    runtime: tokio::runtime::Runtime,
    clock: ManualClock,
    ring: KeyRing,
    routes: Routes,
    app_id: String,
    package_id: String,
    _app: App,
    _dir: tempfile::TempDir,
}

/// auth's JWKS, fixed.
#[derive(Debug)]
struct FixedJwks(JwkSet);

#[async_trait::async_trait]
impl JwksSource for FixedJwks {
    async fn fetch(&self) -> Result<JwkSet, FetchError> {
        Ok(self.0.clone())
    }
}

impl DeployTarget {
    /// Opens the service and sets up Shop, its team and a package on test
    /// through the real RPCs.
    ///
    /// # Panics
    ///
    /// If the service cannot start or the set-up is refused: the harness
    /// is broken, not the input.
    pub fn new() -> Self {
        let runtime = crate::runtime();
        let dir = crate::auth::memory_dir();
        let clock = ManualClock::at_unix(crate::START);
        let ring = KeyRing::generate();
        let mut options = Options::in_dir(dir.path().join("deploy"));
        options.database_url = Some(padlock_runtime::Secret::new(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("deploy.db").display()
        )));
        let app = runtime
            .block_on(padlock_deploy::open(
                options,
                Arc::new(clock.clone()),
                Arc::new(FixedJwks(ring.jwks())),
            ))
            .expect("deploy opens");
        let routes = padlock_deploy::routes(&app);
        let mut target = DeployTarget {
            runtime,
            clock,
            ring,
            routes,
            app_id: String::new(),
            package_id: String::new(),
            _app: app,
            _dir: dir,
        };
        target.set_up();
        target
    }

    /// Shop, dev on its team with TRANSPORT on test and acceptance, and
    /// package 1.0.0 uploaded and deployed on test.
    fn set_up(&mut self) {
        let shop: pb::App = self.must(
            "/padlock.deploy.v1.AppService/CreateApp",
            Caller::Operator,
            &[&pb::CreateAppRequest {
                name: "Shop".into(),
                technical_contact: "tina".into(),
            }
            .encode_to_vec()],
        );
        self.app_id = shop.id;
        let _: pb::TeamMember = self.must(
            "/padlock.deploy.v1.AppService/AddTeamMember",
            Caller::TinaSteppedUp,
            &[&pb::AddTeamMemberRequest {
                app_id: self.app_id.clone(),
                username: "dev".into(),
                role: pb::TeamRole::Deploy.into(),
            }
            .encode_to_vec()],
        );
        for environment in [pb::Environment::Test, pb::Environment::Acceptance] {
            let _: pb::NodePermissionSet = self.must(
                "/padlock.deploy.v1.PermissionService/GrantNodePermissions",
                Caller::TinaSteppedUp,
                &[&pb::GrantNodePermissionsRequest {
                    app_id: self.app_id.clone(),
                    environment: environment.into(),
                    username: "dev".into(),
                    permissions: vec![pb::NodePermission::Transport.into()],
                }
                .encode_to_vec()],
            );
        }
        let package: pb::Package = self.must(
            UPLOAD,
            Caller::TinaSteppedUp,
            &upload_messages(
                &self.app_id,
                "1.0.0",
                SHOP_PACKAGE,
                &sha256_hex(SHOP_PACKAGE),
            ),
        );
        self.package_id = package.id;
        let _: pb::Deployment = self.must(
            "/padlock.deploy.v1.PackageService/DeployPackage",
            Caller::TinaSteppedUp,
            &[&pb::DeployPackageRequest {
                package_id: self.package_id.clone(),
                environment: pb::Environment::Test.into(),
            }
            .encode_to_vec()],
        );
    }

    /// A set-up call that must succeed; its decoded reply.
    fn must<M: prost::Message + Default>(
        &self,
        path: &str,
        caller: Caller,
        messages: &[impl AsRef<[u8]>],
    ) -> M {
        let authorization = self.authorization(caller);
        let messages: Vec<&[u8]> = messages.iter().map(AsRef::as_ref).collect();
        let reply = self.runtime.block_on(grpc::call(
            &self.routes,
            path,
            authorization.as_deref(),
            &messages,
        ));
        assert_eq!(
            reply.status.code(),
            tonic::Code::Ok,
            "{path}: {:?}",
            reply.status
        );
        reply.decode().expect("a response message")
    }

    /// `authorization` for `caller`, signed now.
    fn authorization(&self, caller: Caller) -> Option<String> {
        let now = self.clock.unix();
        let (username, roles, mfa_at): (&str, &[&str], Option<i64>) = match caller {
            Caller::Nobody => return None,
            Caller::GarbageToken => return Some("Bearer e30.e30.AAAA".into()),
            Caller::Operator => ("ops", &["operator"], Some(now)),
            Caller::OperatorWithoutMfa => ("ops", &["operator"], None),
            Caller::TinaSteppedUp => ("tina", &[], Some(now)),
            Caller::TinaWithoutMfa => ("tina", &[], None),
            Caller::TinaStale => ("tina", &[], Some(now - STALE_MFA_SECS)),
            Caller::DevSteppedUp => ("dev", &[], Some(now)),
            Caller::Stranger => ("mallory", &[], Some(now)),
            Caller::Support => ("sam", &["support"], Some(now)),
        };
        let claims = Claims {
            iss: "padlock-auth".into(),
            aud: "padlock-deploy".into(),
            sub: format!("id-{username}"),
            preferred_username: username.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            sid: format!("sid-{username}"),
            iat: now,
            exp: now + 600,
            jti: uuid::Uuid::new_v4().to_string(),
            auth_time: now,
            amr: if mfa_at.is_some() {
                vec!["pwd".into(), "otp".into(), "mfa".into()]
            } else {
                vec!["pwd".into()]
            },
            acr: if mfa_at.is_some() { "aal2" } else { "aal1" }.into(),
            mfa_at,
            mfa_method: mfa_at.map(|_| "totp".into()),
        };
        let token = self.ring.sign(&claims).expect("a signed token");
        Some(format!("Bearer {token}"))
    }

    /// Runs every call in `data` and returns their status codes. Panics
    /// when a status breaks the oracle ([`grpc::check`]).
    pub fn run(&self, data: &[u8]) -> Vec<tonic::Code> {
        self.clock.advance(STEP);
        let mut codes = Vec::new();
        let mut substitutions = Substitutions::default();
        substitutions.add(APP_PLACEHOLDER, &self.app_id);
        substitutions.add(PACKAGE_PLACEHOLDER, &self.package_id);
        for call in input::calls(data) {
            let path = METHODS[usize::from(call.method) % METHODS.len()];
            let caller = CALLERS[usize::from(call.caller) % CALLERS.len()];
            let authorization = self.authorization(caller);
            let body = substitutions.apply(call.body);
            let messages: Vec<Vec<u8>> = if path == UPLOAD {
                with_chunk_digest(input::split_messages(&body))
            } else {
                vec![body]
            };
            let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let reply = self.runtime.block_on(grpc::call(
                &self.routes,
                path,
                authorization.as_deref(),
                &messages,
            ));
            grpc::check(path, &reply.status, &[]);
            codes.push(reply.status.code());
        }
        codes
    }
}

impl Default for DeployTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// An upload's messages with [`SHA256_PLACEHOLDER`] replaced by the digest
/// of the chunks that decode as chunks.
fn with_chunk_digest(messages: Vec<&[u8]>) -> Vec<Vec<u8>> {
    let mut digest = sha2::Sha256::new();
    for message in &messages {
        if let Ok(pb::UploadPackageRequest {
            part: Some(Part::Chunk(bytes)),
        }) = pb::UploadPackageRequest::decode(*message)
        {
            digest.update(&bytes);
        }
    }
    let hex: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut substitutions = Substitutions::default();
    substitutions.add(SHA256_PLACEHOLDER, &hex);
    messages.iter().map(|m| substitutions.apply(m)).collect()
}

/// A whole upload of `content` in one chunk, as encoded messages, its
/// metadata naming `sha256` (the real digest, or [`SHA256_PLACEHOLDER`]).
pub fn upload_messages(app_id: &str, version: &str, content: &[u8], sha256: &str) -> Vec<Vec<u8>> {
    let metadata = pb::UploadPackageRequest {
        part: Some(Part::Metadata(pb::PackageMetadata {
            app_id: app_id.into(),
            version: version.into(),
            file_name: format!("shop-{version}.mda"),
            size: content.len() as u64,
            sha256: sha256.into(),
        })),
    };
    let chunk = pb::UploadPackageRequest {
        part: Some(Part::Chunk(content.to_vec())),
    };
    vec![metadata.encode_to_vec(), chunk.encode_to_vec()]
}

/// Lowercase hex SHA-256, as package metadata names it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
