//! The deploy service's closed set of errors and the one place they become
//! gRPC statuses, step-up refusals included: the domain refuses with a
//! [`Refusal`] value, and only here does it get its code, message and
//! `google.rpc.ErrorInfo` (docs/design.md, "The step-up rule").

use padlock_proto::Reason;
use padlock_runtime::status::{self, Violations};
use tonic::{Code, Status};

use crate::blobs::BlobError;
use crate::policy::{Action, Env, MaxAge, Refusal, Requirement, Rule};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid request")]
    Invalid(Violations),
    #[error("missing, malformed or expired access token")]
    TokenInvalid,
    #[error("cannot verify tokens right now: padlock-auth's keys are unavailable")]
    KeysUnavailable,
    /// A padlocked action refused by the step-up rule.
    #[error("refused by the padlock policy: {refusal}")]
    Refused {
        refusal: Refusal,
        action: Action,
        env: Env,
        rule: Rule,
    },
    /// `CreateApp` refused for a missing or stale second factor.
    #[error("refused by the padlock policy: {refusal}")]
    CreateAppRefused { refusal: Refusal, max_age: MaxAge },
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
    pub(crate) fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        let mut violations = Violations::new();
        violations.add(field, description);
        DeployError::Invalid(violations)
    }
}

impl From<DeployError> for Status {
    fn from(err: DeployError) -> Status {
        use DeployError::*;
        let message = err.to_string();
        let refusal = |code, reason| status::refusal(code, reason, message.clone(), []);
        match err {
            Invalid(violations) => violations
                .into_result()
                .err()
                .unwrap_or_else(status::internal),
            TokenInvalid => refusal(Code::Unauthenticated, Reason::TokenInvalid),
            KeysUnavailable => refusal(Code::Unavailable, Reason::KeysUnavailable),
            Refused {
                refusal,
                action,
                env,
                rule,
            } => refusal_status(refusal, action, env, &rule),
            CreateAppRefused { refusal, max_age } => create_app_refusal(refusal, max_age),
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

/// "Who are you?" (UNAUTHENTICATED) versus "you may not" (PERMISSION_DENIED).
fn refusal_code(refusal: Refusal) -> Code {
    match refusal {
        Refusal::TokenInvalid | Refusal::MfaRequired | Refusal::MfaExpired => Code::Unauthenticated,
        Refusal::NodePermissionMissing => Code::PermissionDenied,
    }
}

/// The status refusing `CreateApp` for a stale or missing second factor:
/// as [`refusal_status`], with metadata `max_age` and `action` =
/// `create_app` (no environment: the app does not exist yet).
fn create_app_refusal(refusal: Refusal, max_age: MaxAge) -> Status {
    status::refusal(
        refusal_code(refusal),
        refusal.reason(),
        format!(
            "creating an app names who reaches its production, so it needs a second factor \
             verified within the last {max_age}; verify your second factor and try again"
        ),
        [
            ("max_age", max_age.secs().to_string()),
            ("action", "create_app".to_owned()),
        ],
    )
}

/// The gRPC status for `refusal`: UNAUTHENTICATED or PERMISSION_DENIED with
/// `google.rpc.ErrorInfo` (domain `padlock`, the reason, metadata `max_age`,
/// `action`, `environment`), the gRPC form of RFC 9470's
/// `insufficient_user_authentication`.
fn refusal_status(refusal: Refusal, action: Action, env: Env, rule: &Rule) -> Status {
    let window = rule.max_age;
    let message = match refusal {
        Refusal::TokenInvalid => {
            "the access token is missing, invalid or expired; sign in again".to_owned()
        }
        Refusal::MfaRequired => format!(
            "this action needs a second factor verified within the last {window}; \
             verify your second factor and try again"
        ),
        Refusal::MfaExpired => format!(
            "this action needs a second factor verified within the last {window}, \
             and yours no longer counts; verify it again and try again"
        ),
        Refusal::NodePermissionMissing => match rule.requirement {
            Requirement::Permission(permission) => format!(
                "this action needs the {permission} node permission on the app's {env} \
                 environment; ask the app's Technical Contact"
            ),
            Requirement::TechnicalContact => format!(
                "only the app's Technical Contact may {} on {env}",
                action_phrase(action)
            ),
        },
    };
    status::refusal(
        refusal_code(refusal),
        refusal.reason_under(rule),
        message,
        [
            ("max_age", rule.max_age_seconds().to_string()),
            ("action", action.as_str().to_owned()),
            ("environment", env.as_str().to_owned()),
        ],
    )
}

fn action_phrase(action: Action) -> &'static str {
    match action {
        Action::DeployPackage => "deploy packages",
        Action::TransportPackage => "transport packages",
        Action::GetNodeDetails => "read node details",
        Action::DownloadBackup => "download backups",
        Action::ChangeNodePermissions => "change node permissions",
        Action::ChangeTeam => "change the team",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use tonic_types::StatusExt as _;

    #[test]
    fn refusal_status_carries_code_reason_and_metadata() {
        let policy = Policy::default()
            .with_max_age(Action::DownloadBackup, MaxAge::from_secs(3_600).unwrap());
        let cases = [
            (Refusal::TokenInvalid, Code::Unauthenticated),
            (Refusal::MfaRequired, Code::Unauthenticated),
            (Refusal::MfaExpired, Code::Unauthenticated),
            (Refusal::NodePermissionMissing, Code::PermissionDenied),
        ];
        for (refusal, code) in cases {
            let rule = policy.rule(Action::DownloadBackup, Env::Production);
            let status = refusal_status(refusal, Action::DownloadBackup, Env::Production, &rule);
            assert_eq!(status.code(), code, "{refusal}");
            let details = status.get_error_details();
            let info = details.error_info().expect("error info");
            assert_eq!(info.reason, refusal.reason().as_str_name());
            assert_eq!(info.domain, "padlock");
            assert_eq!(info.metadata["max_age"], "3600");
            assert_eq!(info.metadata["action"], "download_backup");
            assert_eq!(info.metadata["environment"], "production");
            assert_eq!(info.metadata.len(), 3);
        }
        let rule = Policy::default().rule(Action::TransportPackage, Env::Production);
        let status = refusal_status(
            Refusal::MfaRequired,
            Action::TransportPackage,
            Env::Production,
            &rule,
        );
        assert!(
            status.message().contains("within the last 8 hours"),
            "{}",
            status.message()
        );
        let status = refusal_status(
            Refusal::NodePermissionMissing,
            Action::TransportPackage,
            Env::Production,
            &rule,
        );
        assert!(status.message().contains("transport node permission"));
        let rule = Policy::default().rule(Action::ChangeNodePermissions, Env::Production);
        let status = refusal_status(
            Refusal::NodePermissionMissing,
            Action::ChangeNodePermissions,
            Env::Production,
            &rule,
        );
        assert!(status.message().contains("Technical Contact"));
    }

    #[test]
    fn refusals_without_a_padlock_report_max_age_zero() {
        let rule = Policy::default().rule(Action::GetNodeDetails, Env::Test);
        let status = refusal_status(
            Refusal::NodePermissionMissing,
            Action::GetNodeDetails,
            Env::Test,
            &rule,
        );
        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.metadata["max_age"], "0");
        assert_eq!(info.metadata["environment"], "test");
    }
}
