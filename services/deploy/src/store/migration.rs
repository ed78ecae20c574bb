//! The deploy schema, as sea-orm-migration migrations run at start-up.
//! Times are Unix seconds in BIGINT columns.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Init),
            Box::new(super::permission_version::AddVersion),
            Box::new(super::audit_chain::MIGRATION),
        ]
    }
}

struct Init;

// Names are stored in `seaql_migrations`; never rename one that shipped.
impl MigrationName for Init {
    fn name(&self) -> &str {
        "m20261128_000001_init"
    }
}

#[derive(DeriveIden)]
enum Apps {
    Table,
    Id,
    Name,
    CreatedAt,
    CreatedBy,
}

#[derive(DeriveIden)]
enum TeamMembers {
    Table,
    AppId,
    Username,
    Role,
    AddedAt,
    AddedBy,
}

#[derive(DeriveIden)]
enum NodePermissions {
    Table,
    AppId,
    Environment,
    Username,
    Permission,
    GrantedAt,
    GrantedBy,
}

#[derive(DeriveIden)]
enum Packages {
    Table,
    Id,
    AppId,
    Version,
    FileName,
    Size,
    Sha256,
    UploadedBy,
    UploadedAt,
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    Id,
    AppId,
    PackageId,
    Environment,
    FromEnvironment,
    DeployedBy,
    DeployedAt,
    MfaAt,
    MfaMethod,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    Actor,
    Action,
    AppId,
    Environment,
    Outcome,
    Reason,
    MfaAt,
    MfaMethod,
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for Init {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Apps::Table)
                .if_not_exists()
                .col(string_len(Apps::Id, 36).primary_key())
                .col(string_len_uniq(Apps::Name, 64))
                .col(big_integer(Apps::CreatedAt))
                .col(string_len(Apps::CreatedBy, 64))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(TeamMembers::Table)
                .if_not_exists()
                .col(string_len(TeamMembers::AppId, 36))
                .col(string_len(TeamMembers::Username, 64))
                .col(string_len(TeamMembers::Role, 24))
                .col(big_integer(TeamMembers::AddedAt))
                .col(string_len(TeamMembers::AddedBy, 64))
                .primary_key(
                    Index::create()
                        .col(TeamMembers::AppId)
                        .col(TeamMembers::Username),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(TeamMembers::Table, TeamMembers::AppId)
                        .to(Apps::Table, Apps::Id),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("team_members_username")
                .table(TeamMembers::Table)
                .col(TeamMembers::Username)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(NodePermissions::Table)
                .if_not_exists()
                .col(string_len(NodePermissions::AppId, 36))
                .col(string_len(NodePermissions::Environment, 16))
                .col(string_len(NodePermissions::Username, 64))
                .col(string_len(NodePermissions::Permission, 16))
                .col(big_integer(NodePermissions::GrantedAt))
                .col(string_len(NodePermissions::GrantedBy, 64))
                .primary_key(
                    Index::create()
                        .col(NodePermissions::AppId)
                        .col(NodePermissions::Username)
                        .col(NodePermissions::Environment)
                        .col(NodePermissions::Permission),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(NodePermissions::Table, NodePermissions::AppId)
                        .to(Apps::Table, Apps::Id),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Packages::Table)
                .if_not_exists()
                .col(string_len(Packages::Id, 36).primary_key())
                .col(string_len(Packages::AppId, 36))
                .col(string_len(Packages::Version, 64))
                .col(string_len(Packages::FileName, 128))
                .col(big_integer(Packages::Size))
                .col(string_len(Packages::Sha256, 64))
                .col(string_len(Packages::UploadedBy, 64))
                .col(big_integer(Packages::UploadedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Packages::Table, Packages::AppId)
                        .to(Apps::Table, Apps::Id),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("packages_app_version")
                .table(Packages::Table)
                .col(Packages::AppId)
                .col(Packages::Version)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Deployments::Table)
                .if_not_exists()
                .col(big_pk_auto(Deployments::Id))
                .col(string_len(Deployments::AppId, 36))
                .col(string_len(Deployments::PackageId, 36))
                .col(string_len(Deployments::Environment, 16))
                .col(string_len_null(Deployments::FromEnvironment, 16))
                .col(string_len(Deployments::DeployedBy, 64))
                .col(big_integer(Deployments::DeployedAt))
                .col(big_integer_null(Deployments::MfaAt))
                .col(string_len_null(Deployments::MfaMethod, 8))
                .foreign_key(
                    ForeignKey::create()
                        .from(Deployments::Table, Deployments::PackageId)
                        .to(Packages::Table, Packages::Id),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("deployments_app_environment")
                .table(Deployments::Table)
                .col(Deployments::AppId)
                .col(Deployments::Environment)
                .col(Deployments::Id)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AuditEvents::Table)
                .if_not_exists()
                .col(big_pk_auto(AuditEvents::Id))
                .col(big_integer(AuditEvents::At))
                .col(string_len(AuditEvents::Actor, 64))
                .col(string_len(AuditEvents::Action, 48))
                .col(string_len_null(AuditEvents::AppId, 36))
                .col(string_len_null(AuditEvents::Environment, 16))
                .col(string_len(AuditEvents::Outcome, 16))
                .col(string_len_null(AuditEvents::Reason, 48))
                .col(big_integer_null(AuditEvents::MfaAt))
                .col(string_len_null(AuditEvents::MfaMethod, 8))
                .col(text(AuditEvents::Detail))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("audit_events_app_at")
                .table(AuditEvents::Table)
                .col(AuditEvents::AppId)
                .col(AuditEvents::At)
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
