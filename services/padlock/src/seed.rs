//! The demo a first `padlock up` seeds, so the step-up flow can be tried
//! at once: three users (`padlock-auth users add`), the app "Shop" with tina
//! as its Technical Contact and dev on its team (`padlock-deploy apps
//! create` and `team add`): the operator's way, on the server, since over
//! gRPC both need a second factor nobody in the demo has yet. Then, over
//! gRPC as tina: TRANSPORT for dev on test and acceptance (an external
//! developer gets no production), and a package uploaded and deployed to
//! test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use padlock_proto::auth::v1::SignInRequest;
use padlock_proto::auth::v1::session_service_client::SessionServiceClient;
use padlock_proto::deploy::v1::{
    DeployPackageRequest, Environment, GrantNodePermissionsRequest, NodePermission,
    PackageMetadata, UploadPackageRequest, package_service_client::PackageServiceClient,
    permission_service_client::PermissionServiceClient, upload_package_request::Part,
};
use rand::distributions::{Alphanumeric, DistString as _};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt as _;

use crate::state::{Credential, DataDir, Demo};

pub const APP_NAME: &str = "Shop";
pub const PACKAGE_VERSION: &str = "1.0.0";
pub const PACKAGE_FILE: &str = "shop-1.0.0.mda";
/// A few KB: enough for several upload chunks.
const PACKAGE_SIZE: usize = 6 * 1024;
const CHUNK_SIZE: usize = 2 * 1024;

/// Letters and digits only, so a password pastes into JSON and shell
/// quotes unchanged; 20 of 62 symbols is about 119 bits.
const PASSWORD_LEN: usize = 20;

const RPC_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The demo users: who they are and the auth roles they get.
pub const USERS: [(&str, &[&str], &str); 3] = [
    ("ops", &["operator"], "operator: creates apps"),
    ("tina", &[], "Technical Contact of Shop"),
    (
        "dev",
        &[],
        "external developer: may transport on test and acceptance only",
    ),
];

fn password(creds: &[Credential], username: &str) -> anyhow::Result<String> {
    creds
        .iter()
        .find(|c| c.username == username)
        .map(|c| c.password.clone())
        .with_context(|| format!("no password for {username}"))
}

/// The service binaries the seed runs operator commands with.
#[derive(Debug, Clone, Copy)]
pub struct Tools<'a> {
    pub auth: &'a Path,
    pub deploy: &'a Path,
}

/// Seeds everything and writes the marker; on error names the step.
pub async fn seed(
    tools: Tools<'_>,
    data: &DataDir,
    auth: SocketAddr,
    deploy: SocketAddr,
) -> anyhow::Result<Demo> {
    let creds: Vec<Credential> = USERS
        .iter()
        .map(|(username, _, _)| Credential {
            username: (*username).to_owned(),
            password: Alphanumeric.sample_string(&mut rand::rngs::OsRng, PASSWORD_LEN),
        })
        .collect();
    data.write_credentials(&creds)?;
    for ((username, roles, _), cred) in USERS.iter().zip(&creds) {
        let mut args = vec!["users", "add", "--username", username];
        for role in *roles {
            args.extend(["--role", role]);
        }
        operator_command(tools.auth, &data.auth_dir(), &args, Some(&cred.password))
            .await
            .with_context(|| format!("seeding: adding the user {username}"))?;
    }

    let deploy_dir = data.deploy_dir();
    let app_id = operator_command(
        tools.deploy,
        &deploy_dir,
        &[
            "apps",
            "create",
            "--name",
            APP_NAME,
            "--technical-contact",
            "tina",
        ],
        None,
    )
    .await
    .context("seeding: creating the app Shop")?
    .trim()
    .to_owned();
    operator_command(
        tools.deploy,
        &deploy_dir,
        &[
            "team",
            "add",
            "--app",
            &app_id,
            "--username",
            "dev",
            "--role",
            "deploy",
        ],
        None,
    )
    .await
    .context("seeding: adding dev to Shop's team")?;

    let auth_channel = channel(auth)?;
    let deploy_channel = channel(deploy)?;
    let tina = SessionServiceClient::new(auth_channel)
        .sign_in(SignInRequest {
            username: "tina".to_owned(),
            password: password(&creds, "tina")?,
        })
        .await
        .map_err(|s| rpc_error("signing in as tina", &s))?
        .into_inner()
        .access_token;
    let mut permissions = PermissionServiceClient::new(deploy_channel.clone());
    let mut packages = PackageServiceClient::new(deploy_channel);

    // Unpadlocked: node permissions on test and acceptance need no second
    // factor.
    for env in [Environment::Test, Environment::Acceptance] {
        permissions
            .grant_node_permissions(authed(
                GrantNodePermissionsRequest {
                    app_id: app_id.clone(),
                    environment: env.into(),
                    username: "dev".into(),
                    permissions: vec![NodePermission::Transport.into()],
                },
                &tina,
            )?)
            .await
            .map_err(|s| {
                rpc_error(
                    &format!(
                        "GrantNodePermissions dev TRANSPORT on {}",
                        env.as_str_name()
                    ),
                    &s,
                )
            })?;
    }

    let archive = demo_archive();
    let mut parts = vec![UploadPackageRequest {
        part: Some(Part::Metadata(PackageMetadata {
            app_id: app_id.clone(),
            version: PACKAGE_VERSION.into(),
            file_name: PACKAGE_FILE.into(),
            size: u64::try_from(archive.len())?,
            sha256: hex::encode(Sha256::digest(&archive)),
        })),
    }];
    parts.extend(
        archive
            .chunks(CHUNK_SIZE)
            .map(|chunk| UploadPackageRequest {
                part: Some(Part::Chunk(chunk.to_vec())),
            }),
    );
    let package = packages
        .upload_package(authed(tokio_stream::iter(parts), &tina)?)
        .await
        .map_err(|s| rpc_error("UploadPackage shop-1.0.0.mda as tina", &s))?
        .into_inner();
    packages
        .deploy_package(authed(
            DeployPackageRequest {
                package_id: package.id.clone(),
                environment: Environment::Test.into(),
            },
            &tina,
        )?)
        .await
        .map_err(|s| rpc_error("DeployPackage shop-1.0.0.mda to TEST as tina", &s))?;

    let demo = Demo {
        app_id,
        package_id: package.id,
    };
    data.write_marker(&demo)?;
    Ok(demo)
}

/// An operator command on a service's data, the way an operator runs it on
/// the server: `BIN --data-dir DIR ARGS...`, with `stdin` (a password) on
/// its standard input. Returns what it printed on standard output.
async fn operator_command(
    bin: &Path,
    data_dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    let name = bin.file_name().map_or_else(
        || bin.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut child = tokio::process::Command::new(bin)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        // The data directory's SQLite, whatever the caller's environment says.
        .env_remove("DATABASE_URL")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
        // Dropping the pipe afterwards closes it: the command reads one line.
        pipe.write_all(format!("{text}\n").as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        // Its last line says why; the lines before are its logs.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.lines().rev().find(|l| !l.trim().is_empty());
        anyhow::bail!(
            "{name} {} exited ({}): {}",
            args.iter().take(2).copied().collect::<Vec<_>>().join(" "),
            out.status,
            why.unwrap_or("no message").trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(RPC_TIMEOUT)
        .connect_lazy())
}

fn authed<T>(message: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {token}"))
        .context("the access token is not a valid header value")?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// The status of a failed seed step, with the ErrorInfo reason the
/// services attach.
fn rpc_error(step: &str, status: &tonic::Status) -> anyhow::Error {
    let reason = status
        .get_details_error_info()
        .map(|info| format!(" (reason {})", info.reason))
        .unwrap_or_default();
    anyhow::anyhow!(
        "seeding: {step}: {:?}{reason}: {}",
        status.code(),
        status.message()
    )
}

/// A synthetic MDA archive: the same bytes on every seed, so its SHA-256 is
/// stable. Not a real Mendix archive; the deploy service stores it as is.
pub fn demo_archive() -> Vec<u8> {
    let mut bytes =
        format!("padlock demo deployment archive\napp: {APP_NAME}\nversion: {PACKAGE_VERSION}\n")
            .into_bytes();
    let mut n: u32 = 0;
    while bytes.len() < PACKAGE_SIZE {
        bytes.extend_from_slice(format!("model/page-{n:04}.xml\n").as_bytes());
        n += 1;
    }
    bytes.truncate(PACKAGE_SIZE);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use padlock_proto::Reason;

    #[test]
    fn the_demo_archive_is_a_few_kb_and_uploads_in_several_chunks() {
        let archive = demo_archive();
        assert_eq!(archive.len(), PACKAGE_SIZE);
        assert!(archive.chunks(CHUNK_SIZE).count() > 1);
        assert_eq!(archive, demo_archive(), "the same bytes every time");
    }

    #[test]
    fn a_refusal_names_the_step_and_the_reason() {
        let status = tonic::Status::with_error_details(
            tonic::Code::PermissionDenied,
            "only the Technical Contact may",
            tonic_types::ErrorDetails::with_error_info(
                Reason::TechnicalContactRequired.as_str_name(),
                "padlock",
                std::collections::HashMap::new(),
            ),
        );
        let text = rpc_error("AddTeamMember dev as tina", &status).to_string();
        assert!(text.contains("AddTeamMember dev as tina"), "{text}");
        assert!(text.contains("PermissionDenied"), "{text}");
        assert!(
            text.contains(Reason::TechnicalContactRequired.as_str_name()),
            "{text}"
        );
    }
}
