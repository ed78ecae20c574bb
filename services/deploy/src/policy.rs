//! The padlock policy and the step-up decision (DESIGN.md, "The step-up
//! rule"): may this caller do this action on this environment now? A pure
//! function of the verified token, the policy, the caller's node permissions
//! and the time; no I/O, so handlers call it before anything changes and the
//! tests run it as a table.

use std::fmt;

use padlock_proto::Reason;
use padlock_proto::deploy::v1 as pb;
use padlock_token::{Claims, TokenError};
use tonic::{Code, Status};

/// How long a verified second factor counts for a padlocked action unless the
/// policy says otherwise: eight hours (DESIGN.md, "The step-up rule").
pub const DEFAULT_MAX_AGE_SECS: i64 = 8 * 60 * 60;

/// How far `mfa_at` may lie in the future: the clock skew tolerated between
/// auth and deploy, the same 60 s the token verifier allows (DESIGN.md,
/// "Identity, sessions and tokens").
pub const MFA_LEEWAY_SECS: i64 = padlock_token::LEEWAY_SECS;

/// An app's environments, in the order a package moves through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Env {
    Test,
    Acceptance,
    Production,
}

impl Env {
    pub const ALL: [Env; 3] = [Env::Test, Env::Acceptance, Env::Production];

    /// Where a package goes after this environment: test -> acceptance ->
    /// production; nothing after production.
    pub fn next(self) -> Option<Env> {
        match self {
            Env::Test => Some(Env::Acceptance),
            Env::Acceptance => Some(Env::Production),
            Env::Production => None,
        }
    }

    /// Where a package must have run before it may come here: nothing
    /// before test.
    pub fn previous(self) -> Option<Env> {
        Env::ALL.into_iter().find(|e| e.next() == Some(self))
    }

    /// `None` for `ENVIRONMENT_UNSPECIFIED` and unknown values.
    pub fn from_proto(value: i32) -> Option<Self> {
        match pb::Environment::try_from(value).ok()? {
            pb::Environment::Unspecified => None,
            pb::Environment::Test => Some(Env::Test),
            pb::Environment::Acceptance => Some(Env::Acceptance),
            pb::Environment::Production => Some(Env::Production),
        }
    }

    pub fn to_proto(self) -> i32 {
        match self {
            Env::Test => pb::Environment::Test,
            Env::Acceptance => pb::Environment::Acceptance,
            Env::Production => pb::Environment::Production,
        }
        .into()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Env::Test => "test",
            Env::Acceptance => "acceptance",
            Env::Production => "production",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node permission: what a member may do on one environment of one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Deploy and transport packages.
    Transport,
    /// Start, stop, read the node's details.
    Operate,
    /// Download and restore backups: the environment's data.
    Backups,
    Logs,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::Transport,
        Permission::Operate,
        Permission::Backups,
        Permission::Logs,
    ];

    /// `None` for `NODE_PERMISSION_UNSPECIFIED` and unknown values.
    pub fn from_proto(value: i32) -> Option<Self> {
        match pb::NodePermission::try_from(value).ok()? {
            pb::NodePermission::Unspecified => None,
            pb::NodePermission::Transport => Some(Permission::Transport),
            pb::NodePermission::Operate => Some(Permission::Operate),
            pb::NodePermission::Backups => Some(Permission::Backups),
            pb::NodePermission::Logs => Some(Permission::Logs),
        }
    }

    pub fn to_proto(self) -> i32 {
        match self {
            Permission::Transport => pb::NodePermission::Transport,
            Permission::Operate => pb::NodePermission::Operate,
            Permission::Backups => pb::NodePermission::Backups,
            Permission::Logs => pb::NodePermission::Logs,
        }
        .into()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Transport => "transport",
            Permission::Operate => "operate",
            Permission::Backups => "backups",
            Permission::Logs => "logs",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the policy can put a padlock on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    DeployPackage,
    TransportPackage,
    GetNodeDetails,
    DownloadBackup,
    ChangeNodePermissions,
    /// Adding, removing, promoting or demoting team members: it changes who
    /// can reach production, whichever environment the caller looks at.
    ChangeTeam,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::DeployPackage,
        Action::TransportPackage,
        Action::GetNodeDetails,
        Action::DownloadBackup,
        Action::ChangeNodePermissions,
        Action::ChangeTeam,
    ];

    /// `None` for `ACTION_UNSPECIFIED` and unknown values.
    pub fn from_proto(value: i32) -> Option<Self> {
        match pb::Action::try_from(value).ok()? {
            pb::Action::Unspecified => None,
            pb::Action::DeployPackage => Some(Action::DeployPackage),
            pb::Action::TransportPackage => Some(Action::TransportPackage),
            pb::Action::GetNodeDetails => Some(Action::GetNodeDetails),
            pb::Action::DownloadBackup => Some(Action::DownloadBackup),
            pb::Action::ChangeNodePermissions => Some(Action::ChangeNodePermissions),
            pb::Action::ChangeTeam => Some(Action::ChangeTeam),
        }
    }

    pub fn to_proto(self) -> i32 {
        match self {
            Action::DeployPackage => pb::Action::DeployPackage,
            Action::TransportPackage => pb::Action::TransportPackage,
            Action::GetNodeDetails => pb::Action::GetNodeDetails,
            Action::DownloadBackup => pb::Action::DownloadBackup,
            Action::ChangeNodePermissions => pb::Action::ChangeNodePermissions,
            Action::ChangeTeam => pb::Action::ChangeTeam,
        }
        .into()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::DeployPackage => "deploy_package",
            Action::TransportPackage => "transport_package",
            Action::GetNodeDetails => "get_node_details",
            Action::DownloadBackup => "download_backup",
            Action::ChangeNodePermissions => "change_node_permissions",
            Action::ChangeTeam => "change_team",
        }
    }

    /// The inverse of [`Action::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// What the caller must hold on the environment (DESIGN.md, "Roles and
    /// node permissions"): only the Technical Contact grants or revokes.
    pub fn requirement(self) -> Requirement {
        match self {
            Action::DeployPackage | Action::TransportPackage => {
                Requirement::Permission(Permission::Transport)
            }
            Action::GetNodeDetails => Requirement::Permission(Permission::Operate),
            Action::DownloadBackup => Requirement::Permission(Permission::Backups),
            Action::ChangeNodePermissions | Action::ChangeTeam => Requirement::TechnicalContact,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What step 4 of the step-up rule checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// This node permission on the environment (the app's Technical Contact
    /// holds every one implicitly).
    Permission(Permission),
    /// Being the app's Technical Contact.
    TechnicalContact,
}

impl Requirement {
    /// The contract's `ActionPolicy.permission`: unspecified (0) when the
    /// Technical Contact is needed instead.
    pub fn to_proto(self) -> i32 {
        match self {
            Requirement::Permission(p) => p.to_proto(),
            Requirement::TechnicalContact => pb::NodePermission::Unspecified.into(),
        }
    }
}

/// The policy for one action on one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Whether the action needs a recent second factor.
    pub padlock: bool,
    /// How old `mfa_at` may be, in seconds; the action's configured value,
    /// checked only when `padlock` is set.
    pub max_age: i64,
    pub requirement: Requirement,
}

impl Rule {
    /// The max age as the contract reports it (`ActionPolicy`,
    /// `CheckAccessResponse`, refusal metadata): 0 without a padlock.
    pub fn max_age_seconds(&self) -> i64 {
        if self.padlock { self.max_age } else { 0 }
    }
}

/// Which actions carry a padlock on which environment, and for how long a
/// second factor counts per action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Indexed by `Action` then `Env`.
    padlock: [[bool; 3]; Action::ALL.len()],
    /// Indexed by `Action`.
    max_age: [i64; Action::ALL.len()],
}

impl Default for Policy {
    /// The default: every action carries a padlock on production and none
    /// elsewhere, except a team change, which carries one everywhere (a
    /// member added on any environment's page can reach production); a
    /// second factor counts for eight hours.
    fn default() -> Self {
        let mut padlock = [[false; 3]; Action::ALL.len()];
        for row in &mut padlock {
            row[Env::Production.index()] = true;
        }
        padlock[Action::ChangeTeam.index()] = [true; 3];
        Self {
            padlock,
            max_age: [DEFAULT_MAX_AGE_SECS; Action::ALL.len()],
        }
    }
}

impl Policy {
    /// Sets how old `mfa_at` may be for `action` on every environment.
    /// `seconds` should be positive ([`parse_max_age_override`] checks).
    pub fn with_max_age(mut self, action: Action, seconds: i64) -> Self {
        self.max_age[action.index()] = seconds;
        self
    }

    /// Puts a padlock on `action` in `env`, or takes it off.
    pub fn with_padlock(mut self, action: Action, env: Env, padlock: bool) -> Self {
        self.padlock[action.index()][env.index()] = padlock;
        self
    }

    pub fn rule(&self, action: Action, env: Env) -> Rule {
        Rule {
            padlock: self.padlock[action.index()][env.index()],
            max_age: self.max_age[action.index()],
            requirement: action.requirement(),
        }
    }

    /// Every action on every environment, in contract order (for
    /// `ListActions`).
    pub fn rules(&self) -> impl Iterator<Item = (Action, Env, Rule)> + '_ {
        Action::ALL.into_iter().flat_map(move |action| {
            Env::ALL
                .into_iter()
                .map(move |env| (action, env, self.rule(action, env)))
        })
    }
}

/// Parses one `ACTION=SECONDS` max-age override from the command line, e.g.
/// `transport_package=3600`. The seconds must be a positive integer.
pub fn parse_max_age_override(value: &str) -> Result<(Action, i64), String> {
    let names = || {
        Action::ALL
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (name, seconds) = value.split_once('=').ok_or_else(|| {
        format!("expected ACTION=SECONDS, e.g. transport_package=3600, got {value:?}")
    })?;
    let action = Action::parse(name.trim())
        .ok_or_else(|| format!("unknown action {name:?}; expected one of {}", names()))?;
    let seconds: i64 = seconds
        .trim()
        .parse()
        .map_err(|_| format!("max age for {action} must be whole seconds, got {seconds:?}"))?;
    if seconds <= 0 {
        return Err(format!(
            "max age for {action} must be positive, got {seconds}"
        ));
    }
    Ok((action, seconds))
}

/// What the caller holds, as the store knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Ids of the apps the caller is the Technical Contact of.
    pub technical_contact_of: Vec<String>,
    pub grants: Vec<Grant>,
}

/// One node permission held on one environment of one app.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    pub app_id: String,
    pub env: Env,
    pub permission: Permission,
}

impl Holdings {
    pub fn is_technical_contact(&self, app_id: &str) -> bool {
        self.technical_contact_of.iter().any(|a| a == app_id)
    }

    /// Whether `requirement` holds on `env` of `app_id`. The app's Technical
    /// Contact holds every node permission of that app implicitly.
    pub fn satisfies(&self, requirement: Requirement, app_id: &str, env: Env) -> bool {
        if self.is_technical_contact(app_id) {
            return true;
        }
        match requirement {
            Requirement::TechnicalContact => false,
            Requirement::Permission(permission) => self
                .grants
                .iter()
                .any(|g| g.app_id == app_id && g.env == env && g.permission == permission),
        }
    }
}

/// Why an action was refused, in the order the step-up rule checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    TokenInvalid,
    MfaRequired,
    MfaExpired,
    NodePermissionMissing,
}

impl Refusal {
    /// The `google.rpc.ErrorInfo` reason clients branch on.
    pub fn reason(self) -> Reason {
        match self {
            Refusal::TokenInvalid => Reason::TokenInvalid,
            Refusal::MfaRequired => Reason::MfaRequired,
            Refusal::MfaExpired => Reason::MfaExpired,
            Refusal::NodePermissionMissing => Reason::NodePermissionMissing,
        }
    }

    /// "Who are you?" versus "you may not" (STYLE.md, "Errors").
    pub fn code(self) -> Code {
        match self {
            Refusal::TokenInvalid | Refusal::MfaRequired | Refusal::MfaExpired => {
                Code::Unauthenticated
            }
            Refusal::NodePermissionMissing => Code::PermissionDenied,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason().as_str_name())
    }
}

/// The outcome of [`decide`] with what a client needs to act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Result<(), Refusal>,
    /// The rule that applied.
    pub rule: Rule,
    /// `mfa_at + max_age`: when the caller's second factor stops counting
    /// for this action; `None` without `mfa_at` (or without valid claims).
    pub mfa_expires_at: Option<i64>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// May the bearer of `token` do `action` on `env` of `app_id` at `now`?
///
/// Checks in DESIGN.md's order and stops at the first failure:
/// 1. a valid token, else `TOKEN_INVALID`;
/// 2. with a padlock, `mfa_at` present, else `MFA_REQUIRED`;
/// 3. with a padlock, `now - mfa_at <= max_age` and `mfa_at` no further than
///    [`MFA_LEEWAY_SECS`] in the future, else `MFA_EXPIRED`;
/// 4. the rule's requirement held on `(app_id, env)`, else
///    `NODE_PERMISSION_MISSING`.
///
/// `Err(TokenError::MfaInFuture)` is the verifier's step-3 finding on an
/// otherwise valid token, so on a padlocked action it is `MFA_EXPIRED`.
/// Without a padlock it is `TOKEN_INVALID`: the verifier returns no claims
/// then, so step 4 cannot run, and a token claiming a second factor from the
/// future is not one to act on.
pub fn decide(
    token: Result<&Claims, &TokenError>,
    policy: &Policy,
    action: Action,
    app_id: &str,
    env: Env,
    holdings: &Holdings,
    now: i64,
) -> Decision {
    let rule = policy.rule(action, env);
    let decision = |outcome, mfa_expires_at| Decision {
        outcome,
        rule,
        mfa_expires_at,
    };
    let claims = match token {
        Ok(claims) => claims,
        Err(TokenError::MfaInFuture) if rule.padlock => {
            return decision(Err(Refusal::MfaExpired), None);
        }
        Err(_) => return decision(Err(Refusal::TokenInvalid), None),
    };
    let mfa_expires_at = claims.mfa_at.map(|at| at.saturating_add(rule.max_age));
    if rule.padlock
        && let Err(refusal) = second_factor(claims, rule.max_age, now)
    {
        return decision(Err(refusal), mfa_expires_at);
    }
    if !holdings.satisfies(rule.requirement, app_id, env) {
        return decision(Err(Refusal::NodePermissionMissing), mfa_expires_at);
    }
    decision(Ok(()), mfa_expires_at)
}

/// Steps 2 and 3 of the rule: a second factor verified at most `max_age`
/// seconds before `now`, and not further than [`MFA_LEEWAY_SECS`] after it.
pub fn second_factor(claims: &Claims, max_age: i64, now: i64) -> Result<(), Refusal> {
    let Some(mfa_at) = claims.mfa_at else {
        return Err(Refusal::MfaRequired);
    };
    let too_old = now.saturating_sub(mfa_at) > max_age;
    let from_the_future = mfa_at > now.saturating_add(MFA_LEEWAY_SECS);
    if too_old || from_the_future {
        return Err(Refusal::MfaExpired);
    }
    Ok(())
}

/// The status refusing `CreateApp` for a stale or missing second factor:
/// as [`refusal_status`], with metadata `max_age` and `action` =
/// `create_app` (no environment: the app does not exist yet).
pub fn create_app_refusal(refusal: Refusal, max_age: i64) -> Status {
    let window = human_duration(max_age);
    padlock_runtime::status::refusal(
        refusal.code(),
        refusal.reason(),
        format!(
            "creating an app names who reaches its production, so it needs a second factor \
             verified within the last {window}; verify your second factor and try again"
        ),
        [
            ("max_age", max_age.to_string()),
            ("action", "create_app".to_owned()),
        ],
    )
}

/// The gRPC status for `refusal`: UNAUTHENTICATED or PERMISSION_DENIED with
/// `google.rpc.ErrorInfo` (domain `padlock`, the reason, metadata `max_age`,
/// `action`, `environment`), the gRPC form of RFC 9470's
/// `insufficient_user_authentication`.
pub fn refusal_status(refusal: Refusal, action: Action, env: Env, rule: &Rule) -> Status {
    let window = human_duration(rule.max_age);
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
    padlock_runtime::status::refusal(
        refusal.code(),
        reason_for(refusal, rule),
        message,
        [
            ("max_age", rule.max_age_seconds().to_string()),
            ("action", action.as_str().to_owned()),
            ("environment", env.as_str().to_owned()),
        ],
    )
}

/// The `ErrorInfo.reason` for `refusal` under `rule`: as
/// [`Refusal::reason`], except that a missing requirement that is "be the
/// Technical Contact" says so (`TECHNICAL_CONTACT_REQUIRED`, as the team
/// RPCs do), since no node permission would help.
pub fn reason_for(refusal: Refusal, rule: &Rule) -> Reason {
    match (refusal, rule.requirement) {
        (Refusal::NodePermissionMissing, Requirement::TechnicalContact) => {
            Reason::TechnicalContactRequired
        }
        _ => refusal.reason(),
    }
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

/// "8 hours", "1 hour", "30 minutes", "90 seconds": the largest whole unit.
fn human_duration(seconds: i64) -> String {
    let unit = |n: i64, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    if seconds > 0 && seconds % 3600 == 0 {
        unit(seconds / 3600, "hour")
    } else if seconds > 0 && seconds % 60 == 0 {
        unit(seconds / 60, "minute")
    } else {
        unit(seconds, "second")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::Signer as _;
    use padlock_token::{KeyRing, Verifier};
    use serde_json::{Value, json};
    use tonic_types::StatusExt as _;

    const ISS: &str = "https://auth.padlock.test";
    const AUD: &str = "padlock-deploy";
    const NOW: i64 = 1_700_000_000;
    const APP: &str = "app-shop";
    const OTHER_APP: &str = "app-other";

    fn claims(mfa_at: Option<i64>) -> Claims {
        Claims {
            iss: ISS.into(),
            aud: AUD.into(),
            sub: "user-1".into(),
            preferred_username: "alice".into(),
            roles: vec![],
            sid: "session-1".into(),
            iat: NOW - 30,
            exp: NOW + 570,
            jti: "jti-1".into(),
            auth_time: NOW - 40_000,
            amr: vec!["pwd".into()],
            acr: "1".into(),
            mfa_at,
            mfa_method: mfa_at.map(|_| "totp".to_owned()),
        }
    }

    fn grant(app_id: &str, env: Env, permission: Permission) -> Grant {
        Grant {
            app_id: app_id.into(),
            env,
            permission,
        }
    }

    fn holding(grants: Vec<Grant>) -> Holdings {
        Holdings {
            technical_contact_of: vec![],
            grants,
        }
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum TokenKind {
        Valid,
        InvalidSignature,
        Expired,
        WrongAudience,
        WrongIssuer,
        UnknownKid,
        AlgNone,
        Hs256WithPublicKey,
    }

    const TOKEN_KINDS: [TokenKind; 8] = [
        TokenKind::Valid,
        TokenKind::InvalidSignature,
        TokenKind::Expired,
        TokenKind::WrongAudience,
        TokenKind::WrongIssuer,
        TokenKind::UnknownKid,
        TokenKind::AlgNone,
        TokenKind::Hs256WithPublicKey,
    ];

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum MfaKind {
        Absent,
        Fresh,
        ExactlyMaxAge,
        MaxAgePlusOne,
        FutureBeyondLeeway,
    }

    const MFA_KINDS: [MfaKind; 5] = [
        MfaKind::Absent,
        MfaKind::Fresh,
        MfaKind::ExactlyMaxAge,
        MfaKind::MaxAgePlusOne,
        MfaKind::FutureBeyondLeeway,
    ];

    impl MfaKind {
        fn mfa_at(self) -> Option<i64> {
            match self {
                MfaKind::Absent => None,
                MfaKind::Fresh => Some(NOW - 300),
                MfaKind::ExactlyMaxAge => Some(NOW - DEFAULT_MAX_AGE_SECS),
                MfaKind::MaxAgePlusOne => Some(NOW - DEFAULT_MAX_AGE_SECS - 1),
                MfaKind::FutureBeyondLeeway => Some(NOW + MFA_LEEWAY_SECS + 1),
            }
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum PermKind {
        Present,
        Absent,
        OtherEnvironment,
        OtherApp,
    }

    const PERM_KINDS: [PermKind; 4] = [
        PermKind::Present,
        PermKind::Absent,
        PermKind::OtherEnvironment,
        PermKind::OtherApp,
    ];

    impl PermKind {
        /// The caller's holdings for transport_package on production of APP.
        fn holdings(self) -> Holdings {
            let grants = match self {
                PermKind::Present => vec![grant(APP, Env::Production, Permission::Transport)],
                // Other permissions on the right environment do not count.
                PermKind::Absent => vec![
                    grant(APP, Env::Production, Permission::Operate),
                    grant(APP, Env::Production, Permission::Backups),
                ],
                PermKind::OtherEnvironment => vec![
                    grant(APP, Env::Test, Permission::Transport),
                    grant(APP, Env::Acceptance, Permission::Transport),
                ],
                PermKind::OtherApp => {
                    vec![grant(OTHER_APP, Env::Production, Permission::Transport)]
                }
            };
            holding(grants)
        }
    }

    /// A real token of `kind` with `mfa_at`, for a verifier that trusts
    /// `ring`: signed with the ring, or forged by hand.
    fn token(ring: &KeyRing, kind: TokenKind, mfa_at: Option<i64>) -> String {
        let good = claims(mfa_at);
        let kid = ring.current.kid().to_owned();
        match kind {
            TokenKind::Valid => ring.sign(&good).unwrap(),
            TokenKind::InvalidSignature => {
                // Our kid and header, signed by a key that is not ours.
                let stranger = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
                let input = format!(
                    "{}.{}",
                    b64(&json!({"alg": "EdDSA", "typ": "JWT", "kid": kid})),
                    b64(&serde_json::to_value(&good).unwrap())
                );
                let sig = stranger.sign(input.as_bytes());
                format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
            }
            TokenKind::Expired => ring
                .sign(&Claims {
                    iat: NOW - 3_600,
                    exp: NOW - 3_000,
                    ..good
                })
                .unwrap(),
            TokenKind::WrongAudience => ring
                .sign(&Claims {
                    aud: "padlock-gateway".into(),
                    ..good
                })
                .unwrap(),
            TokenKind::WrongIssuer => ring
                .sign(&Claims {
                    iss: "https://evil.example".into(),
                    ..good
                })
                .unwrap(),
            TokenKind::UnknownKid => KeyRing::generate().sign(&good).unwrap(),
            TokenKind::AlgNone => format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
                b64(&serde_json::to_value(&good).unwrap())
            ),
            TokenKind::Hs256WithPublicKey => {
                // The classic confusion attack: HMAC keyed with the public key.
                let public = ring.current.public_jwk();
                let raw = URL_SAFE_NO_PAD.decode(&public.x).unwrap();
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
                header.kid = Some(kid);
                jsonwebtoken::encode(
                    &header,
                    &good,
                    &jsonwebtoken::EncodingKey::from_secret(&raw),
                )
                .unwrap()
            }
        }
    }

    /// The expectation, from DESIGN.md's precedence, independent of `decide`.
    fn expected(token: TokenKind, mfa: MfaKind, perm: PermKind) -> Result<(), Refusal> {
        if token != TokenKind::Valid {
            return Err(Refusal::TokenInvalid);
        }
        match mfa {
            MfaKind::Absent => return Err(Refusal::MfaRequired),
            MfaKind::MaxAgePlusOne | MfaKind::FutureBeyondLeeway => {
                return Err(Refusal::MfaExpired);
            }
            MfaKind::Fresh | MfaKind::ExactlyMaxAge => {}
        }
        match perm {
            PermKind::Present => Ok(()),
            PermKind::Absent | PermKind::OtherEnvironment | PermKind::OtherApp => {
                Err(Refusal::NodePermissionMissing)
            }
        }
    }

    #[test]
    fn transport_to_production_follows_the_step_up_rule_for_every_combination() {
        let ring = KeyRing::generate();
        let verifier = Verifier::new(&ring.jwks(), ISS, AUD);
        let policy = Policy::default();
        let mut rows = 0;
        for token_kind in TOKEN_KINDS {
            for mfa in MFA_KINDS {
                let jwt = token(&ring, token_kind, mfa.mfa_at());
                let verified = verifier.verify(&jwt, NOW);
                if token_kind != TokenKind::Valid {
                    // The forged token must fail for its own reason, not by accident.
                    assert!(verified.is_err(), "{token_kind:?} {mfa:?} verified");
                }
                for perm in PERM_KINDS {
                    let decision = decide(
                        verified.as_ref(),
                        &policy,
                        Action::TransportPackage,
                        APP,
                        Env::Production,
                        &perm.holdings(),
                        NOW,
                    );
                    assert_eq!(
                        decision.outcome,
                        expected(token_kind, mfa, perm),
                        "token {token_kind:?}, mfa_at {mfa:?}, permission {perm:?} ({verified:?})"
                    );
                    assert!(decision.rule.padlock);
                    assert_eq!(decision.rule.max_age, DEFAULT_MAX_AGE_SECS);
                    rows += 1;
                }
            }
        }
        assert_eq!(rows, 8 * 5 * 4);
    }

    #[test]
    fn forged_tokens_fail_verification_for_the_expected_reason() {
        let ring = KeyRing::generate();
        let verifier = Verifier::new(&ring.jwks(), ISS, AUD);
        let fresh = MfaKind::Fresh.mfa_at();
        let cases = [
            (TokenKind::InvalidSignature, TokenError::Signature),
            (TokenKind::Expired, TokenError::Expired),
            (TokenKind::WrongAudience, TokenError::Audience),
            (TokenKind::WrongIssuer, TokenError::Issuer),
            (TokenKind::AlgNone, TokenError::Algorithm),
            (TokenKind::Hs256WithPublicKey, TokenError::Algorithm),
        ];
        for (kind, error) in cases {
            assert_eq!(
                verifier.verify(&token(&ring, kind, fresh), NOW),
                Err(error),
                "{kind:?}"
            );
        }
        assert!(matches!(
            verifier.verify(&token(&ring, TokenKind::UnknownKid, fresh), NOW),
            Err(TokenError::UnknownKid(_))
        ));
        assert_eq!(
            verifier.verify(
                &token(
                    &ring,
                    TokenKind::Valid,
                    MfaKind::FutureBeyondLeeway.mfa_at()
                ),
                NOW
            ),
            Err(TokenError::MfaInFuture)
        );
    }

    #[test]
    fn mfa_within_the_leeway_in_the_future_still_counts() {
        let holdings = PermKind::Present.holdings();
        let at = |mfa_at| {
            decide(
                Ok(&claims(Some(mfa_at))),
                &Policy::default(),
                Action::TransportPackage,
                APP,
                Env::Production,
                &holdings,
                NOW,
            )
            .outcome
        };
        assert_eq!(at(NOW + MFA_LEEWAY_SECS), Ok(()));
        // Claims that did not pass through the verifier are checked too.
        assert_eq!(at(NOW + MFA_LEEWAY_SECS + 1), Err(Refusal::MfaExpired));
    }

    #[test]
    fn mfa_in_future_from_the_verifier_is_expired_only_when_padlocked() {
        let holdings = PermKind::Present.holdings();
        let policy = Policy::default();
        let run = |env| {
            decide(
                Err(&TokenError::MfaInFuture),
                &policy,
                Action::TransportPackage,
                APP,
                env,
                &holdings,
                NOW,
            )
            .outcome
        };
        assert_eq!(run(Env::Production), Err(Refusal::MfaExpired));
        assert_eq!(run(Env::Test), Err(Refusal::TokenInvalid));
    }

    #[test]
    fn unpadlocked_actions_ignore_the_second_factor() {
        let policy = Policy::default();
        let test_grant = holding(vec![grant(APP, Env::Test, Permission::Transport)]);
        for mfa in [
            MfaKind::Absent,
            MfaKind::Fresh,
            MfaKind::MaxAgePlusOne,
            MfaKind::FutureBeyondLeeway,
        ] {
            let c = claims(mfa.mfa_at());
            let run = |holdings: &Holdings| {
                decide(
                    Ok(&c),
                    &policy,
                    Action::TransportPackage,
                    APP,
                    Env::Test,
                    holdings,
                    NOW,
                )
            };
            let allowed = run(&test_grant);
            assert_eq!(allowed.outcome, Ok(()), "{mfa:?}");
            assert!(!allowed.rule.padlock);
            // The permission still counts without a padlock.
            assert_eq!(
                run(&holding(vec![])).outcome,
                Err(Refusal::NodePermissionMissing),
                "{mfa:?}"
            );
        }
        // And an invalid token is still refused.
        assert_eq!(
            decide(
                Err(&TokenError::Signature),
                &policy,
                Action::TransportPackage,
                APP,
                Env::Test,
                &test_grant,
                NOW,
            )
            .outcome,
            Err(Refusal::TokenInvalid)
        );
    }

    #[test]
    fn technical_contact_holds_every_permission_of_their_app_only() {
        let policy = Policy::default();
        let tc = Holdings {
            technical_contact_of: vec![APP.into()],
            grants: vec![],
        };
        let fresh = claims(MfaKind::Fresh.mfa_at());
        for action in Action::ALL {
            for env in Env::ALL {
                let run = |app| decide(Ok(&fresh), &policy, action, app, env, &tc, NOW).outcome;
                assert_eq!(run(APP), Ok(()), "{action} on {env}");
                assert_eq!(
                    run(OTHER_APP),
                    Err(Refusal::NodePermissionMissing),
                    "{action} on {env} of another app"
                );
            }
        }
        // Being Technical Contact does not replace the second factor.
        assert_eq!(
            decide(
                Ok(&claims(None)),
                &policy,
                Action::DownloadBackup,
                APP,
                Env::Production,
                &tc,
                NOW
            )
            .outcome,
            Err(Refusal::MfaRequired)
        );
    }

    #[test]
    fn changing_node_permissions_needs_the_technical_contact_not_a_grant() {
        let policy = Policy::default();
        let fresh = claims(MfaKind::Fresh.mfa_at());
        let every_grant = holding(
            Permission::ALL
                .into_iter()
                .map(|p| grant(APP, Env::Production, p))
                .collect(),
        );
        let run = |holdings: &Holdings| {
            decide(
                Ok(&fresh),
                &policy,
                Action::ChangeNodePermissions,
                APP,
                Env::Production,
                holdings,
                NOW,
            )
        };
        let refused = run(&every_grant);
        assert_eq!(refused.outcome, Err(Refusal::NodePermissionMissing));
        assert_eq!(refused.rule.requirement, Requirement::TechnicalContact);
        let tc = Holdings {
            technical_contact_of: vec![APP.into()],
            grants: vec![],
        };
        assert_eq!(run(&tc).outcome, Ok(()));
    }

    #[test]
    fn each_action_needs_its_own_permission() {
        let policy = Policy::default();
        let fresh = claims(MfaKind::Fresh.mfa_at());
        let cases = [
            (Action::DeployPackage, Permission::Transport),
            (Action::TransportPackage, Permission::Transport),
            (Action::GetNodeDetails, Permission::Operate),
            (Action::DownloadBackup, Permission::Backups),
        ];
        for (action, needed) in cases {
            for held in Permission::ALL {
                let h = holding(vec![grant(APP, Env::Production, held)]);
                let outcome =
                    decide(Ok(&fresh), &policy, action, APP, Env::Production, &h, NOW).outcome;
                let want = if held == needed {
                    Ok(())
                } else {
                    Err(Refusal::NodePermissionMissing)
                };
                assert_eq!(outcome, want, "{action} holding {held}");
            }
        }
    }

    #[test]
    fn with_max_age_moves_the_boundary_for_that_action_only() {
        let policy = Policy::default().with_max_age(Action::TransportPackage, 3_600);
        let holdings = holding(vec![
            grant(APP, Env::Production, Permission::Transport),
            grant(APP, Env::Production, Permission::Operate),
        ]);
        let run = |action, age: i64| {
            decide(
                Ok(&claims(Some(NOW - age))),
                &policy,
                action,
                APP,
                Env::Production,
                &holdings,
                NOW,
            )
        };
        let edge = run(Action::TransportPackage, 3_600);
        assert_eq!(edge.outcome, Ok(()));
        assert_eq!(edge.mfa_expires_at, Some(NOW));
        assert_eq!(edge.rule.max_age, 3_600);
        assert_eq!(
            run(Action::TransportPackage, 3_601).outcome,
            Err(Refusal::MfaExpired)
        );
        // Other actions keep the default eight hours.
        assert_eq!(run(Action::GetNodeDetails, 3_601).outcome, Ok(()));
        assert_eq!(
            run(Action::GetNodeDetails, DEFAULT_MAX_AGE_SECS + 1).outcome,
            Err(Refusal::MfaExpired)
        );
    }

    #[test]
    fn with_padlock_puts_a_padlock_on_any_environment() {
        let policy = Policy::default().with_padlock(Action::DeployPackage, Env::Acceptance, true);
        let holdings = holding(vec![grant(APP, Env::Acceptance, Permission::Transport)]);
        let run = |action| {
            decide(
                Ok(&claims(None)),
                &policy,
                action,
                APP,
                Env::Acceptance,
                &holdings,
                NOW,
            )
            .outcome
        };
        assert_eq!(run(Action::DeployPackage), Err(Refusal::MfaRequired));
        assert_eq!(run(Action::TransportPackage), Ok(()));
        let off = Policy::default().with_padlock(Action::DeployPackage, Env::Production, false);
        assert!(!off.rule(Action::DeployPackage, Env::Production).padlock);
    }

    #[test]
    fn mfa_expires_at_is_mfa_at_plus_max_age() {
        let holdings = PermKind::Present.holdings();
        let d = decide(
            Ok(&claims(Some(NOW - 100))),
            &Policy::default(),
            Action::TransportPackage,
            APP,
            Env::Production,
            &holdings,
            NOW,
        );
        assert_eq!(d.mfa_expires_at, Some(NOW - 100 + DEFAULT_MAX_AGE_SECS));
        assert!(d.allowed());
        let none = decide(
            Ok(&claims(None)),
            &Policy::default(),
            Action::TransportPackage,
            APP,
            Env::Production,
            &holdings,
            NOW,
        );
        assert_eq!(none.mfa_expires_at, None);
        assert!(!none.allowed());
    }

    #[test]
    fn default_policy_padlocks_production_and_every_team_change() {
        let policy = Policy::default();
        let rules: Vec<_> = policy.rules().collect();
        assert_eq!(rules.len(), Action::ALL.len() * Env::ALL.len());
        for (action, env, rule) in rules {
            let padlocked = env == Env::Production || action == Action::ChangeTeam;
            assert_eq!(rule.padlock, padlocked, "{action} on {env}");
            assert_eq!(rule.max_age, DEFAULT_MAX_AGE_SECS);
            assert_eq!(
                rule.max_age_seconds(),
                if padlocked { DEFAULT_MAX_AGE_SECS } else { 0 }
            );
            assert_eq!(rule.requirement, action.requirement());
        }
        assert_eq!(DEFAULT_MAX_AGE_SECS, 28_800);
    }

    #[test]
    fn refusal_status_carries_code_reason_and_metadata() {
        let policy = Policy::default().with_max_age(Action::DownloadBackup, 3_600);
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

    #[test]
    fn proto_values_round_trip_and_unspecified_is_none() {
        for env in Env::ALL {
            assert_eq!(Env::from_proto(env.to_proto()), Some(env));
        }
        for p in Permission::ALL {
            assert_eq!(Permission::from_proto(p.to_proto()), Some(p));
        }
        for a in Action::ALL {
            assert_eq!(Action::from_proto(a.to_proto()), Some(a));
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Env::from_proto(0), None);
        assert_eq!(Env::from_proto(99), None);
        assert_eq!(Permission::from_proto(0), None);
        assert_eq!(Action::from_proto(0), None);
        assert_eq!(Action::from_proto(-1), None);
        assert_eq!(Env::Production.to_proto(), 3);
        assert_eq!(Action::ChangeNodePermissions.to_proto(), 5);
        assert_eq!(Requirement::TechnicalContact.to_proto(), 0);
        assert_eq!(
            Requirement::Permission(Permission::Backups).to_proto(),
            Permission::Backups.to_proto()
        );
    }

    #[test]
    fn environments_follow_test_acceptance_production() {
        assert_eq!(Env::Test.next(), Some(Env::Acceptance));
        assert_eq!(Env::Acceptance.next(), Some(Env::Production));
        assert_eq!(Env::Production.next(), None);
        let names: Vec<_> = Env::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(names, ["test", "acceptance", "production"]);
        let names: Vec<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(names, ["transport", "operate", "backups", "logs"]);
    }

    #[test]
    fn max_age_overrides_parse_action_and_positive_seconds() {
        assert_eq!(
            parse_max_age_override("transport_package=3600"),
            Ok((Action::TransportPackage, 3_600))
        );
        assert_eq!(
            parse_max_age_override("download_backup=900"),
            Ok((Action::DownloadBackup, 900))
        );
        for bad in [
            "transport_package",
            "transport_package=",
            "transport_package=abc",
            "transport_package=0",
            "transport_package=-5",
            "transport_package=1.5",
            "fly=3600",
            "=3600",
        ] {
            assert!(parse_max_age_override(bad).is_err(), "{bad}");
        }
        let err = parse_max_age_override("fly=3600").unwrap_err();
        assert!(err.contains("transport_package"), "{err}");
    }

    #[test]
    fn durations_read_as_a_person_would_say_them() {
        assert_eq!(human_duration(28_800), "8 hours");
        assert_eq!(human_duration(3_600), "1 hour");
        assert_eq!(human_duration(1_800), "30 minutes");
        assert_eq!(human_duration(90), "90 seconds");
        assert_eq!(human_duration(1), "1 second");
    }
}
