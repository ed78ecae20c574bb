//! Factors as stored: enrollment, SMS codes within their send limits,
//! and support's reset and unlock. Checking a code is `code_checks`.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, TransactionTrait,
};

use super::entity::{factor, session, sms_limit};
use super::{
    Factor, FactorState, Method, NewFactor, PendingCode, Result, SendGate, SendLimit, Store,
};

impl Store {
    pub async fn factor(&self, user_id: &str) -> Result<Option<Factor>> {
        let row = factor::Entity::find_by_id(user_id.to_owned())
            .one(&self.db)
            .await?;
        Ok(row.and_then(factor_from_row))
    }

    /// Starts (or restarts) a pending enrollment. Returns false, writing
    /// nothing, when the user already has an active factor. A restart keeps
    /// the lockout counters, so restarting does not reset a lockout.
    pub async fn begin_enrollment(&self, f: &NewFactor) -> Result<bool> {
        let row = factor::ActiveModel {
            user_id: Set(f.user_id.clone()),
            method: Set(f.method.as_str().to_owned()),
            state: Set(FactorState::Pending.as_str().to_owned()),
            enrollment_id: Set(f.enrollment_id.clone()),
            secret_key_id: Set(f.secret_key_id.clone()),
            secret_ciphertext: Set(f.secret_ciphertext.clone()),
            created_at: Set(f.created_at),
            enrollment_expires_at: Set(f.enrollment_expires_at),
            activated_at: Set(None),
            last_step: Set(None),
            failed_attempts: Set(0),
            locked_until: Set(None),
            lockouts: Set(0),
            code_hash: Set(None),
            code_key_id: Set(None),
            code_expires_at: Set(None),
            code_tries: Set(0),
            code_sent_at: Set(None),
            masked_phone: Set(f.masked_phone.clone()),
            phone_mac: Set(f.phone_mac.clone()),
        };
        let on_conflict = OnConflict::column(factor::Column::UserId)
            .update_columns([
                factor::Column::CodeHash,
                factor::Column::CodeKeyId,
                factor::Column::CodeExpiresAt,
                factor::Column::CodeTries,
                factor::Column::MaskedPhone,
                factor::Column::PhoneMac,
                factor::Column::Method,
                factor::Column::EnrollmentId,
                factor::Column::SecretKeyId,
                factor::Column::SecretCiphertext,
                factor::Column::CreatedAt,
                factor::Column::EnrollmentExpiresAt,
                factor::Column::LastStep,
            ])
            .action_and_where(
                Expr::col((factor::Entity, factor::Column::State))
                    .eq(FactorState::Pending.as_str()),
            )
            .to_owned();
        let rows = factor::Entity::insert(row)
            .on_conflict(on_conflict)
            .exec_without_returning(&self.db)
            .await?;
        Ok(rows == 1)
    }

    /// Stores a new SMS code for the factor, if the resend cooldown has
    /// passed and every send limit has room; counts the send against each
    /// limit. All or nothing, in one transaction, so limits hold across
    /// replicas and concurrent requests; a refused send changes nothing.
    pub async fn store_code(
        &self,
        user_id: &str,
        code: &PendingCode,
        now: i64,
        cooldown: i64,
        limits: &[SendLimit],
    ) -> Result<SendGate> {
        let txn = self.db.begin().await?;
        let stored = factor::Entity::update_many()
            .col_expr(factor::Column::CodeHash, Expr::value(code.hash.clone()))
            .col_expr(factor::Column::CodeKeyId, Expr::value(code.key_id.clone()))
            .col_expr(factor::Column::CodeExpiresAt, Expr::value(code.expires_at))
            .col_expr(factor::Column::CodeTries, Expr::value(0))
            .col_expr(factor::Column::CodeSentAt, Expr::value(now))
            .filter(factor::Column::UserId.eq(user_id))
            .filter(
                Condition::any()
                    .add(factor::Column::CodeSentAt.is_null())
                    .add(factor::Column::CodeSentAt.lte(now - cooldown)),
            )
            .exec(&txn)
            .await?;
        if stored.rows_affected == 0 {
            txn.rollback().await?;
            let sent_at = self
                .factor(user_id)
                .await?
                .and_then(|f| f.code_sent_at)
                .unwrap_or(now);
            return Ok(SendGate::Cooldown {
                until: sent_at + cooldown,
            });
        }
        for limit in limits {
            let window_start = now - now.rem_euclid(limit.window);
            let counted = sms_limit::Entity::insert(sms_limit::ActiveModel {
                bucket: Set(limit.bucket.clone()),
                window_start: Set(window_start),
                count: Set(1),
            })
            .on_conflict(
                OnConflict::columns([sms_limit::Column::Bucket, sms_limit::Column::WindowStart])
                    .value(
                        sms_limit::Column::Count,
                        Expr::col((sms_limit::Entity, sms_limit::Column::Count)).add(1),
                    )
                    .action_and_where(
                        Expr::col((sms_limit::Entity, sms_limit::Column::Count))
                            .lt(i64::from(limit.cap)),
                    )
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
            if counted == 0 {
                txn.rollback().await?;
                return Ok(SendGate::Capped {
                    bucket: limit.bucket.clone(),
                    until: window_start + limit.window,
                });
            }
        }
        txn.commit().await?;
        Ok(SendGate::Open)
    }

    /// Forgets a code that could not be delivered, so it costs the user no
    /// tries and they may ask again at once.
    pub(crate) async fn clear_undelivered_code(&self, user_id: &str, hash: &str) -> Result<()> {
        factor::Entity::update_many()
            .col_expr(
                factor::Column::CodeHash,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                factor::Column::CodeExpiresAt,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(factor::Column::CodeSentAt, Expr::value(Option::<i64>::None))
            .filter(factor::Column::UserId.eq(user_id))
            .filter(factor::Column::CodeHash.eq(hash))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Support's reset: removes the factor and its secrets, and ends the
    /// second-factor state of every session of the user, atomically.
    /// False when the user had no factor (sessions are cleared anyway).
    pub async fn reset_factor(&self, user_id: &str) -> Result<bool> {
        let txn = self.db.begin().await?;
        let removed = factor::Entity::delete_many()
            .filter(factor::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?
            .rows_affected;
        session::Entity::update_many()
            .col_expr(session::Column::MfaAt, Expr::value(Option::<i64>::None))
            .col_expr(
                session::Column::MfaMethod,
                Expr::value(Option::<String>::None),
            )
            .filter(session::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(removed == 1)
    }

    /// Support's unlock: clears the failures, the lockout and its history.
    pub async fn unlock(&self, user_id: &str) -> Result<bool> {
        let result = factor::Entity::update_many()
            .col_expr(factor::Column::FailedAttempts, Expr::value(0))
            .col_expr(
                factor::Column::LockedUntil,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(factor::Column::Lockouts, Expr::value(0))
            .filter(factor::Column::UserId.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }
}

pub(super) fn factor_from_row(r: factor::Model) -> Option<Factor> {
    let state = match r.state.as_str() {
        "pending" => FactorState::Pending,
        "active" => FactorState::Active,
        _ => return None,
    };
    Some(Factor {
        user_id: r.user_id,
        method: Method::parse(&r.method)?,
        state,
        enrollment_id: r.enrollment_id,
        secret_key_id: r.secret_key_id,
        secret_ciphertext: r.secret_ciphertext,
        enrollment_expires_at: r.enrollment_expires_at,
        activated_at: r.activated_at,
        last_step: r.last_step,
        failed_attempts: u32::try_from(r.failed_attempts).unwrap_or(0),
        locked_until: r.locked_until,
        code: match (r.code_hash, r.code_key_id, r.code_expires_at) {
            (Some(hash), Some(key_id), Some(expires_at)) => Some(PendingCode {
                hash,
                key_id,
                expires_at,
                tries: u32::try_from(r.code_tries).unwrap_or(0),
            }),
            _ => None,
        },
        code_sent_at: r.code_sent_at,
        masked_phone: r.masked_phone,
        phone_mac: r.phone_mac,
    })
}
