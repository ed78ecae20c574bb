//! The policy's vocabulary: environments, node permissions, padlockable
//! actions, team roles and what an action requires, each a closed set
//! parsed once from its proto or stored name and mapped back here, in one
//! place (docs/design.md, "Roles and node permissions").

use std::fmt;

use padlock_proto::deploy::v1 as pb;

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

    pub(super) fn index(self) -> usize {
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

    /// What the caller must hold on the environment (docs/design.md, "Roles and
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

    pub(super) fn index(self) -> usize {
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

/// A team member's role in an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    TechnicalContact,
    Deploy,
    Member,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::TechnicalContact, Role::Deploy, Role::Member];

    /// `None` for `TEAM_ROLE_UNSPECIFIED` and unknown values.
    pub fn from_proto(value: i32) -> Option<Self> {
        match pb::TeamRole::try_from(value).ok()? {
            pb::TeamRole::Unspecified => None,
            pb::TeamRole::TechnicalContact => Some(Role::TechnicalContact),
            pb::TeamRole::Deploy => Some(Role::Deploy),
            pb::TeamRole::Member => Some(Role::Member),
        }
    }

    pub fn to_proto(self) -> i32 {
        match self {
            Role::TechnicalContact => pb::TeamRole::TechnicalContact,
            Role::Deploy => pb::TeamRole::Deploy,
            Role::Member => pb::TeamRole::Member,
        }
        .into()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::TechnicalContact => "technical_contact",
            Role::Deploy => "deploy",
            Role::Member => "member",
        }
    }

    /// The inverse of [`Role::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// "Only members with DEPLOY may hold node permissions"; the Technical
    /// Contact holds them all.
    pub fn may_hold_permissions(self) -> bool {
        matches!(self, Role::TechnicalContact | Role::Deploy)
    }
}
