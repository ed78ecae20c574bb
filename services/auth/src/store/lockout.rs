//! The lockout rule, written once (docs/design.md "Lockout"; the numbers are
//! `config::LOCKOUT`).
//!
//! The invariant: a code is compared only under a try that
//! [`reserve_tries`] took first, in the database, in the transaction that
//! then records the code's outcome, and a factor grants at most five tries
//! per lock period. `failed_attempts` counts the tries taken since the
//! last success (or since support's unlock, or since a lock ended); taking
//! the fifth locks the factor for 15 minutes, doubling with each further
//! lock up to 24 hours, and a locked factor grants no try until the lock
//! ends, when the count starts again. So at most five codes are compared
//! per lock period, however they arrive: in parallel, in one batch, across
//! replicas (codes of steps already used aside, below).
//!
//! Only a wrong code keeps its try. A right code resets the count
//! (`accept`), even the fifth, whose try has just set the lock. A code
//! that was right for a step already used, or that could not be compared
//! at all, gives its try back ([`give_back_tries`]) in the same
//! transaction: counting a used code would lock out a user whose client
//! sent a code twice, and it is no guess an attacker chooses (it is the
//! code of a used step, and matched no unused one).
//!
//! The statements hold the factor's row from the reservation to the
//! commit (SQLite's one writer; PostgreSQL's row lock), so what a
//! reservation returns is the factor the code is compared with and the
//! outcome is recorded on. A crash before the commit takes the try back
//! with everything else, and every lock ends, so no factor stays locked
//! for good.

use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, IdenStatic, Iterable,
    QueryFilter,
};

use super::entity::factor;
use super::sql::Sql;
use super::{Factor, factor_from_row};
use crate::config::LOCKOUT;

/// A try asked for `user_id`'s factor at `now`.
#[derive(Debug, Clone, Copy)]
pub(super) struct TryAt<'a> {
    pub user_id: &'a str,
    pub now: i64,
}

/// Takes one try of each user's factor (users appear once), if it is not
/// locked at `now`: returns the factors granted a try, by user id, as the
/// reservation left them. `failed_attempts` is then this try's number
/// (1 to `max_failures`), and the try that reaches `max_failures` has set
/// `locked_until` and counted the lockout. A lock that has ended restarts
/// the count.
pub(super) async fn reserve_tries(
    txn: &impl ConnectionTrait,
    round: &[TryAt<'_>],
) -> Result<HashMap<String, Factor>, DbErr> {
    let max = LOCKOUT.max_failures;
    // Tries taken before this one: none since a lock that has ended (the
    // statement only matches a factor that is not locked now).
    let taken = "(CASE WHEN locked_until IS NULL THEN failed_attempts ELSE 0 END)";
    let mut sql = Sql::new(txn.get_database_backend());
    sql.values("v_user_id, v_now", round, |sql, t| {
        sql.bind(t.user_id);
        sql.push(", ");
        sql.bind_bigint(Some(t.now));
    });
    sql.push(&format!(
        " UPDATE factors SET failed_attempts = {taken} + 1, \
         locked_until = CASE WHEN {taken} + 1 >= {max} THEN v_now + {lock} END, \
         lockouts = lockouts + CASE WHEN {taken} + 1 >= {max} THEN 1 ELSE 0 END \
         FROM v WHERE user_id = v_user_id \
         AND (locked_until IS NULL OR locked_until <= v_now) \
         RETURNING {columns}",
        lock = lock_secs(),
        columns = factor_columns(),
    ));
    let rows = txn.query_all_raw(sql.into_statement()).await?;
    let mut granted = HashMap::with_capacity(rows.len());
    for row in &rows {
        if let Some(f) = factor_from_row(factor::Model::from_query_result(row, "")?) {
            granted.insert(f.user_id.clone(), f);
        }
    }
    Ok(granted)
}

/// Gives back the try [`reserve_tries`] took for each user in this
/// transaction, for codes that were not wrong (right for a step already
/// used) or were not compared: the factor is as it was before the try
/// (a lock the try set is lifted and not counted; a count an ended lock
/// restarted stays restarted). Must follow that reservation with no other
/// change to those users' factors in between.
pub(super) async fn give_back_tries(
    txn: &impl ConnectionTrait,
    users: &[&str],
) -> Result<(), DbErr> {
    if users.is_empty() {
        return Ok(());
    }
    let max = LOCKOUT.max_failures;
    let mut sql = Sql::new(txn.get_database_backend());
    sql.values("v_user_id", users, |sql, user_id| sql.bind(*user_id));
    sql.push(&format!(
        " UPDATE factors SET failed_attempts = failed_attempts - 1, locked_until = NULL, \
         lockouts = lockouts - CASE WHEN failed_attempts >= {max} THEN 1 ELSE 0 END \
         FROM v WHERE user_id = v_user_id AND failed_attempts > 0"
    ));
    txn.execute_raw(sql.into_statement()).await?;
    Ok(())
}

/// Counts a wrong try of the SMS code `code_hash` on each user's factor
/// (docs/design.md "SMS": at most 5 tries per code), if it is still the code
/// waiting.
pub(super) async fn count_sms_code_tries(
    txn: &impl ConnectionTrait,
    wrong: &[(&str, &str)],
) -> Result<(), DbErr> {
    if wrong.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(txn.get_database_backend());
    sql.values("v_user_id, v_code_hash", wrong, |sql, (user_id, hash)| {
        sql.bind(*user_id);
        sql.push(", ");
        sql.bind_text(Some(hash));
    });
    sql.push(
        " UPDATE factors SET code_tries = code_tries + 1 \
         FROM v WHERE user_id = v_user_id AND code_hash = v_code_hash",
    );
    txn.execute_raw(sql.into_statement()).await?;
    Ok(())
}

/// Until when each of `users`' factors is locked, for users whose factor
/// exists; `None` for a factor without a lock.
pub(super) async fn locks(
    txn: &impl ConnectionTrait,
    users: &[&str],
) -> Result<HashMap<String, Option<i64>>, DbErr> {
    let rows = factor::Entity::find()
        .filter(factor::Column::UserId.is_in(users.iter().copied()))
        .all(txn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|f| (f.user_id, f.locked_until))
        .collect())
}

/// How long the next lock lasts, in SQL over the factor's `lockouts`:
/// `first_lock`, doubling with each lock before it, at most `max_lock`.
fn lock_secs() -> String {
    let mut sql = String::from("(CASE");
    let mut secs = LOCKOUT.first_lock.as_secs();
    let mut n = 0;
    while secs < LOCKOUT.max_lock.as_secs() {
        sql.push_str(&format!(" WHEN lockouts = {n} THEN {secs}"));
        secs *= 2;
        n += 1;
    }
    sql.push_str(&format!(" ELSE {} END)", LOCKOUT.max_lock.as_secs()));
    sql
}

/// Every column of `factors`, comma-separated, for a RETURNING that reads
/// back a whole factor.
fn factor_columns() -> String {
    factor::Column::iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_last_15_minutes_doubling_up_to_a_day() {
        assert_eq!(
            lock_secs(),
            "(CASE WHEN lockouts = 0 THEN 900 WHEN lockouts = 1 THEN 1800 \
             WHEN lockouts = 2 THEN 3600 WHEN lockouts = 3 THEN 7200 \
             WHEN lockouts = 4 THEN 14400 WHEN lockouts = 5 THEN 28800 \
             WHEN lockouts = 6 THEN 57600 ELSE 86400 END)"
        );
    }
}
