//! Starts the deploy service in-process on 127.0.0.1:0 with a manual clock
//! and an in-memory JWKS, mints tokens as auth would, and talks to the
//! service through the generated gRPC clients.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use padlock_deploy::{App, Options};
use padlock_deploy::{FetchError, JwksSource};
use padlock_proto::deploy::v1::{
    self as pb, app_service_client::AppServiceClient, node_service_client::NodeServiceClient,
    package_service_client::PackageServiceClient,
    permission_service_client::PermissionServiceClient, policy_service_client::PolicyServiceClient,
};
use padlock_runtime::{Clock, ManualClock};
use padlock_test_support::TestDatabase;
use padlock_token::{Claims, JwkSet, KeyRing};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub const START: i64 = 1_800_000_000;
/// The default max age of a second factor, in seconds.
pub const EIGHT_HOURS: i64 = padlock_deploy::policy::MaxAge::DEFAULT.secs();

/// Auth's JWKS as the deploy service would fetch it, swappable for rotations.
#[derive(Debug)]
pub struct FakeAuthKeys(pub Mutex<JwkSet>);

#[async_trait::async_trait]
impl JwksSource for FakeAuthKeys {
    async fn fetch(&self) -> Result<JwkSet, FetchError> {
        Ok(self.0.lock().unwrap().clone())
    }
}

pub struct Harness {
    pub backend: &'static str,
    pub clock: ManualClock,
    pub app: App,
    pub channel: Channel,
    pub ring: Mutex<KeyRing>,
    pub jwks: Arc<FakeAuthKeys>,
    pub data_dir: std::path::PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(db: &TestDatabase) -> Harness {
        Self::start_with(db, |o| o).await
    }

    pub async fn start_with(
        db: &TestDatabase,
        configure: impl FnOnce(Options) -> Options,
    ) -> Harness {
        padlock_runtime::telemetry::init(padlock_runtime::telemetry::LogFormat::Text);
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let clock = ManualClock::at_unix(START);
        let ring = KeyRing::generate();
        let jwks = Arc::new(FakeAuthKeys(Mutex::new(ring.jwks())));
        let mut options = Options::in_dir(&data_dir);
        options.database_url = Some(padlock_runtime::Secret::new(db.url.clone()));
        let options = configure(options);
        let app = padlock_deploy::open(options, Arc::new(clock.clone()), jwks.clone())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let served = app.clone();
        let task = tokio::spawn(async move {
            padlock_deploy::serve(served, listener, &Default::default(), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Harness {
            backend: db.backend,
            clock,
            app,
            channel,
            ring: Mutex::new(ring),
            jwks,
            data_dir,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.unix()
    }

    /// An access token as auth would sign it now; `mfa_at` as given.
    pub fn token(&self, username: &str, roles: &[&str], mfa_at: Option<i64>) -> String {
        let now = self.clock.unix();
        let claims = Claims {
            iss: "padlock-auth".into(),
            aud: "padlock-deploy".into(),
            sub: format!("id-{username}"),
            preferred_username: username.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
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
            acr: if mfa_at.is_some() {
                "aal2".into()
            } else {
                "aal1".into()
            },
            mfa_at,
            mfa_method: mfa_at.map(|_| "totp".into()),
        };
        self.ring.lock().unwrap().sign(&claims).unwrap()
    }

    /// A token whose second factor was verified just now.
    pub fn stepped_up(&self, username: &str) -> String {
        self.token(username, &[], Some(self.clock.unix()))
    }

    /// Auth rotates its key: new tokens carry a new kid, the JWKS lists both.
    pub fn rotate_keys(&self) {
        let mut ring = self.ring.lock().unwrap();
        *ring = KeyRing::new(
            padlock_token::SigningKey::generate(),
            Some(ring.current.clone()),
        );
        *self.jwks.0.lock().unwrap() = ring.jwks();
    }

    pub fn apps(&self) -> AppServiceClient<Channel> {
        AppServiceClient::new(self.channel.clone())
    }
    pub fn packages(&self) -> PackageServiceClient<Channel> {
        PackageServiceClient::new(self.channel.clone())
    }
    pub fn nodes(&self) -> NodeServiceClient<Channel> {
        NodeServiceClient::new(self.channel.clone())
    }
    pub fn permissions(&self) -> PermissionServiceClient<Channel> {
        PermissionServiceClient::new(self.channel.clone())
    }
    pub fn policy(&self) -> PolicyServiceClient<Channel> {
        PolicyServiceClient::new(self.channel.clone())
    }

    /// App "Shop" with Technical Contact tina, created by an operator with
    /// a fresh second factor.
    pub async fn shop(&self) -> String {
        let ops = self.token("ops", &["operator"], Some(self.now()));
        self.apps()
            .create_app(bearer(
                &ops,
                pb::CreateAppRequest {
                    name: "Shop".into(),
                    technical_contact: "tina".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .id
    }

    /// tina, stepped up, adds `username` to the team (or changes their role).
    pub async fn add_member(&self, app_id: &str, username: &str, role: pb::TeamRole) {
        let tina = self.stepped_up("tina");
        self.apps()
            .add_team_member(bearer(
                &tina,
                pb::AddTeamMemberRequest {
                    app_id: app_id.into(),
                    username: username.into(),
                    role: role as i32,
                },
            ))
            .await
            .unwrap();
    }

    pub async fn grant(
        &self,
        token: &str,
        app_id: &str,
        env: pb::Environment,
        username: &str,
        perms: &[pb::NodePermission],
    ) -> Result<pb::NodePermissionSet, Status> {
        self.permissions()
            .grant_node_permissions(bearer(
                token,
                pb::GrantNodePermissionsRequest {
                    app_id: app_id.into(),
                    environment: env as i32,
                    username: username.into(),
                    permissions: perms.iter().map(|p| *p as i32).collect(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// Uploads `bytes` in 1 KiB chunks as `version`.
    pub async fn upload(
        &self,
        token: &str,
        app_id: &str,
        version: &str,
        bytes: &[u8],
    ) -> Result<pb::Package, Status> {
        let meta = metadata(app_id, version, bytes);
        self.upload_parts(token, upload_parts(meta, bytes, 1024))
            .await
    }

    pub async fn upload_parts(
        &self,
        token: &str,
        parts: Vec<pb::UploadPackageRequest>,
    ) -> Result<pb::Package, Status> {
        let stream = tokio_stream::iter(parts);
        self.packages()
            .upload_package(bearer(token, stream))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn deploy(
        &self,
        token: &str,
        package_id: &str,
        env: pb::Environment,
    ) -> Result<pb::Deployment, Status> {
        self.packages()
            .deploy_package(bearer(
                token,
                pb::DeployPackageRequest {
                    package_id: package_id.into(),
                    environment: env as i32,
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn transport(
        &self,
        token: &str,
        package_id: &str,
        from: pb::Environment,
        to: pb::Environment,
    ) -> Result<pb::Deployment, Status> {
        self.packages()
            .transport_package(bearer(
                token,
                pb::TransportPackageRequest {
                    package_id: package_id.into(),
                    from_environment: from as i32,
                    to_environment: to as i32,
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn deployments(&self, token: &str, app_id: &str) -> Vec<pb::Deployment> {
        self.packages()
            .list_deployments(bearer(
                token,
                pb::ListDeploymentsRequest {
                    app_id: app_id.into(),
                    environment: 0,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .deployments
    }

    /// Files left in the upload area.
    pub fn temp_files(&self) -> usize {
        std::fs::read_dir(self.data_dir.join("packages/tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

pub fn metadata(app_id: &str, version: &str, bytes: &[u8]) -> pb::PackageMetadata {
    pb::PackageMetadata {
        app_id: app_id.into(),
        version: version.into(),
        file_name: format!("shop-{version}.mda"),
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
    }
}

pub fn upload_parts(
    meta: pb::PackageMetadata,
    bytes: &[u8],
    chunk: usize,
) -> Vec<pb::UploadPackageRequest> {
    use pb::upload_package_request::Part;
    let mut parts = vec![pb::UploadPackageRequest {
        part: Some(Part::Metadata(meta)),
    }];
    parts.extend(bytes.chunks(chunk).map(|c| pb::UploadPackageRequest {
        part: Some(Part::Chunk(c.to_vec())),
    }));
    parts
}

/// A deterministic "MDA archive".
pub fn mda(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Asserts code and ErrorInfo reason; returns the ErrorInfo metadata.
#[track_caller]
pub fn refused<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason: &str,
) -> std::collections::HashMap<String, String> {
    let status = result.expect_err("expected a refusal");
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo: {status:?}"));
    assert_eq!(info.domain, "padlock");
    assert_eq!(info.reason, reason, "{status:?}");
    info.metadata.clone()
}

pub fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}
