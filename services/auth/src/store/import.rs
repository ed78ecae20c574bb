//! The store's side of `padlock-auth users import` (`crate::import`): which
//! of some usernames are taken, and a batch of users, their active TOTP
//! factors and their `user_created` records written in one transaction.

use padlock_runtime::audit;
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QuerySelect as _};

use super::entity::{factor, user};
use super::{AuditEvent, FactorState, Method, Result, Store, User, insert_audit};

/// Rows per INSERT: 1,000 factor rows of 20 values stay under SQLite's
/// 32,766 bound parameters per statement (PostgreSQL allows 65,535).
const ROWS_PER_INSERT: usize = 1_000;

/// Audit records per append: the append writes SQLite's statements in
/// powers of two of its records, and 1,024 records of 10 values stay under
/// its bound parameters as well.
const RECORDS_PER_APPEND: usize = 1_024;

/// A user as the import writes it: the TOTP secret (if any) already sealed
/// under the user's id, as enrollment seals it.
#[derive(Debug, Clone)]
pub struct ImportedUser {
    pub user: User,
    /// `(data key id, sealed secret)`.
    pub totp: Option<(String, Vec<u8>)>,
}

impl Store {
    /// Which of `usernames` exist already.
    pub async fn taken_usernames(&self, usernames: &[String]) -> Result<Vec<String>> {
        let mut taken = Vec::new();
        for chunk in usernames.chunks(ROWS_PER_INSERT) {
            let rows: Vec<String> = user::Entity::find()
                .select_only()
                .column(user::Column::Username)
                .filter(user::Column::Username.is_in(chunk.iter().cloned()))
                .into_tuple()
                .all(&self.db)
                .await?;
            taken.extend(rows);
        }
        Ok(taken)
    }

    /// Writes `users`, their factors (active since `now`) and one audit
    /// record each (`audit`, in the same order) in one transaction: all of
    /// them or none. `Conflict` when a username is taken.
    pub async fn import_users(
        &self,
        users: &[ImportedUser],
        audit: Vec<AuditEvent>,
        now: i64,
    ) -> Result<()> {
        let txn = audit::begin(&self.db).await?;
        for chunk in users.chunks(ROWS_PER_INSERT) {
            user::Entity::insert_many(chunk.iter().map(|u| user::ActiveModel {
                id: Set(u.user.id.clone()),
                username: Set(u.user.username.clone()),
                password_hash: Set(u.user.password_hash.clone()),
                roles: Set(u.user.roles.join(" ")),
                created_at: Set(u.user.created_at),
            }))
            .exec_without_returning(&txn)
            .await?;
            let factors: Vec<_> = chunk
                .iter()
                .filter_map(|u| {
                    let (key_id, blob) = u.totp.clone()?;
                    Some(active_totp(&u.user.id, key_id, blob, now))
                })
                .collect();
            if !factors.is_empty() {
                factor::Entity::insert_many(factors)
                    .exec_without_returning(&txn)
                    .await?;
            }
        }
        let mut audit = audit.into_iter();
        loop {
            let records: Vec<_> = audit.by_ref().take(RECORDS_PER_APPEND).collect();
            if records.is_empty() {
                break;
            }
            insert_audit(&txn, records).await?;
        }
        txn.commit().await?;
        Ok(())
    }
}

/// An active TOTP factor, as a confirmed enrollment leaves it: no code
/// accepted yet, no failures.
fn active_totp(user_id: &str, key_id: String, blob: Vec<u8>, now: i64) -> factor::ActiveModel {
    factor::ActiveModel {
        user_id: Set(user_id.to_owned()),
        method: Set(Method::Totp.as_str().to_owned()),
        state: Set(FactorState::Active.as_str().to_owned()),
        enrollment_id: Set(uuid::Uuid::new_v4().to_string()),
        secret_key_id: Set(key_id),
        secret_ciphertext: Set(blob),
        created_at: Set(now),
        enrollment_expires_at: Set(now),
        activated_at: Set(Some(now)),
        last_step: Set(None),
        failed_attempts: Set(0),
        locked_until: Set(None),
        lockouts: Set(0),
        code_hash: Set(None),
        code_key_id: Set(None),
        code_expires_at: Set(None),
        code_tries: Set(0),
        code_sent_at: Set(None),
        masked_phone: Set(None),
        phone_mac: Set(None),
    }
}
