//! The deploy service's closed set of errors and the one place they become
//! gRPC statuses. Step-up refusals are built by `policy::refusal_status`.

use padlock_proto::Reason;
use padlock_runtime::status::{self, Violations};
use tonic::{Code, Status};

use crate::blobs::BlobError;
use crate::policy::Env;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid request")]
    Invalid(Vec<(&'static str, String)>),
    #[error("missing, malformed or expired access token")]
    TokenInvalid,
    #[error("cannot verify tokens right now: padlock-auth's keys are unavailable")]
    KeysUnavailable,
    /// A refusal by the padlock policy, already a rich status.
    #[error("refused by the padlock policy")]
    Refused(Box<Status>),
    #[error("this needs the {0} role")]
    RoleRequired(&'static str),
    #[error("you are not a member of this app's team")]
    NotAMember,
    #[error("only the app's Technical Contact may do this")]
    TechnicalContactRequired,
    #[error("only members with the Deploy role may do this")]
    DeployRoleRequired,
    #[error("node permissions are only for team members with the Deploy role")]
    MemberCannotHoldPermissions,
    #[error("an app needs a Technical Contact; add another one first")]
    LastTechnicalContact,
    #[error("unknown app")]
    AppNotFound,
    #[error("unknown package")]
    PackageNotFound,
    #[error("not a member of this app")]
    MemberNotFound,
    #[error("an app with that name exists")]
    AppNameTaken,
    #[error("this app already has a package with that version")]
    PackageVersionExists,
    #[error("the package is not deployed in the source environment")]
    NotDeployedInSource,
    #[error(
        "{env} only receives packages that ran on {previous}; deploy or transport it there first"
    )]
    NotPromoted { env: Env, previous: Env },
    #[error("upload: {0}")]
    Upload(#[from] BlobError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("internal error")]
    Internal,
}

impl DeployError {
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        DeployError::Invalid(vec![(field, description.into())])
    }
}

impl From<DeployError> for Status {
    fn from(err: DeployError) -> Status {
        use DeployError::*;
        let message = err.to_string();
        let refusal = |code, reason| status::refusal(code, reason, message.clone(), []);
        match err {
            Invalid(fields) => {
                let mut v = Violations::new();
                for (field, description) in fields {
                    v.add(field, description);
                }
                v.into_result().err().unwrap_or_else(status::internal)
            }
            TokenInvalid => refusal(Code::Unauthenticated, Reason::TokenInvalid),
            KeysUnavailable => refusal(Code::Unavailable, Reason::KeysUnavailable),
            Refused(status) => *status,
            RoleRequired(_) => refusal(Code::PermissionDenied, Reason::RoleRequired),
            NotAMember => refusal(Code::PermissionDenied, Reason::NotAMember),
            TechnicalContactRequired => {
                refusal(Code::PermissionDenied, Reason::TechnicalContactRequired)
            }
            DeployRoleRequired => refusal(Code::PermissionDenied, Reason::DeployRoleRequired),
            MemberCannotHoldPermissions => {
                refusal(Code::FailedPrecondition, Reason::DeployRoleRequired)
            }
            LastTechnicalContact => refusal(Code::FailedPrecondition, Reason::LastTechnicalContact),
            AppNotFound => refusal(Code::NotFound, Reason::AppNotFound),
            PackageNotFound => refusal(Code::NotFound, Reason::PackageNotFound),
            MemberNotFound => refusal(Code::NotFound, Reason::MemberNotFound),
            AppNameTaken => refusal(Code::AlreadyExists, Reason::AppNameTaken),
            PackageVersionExists => refusal(Code::AlreadyExists, Reason::PackageVersionExists),
            NotDeployedInSource => {
                refusal(Code::FailedPrecondition, Reason::PackageNotDeployedInSource)
            }
            NotPromoted { env, previous } => status::refusal(
                Code::FailedPrecondition,
                Reason::PackageNotPromoted,
                message,
                [
                    ("environment", env.as_str().to_owned()),
                    ("required_environment", previous.as_str().to_owned()),
                ],
            ),
            Upload(e) => match e.field() {
                Some(field) => status::invalid_field(field, &e.to_string()),
                None => status::internal(),
            },
            Store(StoreError::Conflict) => refusal(Code::Aborted, Reason::Conflict),
            Store(StoreError::Unavailable) => status::unavailable(),
            Store(StoreError::Internal) | Internal => status::internal(),
        }
    }
}

pub type Result<T> = std::result::Result<T, DeployError>;
