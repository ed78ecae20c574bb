//! Operator commands on the server (`padlock-deploy apps create`,
//! `padlock-deploy team add`), the deploy side of `padlock-auth users add`:
//! whoever runs them holds the database already, so they ask no token and
//! no second factor. Each acts on the deploy database directly, in one
//! transaction with its audit record (actor [`CLI_ACTOR`]), and keeps the
//! rules the gRPC use cases keep: unique app names, well-formed names and
//! usernames, and an app never without a Technical Contact.

use padlock_runtime::Clock;

use crate::error::{DeployError, Result};
use crate::grpc::Fields;
use crate::policy::Role;
use crate::store::{self, AuditEvent, Member, Outcome, Store, StoreError};

/// The audit trail's actor for what an operator did on the server.
pub const CLI_ACTOR: &str = "cli";

/// `padlock-deploy apps ...`
#[derive(Debug, clap::Subcommand)]
pub enum AppsCommand {
    /// Creates an app with its Technical Contact; prints the app's id.
    Create {
        #[arg(long)]
        name: String,
        /// The username of the app's first Technical Contact.
        #[arg(long)]
        technical_contact: String,
    },
}

/// `padlock-deploy team ...`
#[derive(Debug, clap::Subcommand)]
pub enum TeamCommand {
    /// Adds a member to an app's team, or changes their role.
    Add {
        /// The app's id or name.
        #[arg(long)]
        app: String,
        #[arg(long)]
        username: String,
        #[arg(long, value_enum)]
        role: TeamRole,
    },
}

/// A team role as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TeamRole {
    Deploy,
    Member,
    #[value(name = "technical_contact")]
    TechnicalContact,
}

impl From<TeamRole> for Role {
    fn from(role: TeamRole) -> Self {
        match role {
            TeamRole::Deploy => Role::Deploy,
            TeamRole::Member => Role::Member,
            TeamRole::TechnicalContact => Role::TechnicalContact,
        }
    }
}

/// Opens the configured database for an operator command, migrating it
/// as serving does.
pub(crate) async fn open_store(options: &crate::Options) -> anyhow::Result<Store> {
    crate::ensure_private_dir(&options.data_dir)?;
    Store::connect(&crate::database_url(options))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))
}

/// Runs an `apps` command on `store`; returns the line to print.
pub(crate) async fn apps(store: &Store, clock: &dyn Clock, command: AppsCommand) -> Result<String> {
    match command {
        AppsCommand::Create {
            name,
            technical_contact,
        } => Ok(create_app(store, clock.unix(), &name, &technical_contact)
            .await?
            .id),
    }
}

/// Runs a `team` command on `store`; returns the line to print.
pub(crate) async fn team(store: &Store, clock: &dyn Clock, command: TeamCommand) -> Result<String> {
    match command {
        TeamCommand::Add {
            app,
            username,
            role,
        } => {
            let (app, before, member) =
                add_team_member(store, clock.unix(), &app, &username, role.into()).await?;
            Ok(match before {
                Some(before) => format!(
                    "{username} on {}: {} -> {}",
                    app.name,
                    before.as_str(),
                    member.role.as_str()
                ),
                None => format!("{username} on {}: {}", app.name, member.role.as_str()),
            })
        }
    }
}

/// Creates the app `name` with `technical_contact` as its Technical
/// Contact, with the audit record of its creation. `AppNameTaken` if an app
/// has that name.
pub async fn create_app(
    store: &Store,
    now: i64,
    name: &str,
    technical_contact: &str,
) -> Result<store::App> {
    let mut fields = Fields::new();
    let name = fields.app_name("name", name);
    fields.username("technical_contact", technical_contact);
    let name = fields.done_with(name)?;
    let new = store::NewApp {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.into_string(),
        technical_contact: technical_contact.to_owned(),
        by: CLI_ACTOR.to_owned(),
        now,
    };
    let audit = audit(
        now,
        "create_app",
        &new.id,
        format!("technical_contact={technical_contact}"),
    );
    match store.create_app(&new, audit).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => return Err(DeployError::AppNameTaken),
        Err(e) => return Err(e.into()),
    }
    store.app(&new.id).await?.ok_or(DeployError::Internal)
}

/// Adds `username` to the team of `app` (its id or its name) as `role`, or
/// changes their role, in one change with its audit record. Refuses to
/// leave the app without a Technical Contact. Returns the app, the role
/// they had before (if any) and the member now.
pub async fn add_team_member(
    store: &Store,
    now: i64,
    app: &str,
    username: &str,
    role: Role,
) -> Result<(store::App, Option<Role>, Member)> {
    let mut fields = Fields::new();
    fields.username("username", username);
    fields.done()?;
    let app_id = app_id(store, app).await?;
    let mut change = store
        .change(&app_id)
        .await?
        .ok_or(DeployError::AppNotFound)?;
    // The same rule as AddTeamMember, read under the app's lock.
    let contacts = &change.app().technical_contacts;
    if role != Role::TechnicalContact && contacts[..] == [username.to_owned()] {
        return Err(DeployError::LastTechnicalContact);
    }
    let app = change.app().clone();
    let before = change.member(username).await?.map(|m| m.role);
    let member = change.put_member(username, role, CLI_ACTOR, now).await?;
    let detail = match before {
        Some(before) => format!(
            "username={username} role={}->{}",
            before.as_str(),
            role.as_str()
        ),
        None => format!("username={username} role={}", role.as_str()),
    };
    change
        .commit(audit(now, "add_team_member", &app_id, detail))
        .await?;
    Ok((app, before, member))
}

/// The id of the app `app` names: an id, else a name.
async fn app_id(store: &Store, app: &str) -> Result<String> {
    if uuid::Uuid::parse_str(app).is_ok() && store.app(app).await?.is_some() {
        return Ok(app.to_owned());
    }
    let mut fields = Fields::new();
    fields.app_name("app", app);
    fields.done()?;
    match store.app_named(app).await? {
        Some(found) => Ok(found.id),
        None => Err(DeployError::AppNotFound),
    }
}

/// The audit record of an operator command on `app_id`: no token, so no
/// second factor to name.
fn audit(now: i64, action: &'static str, app_id: &str, detail: String) -> AuditEvent {
    AuditEvent {
        at: now,
        actor: CLI_ACTOR.to_owned(),
        action,
        app_id: Some(app_id.to_owned()),
        env: None,
        outcome: Outcome::Ok,
        reason: None,
        mfa_at: None,
        mfa_method: None,
        detail,
    }
}

/// A command's error as one line for the operator: which fields are wrong,
/// or what was refused.
pub(crate) fn describe(error: &DeployError) -> String {
    match error {
        DeployError::Invalid(fields) => format!(
            "invalid: {}",
            fields
                .iter()
                .map(|(f, d)| format!("--{}: {d}", f.replace('_', "-")))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => other.to_string(),
    }
}
