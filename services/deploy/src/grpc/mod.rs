//! The gRPC surface: one module per service in `padlock.deploy.v1`, plus the
//! request checks and message conversions they share. Handlers validate,
//! ask `App::authorize` before changing anything, and map errors in one
//! place (`crate::error`).

pub mod apps;
pub mod nodes;
pub mod packages;
pub mod permissions;
pub mod policy;

use padlock_proto::deploy::v1 as pb;
use prost_types::Timestamp;

use crate::error::{DeployError, Result};
use crate::policy::{Env, Permission};
use crate::store::{self, Role};

/// How many deployments a listing returns at most.
pub const MAX_LISTED_DEPLOYMENTS: u64 = 200;

pub fn timestamp(unix: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: unix,
        nanos: 0,
    })
}

/// Collects field violations for one request.
#[derive(Debug, Default)]
pub struct Check(Vec<(&'static str, String)>);

impl Check {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bad_field(&mut self, field: &'static str, description: impl Into<String>) {
        self.bad(field, description);
    }

    fn bad(&mut self, field: &'static str, description: impl Into<String>) {
        self.0.push((field, description.into()));
    }

    /// An id we issued: a UUID.
    pub fn id(&mut self, field: &'static str, value: &str) {
        if value.is_empty() {
            self.bad(field, "required");
        } else if uuid::Uuid::parse_str(value).is_err() {
            self.bad(field, "not a valid id");
        }
    }

    pub fn env(&mut self, field: &'static str, value: i32) -> Option<Env> {
        let env = Env::from_proto(value);
        if env.is_none() {
            self.bad(field, "must be test, acceptance or production");
        }
        env
    }

    /// Like `env`, but unspecified means "all".
    pub fn env_filter(&mut self, field: &'static str, value: i32) -> Option<Env> {
        if value == 0 {
            return None;
        }
        self.env(field, value)
    }

    /// A username as auth allows them: 1 to 64 of letters, digits, `. _ - @`.
    pub fn username(&mut self, field: &'static str, value: &str) {
        if value.is_empty() {
            self.bad(field, "required");
        } else if value.len() > 64
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        {
            self.bad(field, "1 to 64 of letters, digits and . _ - @");
        }
    }

    pub fn app_name(&mut self, field: &'static str, value: &str) {
        let ok = !value.trim().is_empty()
            && value.len() <= 64
            && value.trim() == value
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
        if !ok {
            self.bad(field, "1 to 64 of letters, digits, spaces and - _ .");
        }
    }

    pub fn version(&mut self, field: &'static str, value: &str) {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
        if !ok {
            self.bad(field, "1 to 64 of letters, digits and . _ - +");
        }
    }

    /// A plain file name of an MDA archive: no directories, no control characters.
    pub fn file_name(&mut self, field: &'static str, value: &str) {
        let plain = !value.is_empty()
            && value.len() <= 128
            && !value.starts_with('.')
            && !value
                .chars()
                .any(|c| c.is_control() || matches!(c, '/' | '\\'));
        if !plain {
            self.bad(
                field,
                "a file name of 1 to 128 characters, without directories",
            );
        } else if !value.to_ascii_lowercase().ends_with(".mda") {
            self.bad(field, "must be an MDA archive (.mda)");
        }
    }

    pub fn role(&mut self, field: &'static str, value: i32) -> Option<Role> {
        let role = match pb::TeamRole::try_from(value) {
            Ok(pb::TeamRole::TechnicalContact) => Some(Role::TechnicalContact),
            Ok(pb::TeamRole::Deploy) => Some(Role::Deploy),
            Ok(pb::TeamRole::Member) => Some(Role::Member),
            _ => None,
        };
        if role.is_none() {
            self.bad(field, "must be TECHNICAL_CONTACT, DEPLOY or MEMBER");
        }
        role
    }

    /// One or more node permissions, without duplicates.
    pub fn permissions(&mut self, field: &'static str, values: &[i32]) -> Vec<Permission> {
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
    pub fn done(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DeployError::Invalid(self.0))
        }
    }
}

pub fn role_message(role: Role) -> pb::TeamRole {
    match role {
        Role::TechnicalContact => pb::TeamRole::TechnicalContact,
        Role::Deploy => pb::TeamRole::Deploy,
        Role::Member => pb::TeamRole::Member,
    }
}

pub fn app_message(app: &store::App) -> pb::App {
    pb::App {
        id: app.id.clone(),
        name: app.name.clone(),
        technical_contact: app.technical_contacts.first().cloned().unwrap_or_default(),
        created_at: timestamp(app.created_at),
    }
}

pub fn package_message(p: &store::Package) -> pb::Package {
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

pub fn deployment_message(d: &store::Deployment, package_version: &str) -> pb::Deployment {
    pb::Deployment {
        id: d.id.to_string(),
        app_id: d.app_id.clone(),
        package_id: d.package_id.clone(),
        package_version: package_version.to_owned(),
        environment: d.env.to_proto(),
        from_environment: d.from_env.map(|e| e.to_proto()).unwrap_or_default(),
        deployed_by: d.deployed_by.clone(),
        deployed_at: timestamp(d.deployed_at),
        mfa_at: d.mfa_at.and_then(timestamp),
        mfa_method: d.mfa_method.clone().unwrap_or_default(),
    }
}

/// The licensed node behind an app's environment, e.g. `shop-production`.
pub fn node_name(app_name: &str, env: Env) -> String {
    let slug: String = app_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{}-{}", slug.trim_matches('-'), env.as_str())
}
