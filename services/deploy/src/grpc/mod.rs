//! The gRPC adapters: one module per service in `padlock.deploy.v1`, each
//! RPC a few lines that verify the caller, decode and validate the request
//! into domain types ([`Fields`]), call one use case of the service layer
//! and encode its answer. Errors become statuses in one place
//! (`crate::error`).

mod apps;
mod nodes;
mod packages;
mod permissions;
mod policy;

pub(crate) use apps::Apps;
pub(crate) use nodes::Nodes;
pub(crate) use packages::Packages;
pub(crate) use permissions::Permissions;
pub(crate) use policy::Policies;

use padlock_proto::deploy::v1 as pb;
use padlock_runtime::names::{Username, timestamp};
use padlock_runtime::status::Violations;

use crate::error::{DeployError, Result};
use crate::policy::{AppName, Env, FileName, Permission, Role, Version};
use crate::store;

type Reply<T> = std::result::Result<tonic::Response<T>, tonic::Status>;

/// A request's fields, parsed into domain types; every violation is
/// collected, and [`Fields::done`] fails with all of them.
#[derive(Debug, Default)]
pub(crate) struct Fields(Violations);

impl Fields {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn bad(&mut self, field: &'static str, description: impl Into<String>) {
        self.0.add(field, description);
    }

    /// An id we issued: a UUID.
    pub(crate) fn id(&mut self, field: &'static str, value: &str) {
        if value.is_empty() {
            self.bad(field, "required");
        } else if uuid::Uuid::parse_str(value).is_err() {
            self.bad(field, "not a valid id");
        }
    }

    pub(crate) fn env(&mut self, field: &'static str, value: i32) -> Option<Env> {
        let env = Env::from_proto(value);
        if env.is_none() {
            self.bad(field, "must be test, acceptance or production");
        }
        env
    }

    /// Like `env`, but unspecified means "all".
    pub(crate) fn env_filter(&mut self, field: &'static str, value: i32) -> Option<Env> {
        if value == 0 {
            return None;
        }
        self.env(field, value)
    }

    /// A username, by the grammar auth creates them with.
    pub(crate) fn username(&mut self, field: &'static str, value: &str) -> Option<Username> {
        self.0.username(field, value)
    }

    pub(crate) fn app_name(&mut self, field: &'static str, value: &str) -> Option<AppName> {
        self.parsed(field, AppName::parse(value))
    }

    pub(crate) fn version(&mut self, field: &'static str, value: &str) -> Option<Version> {
        self.parsed(field, Version::parse(value))
    }

    pub(crate) fn file_name(&mut self, field: &'static str, value: &str) -> Option<FileName> {
        self.parsed(field, FileName::parse(value))
    }

    fn parsed<T>(
        &mut self,
        field: &'static str,
        parsed: std::result::Result<T, &str>,
    ) -> Option<T> {
        parsed
            .map_err(|description| self.bad(field, description))
            .ok()
    }

    pub(crate) fn role(&mut self, field: &'static str, value: i32) -> Option<Role> {
        let role = Role::from_proto(value);
        if role.is_none() {
            self.bad(field, "must be TECHNICAL_CONTACT, DEPLOY or MEMBER");
        }
        role
    }

    /// One or more node permissions, without duplicates.
    pub(crate) fn permissions(&mut self, field: &'static str, values: &[i32]) -> Vec<Permission> {
        let mut out = Vec::new();
        for value in values {
            match Permission::from_proto(*value) {
                Some(p) if !out.contains(&p) => out.push(p),
                Some(_) => {}
                None => {
                    self.bad(field, "each must be TRANSPORT, OPERATE, BACKUPS or LOGS");
                    return out;
                }
            }
        }
        if out.is_empty() {
            self.bad(field, "at least one permission");
        }
        out
    }

    /// `Ok` when nothing was flagged.
    pub(crate) fn done(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DeployError::Invalid(self.0))
        }
    }

    /// [`Fields::done`], then the parsed value every check let through.
    pub(crate) fn done_with<T>(self, parsed: Option<T>) -> Result<T> {
        self.done()?;
        parsed.ok_or(DeployError::Internal)
    }
}

/// Checks a request whose only field is `app_id`.
fn app_id(value: &str) -> Result<()> {
    let mut fields = Fields::new();
    fields.id("app_id", value);
    fields.done()
}

fn app_message(app: &store::App) -> pb::App {
    pb::App {
        id: app.id.clone(),
        name: app.name.clone(),
        technical_contact: app.technical_contacts.first().cloned().unwrap_or_default(),
        created_at: timestamp(app.created_at),
    }
}

fn package_message(p: &store::Package) -> pb::Package {
    pb::Package {
        id: p.id.clone(),
        app_id: p.app_id.clone(),
        version: p.version.clone(),
        file_name: p.file_name.clone(),
        size: p.size,
        sha256: p.sha256.clone(),
        uploaded_by: p.uploaded_by.clone(),
        uploaded_at: timestamp(p.uploaded_at),
    }
}

fn deployment_message((d, package_version): &(store::Deployment, String)) -> pb::Deployment {
    pb::Deployment {
        id: d.id.to_string(),
        app_id: d.app_id.clone(),
        package_id: d.package_id.clone(),
        package_version: package_version.clone(),
        environment: d.env.to_proto(),
        from_environment: d.from_env.map(|e| e.to_proto()).unwrap_or_default(),
        deployed_by: d.deployed_by.clone(),
        deployed_at: timestamp(d.deployed_at),
        mfa_at: d.mfa_at.and_then(timestamp),
        mfa_method: d.mfa_method.clone().unwrap_or_default(),
    }
}
