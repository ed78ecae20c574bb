//! What data-key rotation needs from the database: how many values each
//! data key protects, and re-encrypting a factor's secret under another key
//! without ever overwriting what the running service wrote meanwhile.
//!
//! The sealed values all live on the factor row: the TOTP secret or the
//! phone number (`secret_key_id`, `secret_ciphertext`, pending enrollments
//! included) with, for SMS, the phone number's MAC (`phone_mac`, made under
//! the same key when the number was sealed). SMS codes are MACs that cannot
//! be re-made without the code; they expire within minutes, so they are
//! counted, not rotated.

use std::collections::BTreeMap;

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entity::factor;
use super::{Method, Result, Store};

/// A factor's sealed secret as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub user_id: String,
    pub method: Option<Method>,
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

/// The same secret sealed under another key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resealed {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
    /// For SMS: the number's MAC under the new key.
    pub phone_mac: Option<String>,
}

impl Store {
    /// How many factor secrets each data key id seals.
    pub(crate) async fn secrets_per_key(&self) -> Result<BTreeMap<String, u64>> {
        let rows: Vec<(String, i64)> = factor::Entity::find()
            .select_only()
            .column(factor::Column::SecretKeyId)
            .column_as(factor::Column::UserId.count(), "n")
            .group_by(factor::Column::SecretKeyId)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(counts(rows))
    }

    /// How many SMS codes that can still be entered at `now` each key id
    /// MACs.
    pub(crate) async fn live_codes_per_key(&self, now: i64) -> Result<BTreeMap<String, u64>> {
        let rows: Vec<(Option<String>, i64)> = factor::Entity::find()
            .select_only()
            .column(factor::Column::CodeKeyId)
            .column_as(factor::Column::UserId.count(), "n")
            .filter(factor::Column::CodeHash.is_not_null())
            .filter(factor::Column::CodeExpiresAt.gt(now))
            .group_by(factor::Column::CodeKeyId)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(counts(
            rows.into_iter()
                .map(|(id, n)| (id.unwrap_or_default(), n))
                .collect(),
        ))
    }

    /// Up to `limit` secrets not sealed under `current`, in user id order,
    /// starting after user `after`: one page of a pass over the table.
    pub async fn secrets_not_under(
        &self,
        current: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<SealedSecret>> {
        let mut query = factor::Entity::find()
            .select_only()
            .column(factor::Column::UserId)
            .column(factor::Column::Method)
            .column(factor::Column::SecretKeyId)
            .column(factor::Column::SecretCiphertext)
            .filter(factor::Column::SecretKeyId.ne(current));
        if let Some(after) = after {
            query = query.filter(factor::Column::UserId.gt(after));
        }
        let rows: Vec<(String, String, String, Vec<u8>)> = query
            .order_by_asc(factor::Column::UserId)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(user_id, method, key_id, ciphertext)| SealedSecret {
                user_id,
                method: Method::parse(&method),
                key_id,
                ciphertext,
            })
            .collect())
    }

    /// Replaces `old` with `new`, compare-and-swap: only while the row still
    /// holds exactly `old`'s key id and ciphertext. False when the service
    /// changed it meanwhile (a restarted enrollment, a reset), which then
    /// stays as the service wrote it.
    pub async fn replace_secret(&self, old: &SealedSecret, new: &Resealed) -> Result<bool> {
        let mut update = factor::Entity::update_many()
            .col_expr(factor::Column::SecretKeyId, Expr::value(new.key_id.clone()))
            .col_expr(
                factor::Column::SecretCiphertext,
                Expr::value(new.ciphertext.clone()),
            );
        if let Some(mac) = &new.phone_mac {
            update = update.col_expr(factor::Column::PhoneMac, Expr::value(mac.clone()));
        }
        let result = update
            .filter(factor::Column::UserId.eq(old.user_id.as_str()))
            .filter(factor::Column::SecretKeyId.eq(old.key_id.as_str()))
            .filter(factor::Column::SecretCiphertext.eq(old.ciphertext.clone()))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }
}

fn counts(rows: Vec<(String, i64)>) -> BTreeMap<String, u64> {
    rows.into_iter()
        .map(|(id, n)| (id, u64::try_from(n).unwrap_or(0)))
        .collect()
}
