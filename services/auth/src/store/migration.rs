//! The auth schema, as sea-orm-migration migrations run at start-up.
//! Times are Unix seconds in BIGINT columns, so comparisons in SQL mean the
//! same on SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Init),
            Box::new(SmsCodes),
            Box::new(super::throttle::migration::SignInThrottles),
            Box::new(super::audit_chain::MIGRATION),
            Box::new(AuditByKind),
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
enum Users {
    Table,
    Id,
    Username,
    PasswordHash,
    Roles,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    UserId,
    TokenHash,
    AuthTime,
    MfaAt,
    MfaMethod,
    CreatedAt,
    ExpiresAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum Factors {
    Table,
    UserId,
    Method,
    State,
    EnrollmentId,
    SecretKeyId,
    SecretCiphertext,
    CreatedAt,
    EnrollmentExpiresAt,
    ActivatedAt,
    LastStep,
    FailedAttempts,
    LockedUntil,
    Lockouts,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    Kind,
    Outcome,
    Actor,
    Subject,
    SessionId,
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for Init {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Users::Table)
                .if_not_exists()
                .col(string_len(Users::Id, 36).primary_key())
                .col(string_len_uniq(Users::Username, 64))
                .col(string(Users::PasswordHash))
                .col(string(Users::Roles))
                .col(big_integer(Users::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Sessions::Table)
                .if_not_exists()
                .col(string_len(Sessions::Id, 36).primary_key())
                .col(string_len(Sessions::UserId, 36))
                .col(string_len_uniq(Sessions::TokenHash, 64))
                .col(big_integer(Sessions::AuthTime))
                .col(big_integer_null(Sessions::MfaAt))
                .col(string_len_null(Sessions::MfaMethod, 8))
                .col(big_integer(Sessions::CreatedAt))
                .col(big_integer(Sessions::ExpiresAt))
                .col(big_integer_null(Sessions::EndedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Sessions::Table, Sessions::UserId)
                        .to(Users::Table, Users::Id),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("sessions_user_id")
                .table(Sessions::Table)
                .col(Sessions::UserId)
                .to_owned(),
        )
        .await?;
        // One row per user: the primary key is what makes "one method per
        // user" hold across replicas.
        m.create_table(
            Table::create()
                .table(Factors::Table)
                .if_not_exists()
                .col(string_len(Factors::UserId, 36).primary_key())
                .col(string_len(Factors::Method, 8))
                .col(string_len(Factors::State, 8))
                .col(string_len_uniq(Factors::EnrollmentId, 36))
                .col(string_len(Factors::SecretKeyId, 32))
                .col(binary(Factors::SecretCiphertext))
                .col(big_integer(Factors::CreatedAt))
                .col(big_integer(Factors::EnrollmentExpiresAt))
                .col(big_integer_null(Factors::ActivatedAt))
                .col(big_integer_null(Factors::LastStep))
                .col(integer(Factors::FailedAttempts).default(0))
                .col(big_integer_null(Factors::LockedUntil))
                .col(integer(Factors::Lockouts).default(0))
                .foreign_key(
                    ForeignKey::create()
                        .from(Factors::Table, Factors::UserId)
                        .to(Users::Table, Users::Id),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AuditEvents::Table)
                .if_not_exists()
                .col(big_pk_auto(AuditEvents::Id))
                .col(big_integer(AuditEvents::At))
                .col(string_len(AuditEvents::Kind, 48))
                .col(string_len(AuditEvents::Outcome, 16))
                .col(string_len_null(AuditEvents::Actor, 36))
                .col(string_len_null(AuditEvents::Subject, 36))
                .col(string_len_null(AuditEvents::SessionId, 36))
                .col(text(AuditEvents::Detail))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("audit_events_subject_at")
                .table(AuditEvents::Table)
                .col(AuditEvents::Subject)
                .col(AuditEvents::At)
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}

/// SMS codes on the factor row, and the send counters against SMS pumping.
struct SmsCodes;

impl MigrationName for SmsCodes {
    fn name(&self) -> &str {
        "m20261128_000002_sms_codes"
    }
}

#[derive(DeriveIden)]
enum SmsFactors {
    #[sea_orm(iden = "factors")]
    Table,
    /// HMAC of the current code, hex; NULL when there is none.
    CodeHash,
    CodeKeyId,
    CodeExpiresAt,
    /// Tries of the current code.
    CodeTries,
    CodeSentAt,
    /// For showing, without opening the sealed number.
    MaskedPhone,
    /// HMAC of the number, hex: the per-number limit key.
    PhoneMac,
}

#[derive(DeriveIden)]
enum SmsLimits {
    Table,
    Bucket,
    WindowStart,
    Count,
}

#[async_trait::async_trait]
impl MigrationTrait for SmsCodes {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        for column in [
            string_len_null(SmsFactors::CodeHash, 64),
            string_len_null(SmsFactors::CodeKeyId, 32),
            big_integer_null(SmsFactors::CodeExpiresAt),
            integer(SmsFactors::CodeTries).default(0).to_owned(),
            big_integer_null(SmsFactors::CodeSentAt),
            string_len_null(SmsFactors::MaskedPhone, 32),
            string_len_null(SmsFactors::PhoneMac, 64),
        ] {
            let mut column = column;
            m.alter_table(
                Table::alter()
                    .table(SmsFactors::Table)
                    .add_column(&mut column)
                    .to_owned(),
            )
            .await?;
        }
        m.create_table(
            Table::create()
                .table(SmsLimits::Table)
                .if_not_exists()
                .col(string_len(SmsLimits::Bucket, 96))
                .col(big_integer(SmsLimits::WindowStart))
                .col(integer(SmsLimits::Count))
                .primary_key(
                    Index::create()
                        .col(SmsLimits::Bucket)
                        .col(SmsLimits::WindowStart),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}

/// An index for "the newest record of this kind about this user" (the
/// last factor reset a user is shown), so it reads one index range however
/// many records the user has.
struct AuditByKind;

impl MigrationName for AuditByKind {
    fn name(&self) -> &str {
        "m20261208_000001_audit_events_subject_kind"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AuditByKind {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("audit_events_subject_kind_id")
                .table(AuditEvents::Table)
                .col(AuditEvents::Subject)
                .col(AuditEvents::Kind)
                .col(AuditEvents::Id)
                .to_owned(),
        )
        .await
    }
}
