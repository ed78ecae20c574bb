//! Sign-in throttle counters and the addresses users signed in from (the
//! rules are in `crate::throttle`). Counting an attempt is one upsert; for
//! the username it is conditional, so a bucket whose wait is not over
//! refuses the attempt and nothing is written.

use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};

use super::{Result, Store};

/// How one bucket throttles: `free` attempts without waiting, then a wait
/// after each, doubling from `first_delay` up to `max_delay`; the count is
/// forgotten `forget_after` once the last wait is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    pub free: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub forget_after: Duration,
}

impl ThrottlePolicy {
    /// Seconds to wait after the `n`-th counted attempt.
    pub(crate) fn delay_after(&self, n: u32) -> i64 {
        let max = secs(self.max_delay);
        match n.checked_sub(self.free) {
            None => 0,
            Some(doublings) => 2i64
                .checked_pow(doublings)
                .and_then(|factor| secs(self.first_delay).checked_mul(factor))
                .map_or(max, |delay| Ord::min(delay, max)),
        }
    }

    /// [`ThrottlePolicy::delay_after`] as SQL over the count expression `n`:
    /// one `WHEN` per doubling until the cap, so it reads the same on
    /// SQLite and PostgreSQL (neither's power function is shared).
    fn delay_sql(&self, n: &str) -> String {
        let mut sql = format!("(CASE WHEN {n} < {} THEN 0", self.free);
        let mut count = self.free;
        loop {
            let delay = self.delay_after(count);
            if delay >= secs(self.max_delay) {
                break;
            }
            sql.push_str(&format!(" WHEN {n} = {count} THEN {delay}"));
            count += 1;
        }
        sql.push_str(&format!(" ELSE {} END)", secs(self.max_delay)));
        sql
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Whether an attempt was counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reservation {
    Counted,
    /// `bucket` makes attempts wait until `until`; nothing was counted.
    Throttled {
        bucket: String,
        until: i64,
    },
}

pub(super) mod counter {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sign_in_throttles")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub bucket: String,
        /// Attempts counted since the bucket was last forgotten.
        pub failures: i32,
        /// The next attempt is refused before this time.
        pub next_attempt_at: i64,
        /// From this time the count starts again (and the row may go).
        pub forget_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(super) mod known_address {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sign_in_known_addresses")]
    pub struct Model {
        /// SHA-256 of the username and the address group, hex.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub expires_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

impl Store {
    /// Admits an attempt for `account` from `address`: refused, writing
    /// nothing, while the address waits; otherwise counted in `account`
    /// unless its wait is not over. Counting the account first means
    /// parallel guesses at one username cannot get past its budget.
    pub(crate) async fn reserve_sign_in(
        &self,
        account: &str,
        address: Option<&str>,
        policy: ThrottlePolicy,
        now: i64,
    ) -> Result<Reservation> {
        if let Some(bucket) = address {
            let until = self.next_attempt_at(bucket).await?;
            if until > now {
                return Ok(Reservation::Throttled {
                    bucket: bucket.to_owned(),
                    until,
                });
            }
        }
        let counted = count(account, policy, now, true)
            .exec_without_returning(&self.db)
            .await?;
        if counted == 0 {
            let until = Ord::max(self.next_attempt_at(account).await?, now);
            return Ok(Reservation::Throttled {
                bucket: account.to_owned(),
                until,
            });
        }
        Ok(Reservation::Counted)
    }

    /// Counts a wrong password against `address`; forgotten buckets go
    /// while we are at it (they would count from 1 again anyway).
    pub(crate) async fn count_sign_in_failure(
        &self,
        address: &str,
        policy: ThrottlePolicy,
        now: i64,
    ) -> Result<()> {
        let txn = self.db.begin().await?;
        count(address, policy, now, false)
            .exec_without_returning(&txn)
            .await?;
        counter::Entity::delete_many()
            .filter(counter::Column::ForgetAt.lte(now))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// After a right password: `account` starts over and `known` (key,
    /// until) remembers the address for the user. Expired memories go at
    /// the same time.
    pub(crate) async fn sign_in_succeeded(
        &self,
        account: &str,
        known: Option<(&str, i64)>,
        now: i64,
    ) -> Result<()> {
        let txn = self.db.begin().await?;
        counter::Entity::delete_by_id(account.to_owned())
            .exec(&txn)
            .await?;
        if let Some((key, until)) = known {
            known_address::Entity::insert(known_address::ActiveModel {
                key: Set(key.to_owned()),
                expires_at: Set(until),
            })
            .on_conflict(
                OnConflict::column(known_address::Column::Key)
                    .update_column(known_address::Column::ExpiresAt)
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        }
        known_address::Entity::delete_many()
            .filter(known_address::Column::ExpiresAt.lte(now))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Whether the user signed in from this address and it still counts.
    pub(crate) async fn sign_in_address_known(&self, key: &str, now: i64) -> Result<bool> {
        Ok(known_address::Entity::find_by_id(key.to_owned())
            .one(&self.db)
            .await?
            .is_some_and(|row| row.expires_at > now))
    }

    /// When `bucket` lets the next attempt through (0: it does not exist).
    async fn next_attempt_at(&self, bucket: &str) -> Result<i64> {
        Ok(counter::Entity::find_by_id(bucket.to_owned())
            .one(&self.db)
            .await?
            .map_or(0, |row| row.next_attempt_at))
    }
}

/// Counts one attempt in `bucket` and sets the wait after it; with
/// `unless_waiting`, only when the bucket's wait is over (0 rows otherwise).
fn count(
    bucket: &str,
    policy: ThrottlePolicy,
    now: i64,
    unless_waiting: bool,
) -> sea_orm::Insert<counter::ActiveModel> {
    let table = "sign_in_throttles";
    // The existing row's count plus this attempt; 1 once it is forgotten.
    let n = format!("(CASE WHEN {table}.forget_at <= {now} THEN 1 ELSE {table}.failures + 1 END)");
    let forget = secs(policy.forget_after);
    let first = policy.delay_after(1);
    let delay = policy.delay_sql(&n);
    let mut on_conflict = OnConflict::column(counter::Column::Bucket);
    on_conflict
        .value(counter::Column::Failures, Expr::cust(n))
        .value(
            counter::Column::NextAttemptAt,
            Expr::cust(format!("{now} + {delay}")),
        )
        .value(
            counter::Column::ForgetAt,
            Expr::cust(format!("{now} + {delay} + {forget}")),
        );
    if unless_waiting {
        on_conflict.action_and_where(
            Expr::col((counter::Entity, counter::Column::NextAttemptAt)).lte(now),
        );
    }
    counter::Entity::insert(counter::ActiveModel {
        bucket: Set(bucket.to_owned()),
        failures: Set(1),
        next_attempt_at: Set(now + first),
        forget_at: Set(now + first + forget),
    })
    .on_conflict(on_conflict.to_owned())
}

/// The tables, as a migration of their own.
pub mod migration {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    /// `sign_in_throttles` and `sign_in_known_addresses`.
    pub(crate) struct SignInThrottles;

    impl MigrationName for SignInThrottles {
        fn name(&self) -> &str {
            "m20261201_000001_sign_in_throttles"
        }
    }

    #[derive(DeriveIden)]
    enum SignInThrottlesTable {
        #[sea_orm(iden = "sign_in_throttles")]
        Table,
        Bucket,
        Failures,
        NextAttemptAt,
        ForgetAt,
    }

    #[derive(DeriveIden)]
    enum SignInKnownAddresses {
        Table,
        Key,
        ExpiresAt,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for SignInThrottles {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.create_table(
                Table::create()
                    .table(SignInThrottlesTable::Table)
                    .if_not_exists()
                    .col(string_len(SignInThrottlesTable::Bucket, 96).primary_key())
                    .col(integer(SignInThrottlesTable::Failures))
                    .col(big_integer(SignInThrottlesTable::NextAttemptAt))
                    .col(big_integer(SignInThrottlesTable::ForgetAt))
                    .to_owned(),
            )
            .await?;
            m.create_index(
                Index::create()
                    .if_not_exists()
                    .name("sign_in_throttles_forget_at")
                    .table(SignInThrottlesTable::Table)
                    .col(SignInThrottlesTable::ForgetAt)
                    .to_owned(),
            )
            .await?;
            m.create_table(
                Table::create()
                    .table(SignInKnownAddresses::Table)
                    .if_not_exists()
                    .col(string_len(SignInKnownAddresses::Key, 64).primary_key())
                    .col(big_integer(SignInKnownAddresses::ExpiresAt))
                    .to_owned(),
            )
            .await?;
            m.create_index(
                Index::create()
                    .if_not_exists()
                    .name("sign_in_known_addresses_expires_at")
                    .table(SignInKnownAddresses::Table)
                    .col(SignInKnownAddresses::ExpiresAt)
                    .to_owned(),
            )
            .await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: ThrottlePolicy = ThrottlePolicy {
        free: 5,
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(900),
        forget_after: Duration::from_secs(900),
    };

    #[test]
    fn waits_start_after_the_free_attempts_and_double_up_to_the_cap() {
        let waits: Vec<i64> = (1..=17).map(|n| POLICY.delay_after(n)).collect();
        assert_eq!(
            waits,
            [
                0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900
            ]
        );
        assert_eq!(POLICY.delay_after(u32::MAX), 900);
    }

    #[test]
    fn the_sql_case_lists_every_doubling_below_the_cap() {
        assert_eq!(
            POLICY.delay_sql("n"),
            "(CASE WHEN n < 5 THEN 0 WHEN n = 5 THEN 1 WHEN n = 6 THEN 2 WHEN n = 7 THEN 4 \
             WHEN n = 8 THEN 8 WHEN n = 9 THEN 16 WHEN n = 10 THEN 32 WHEN n = 11 THEN 64 \
             WHEN n = 12 THEN 128 WHEN n = 13 THEN 256 WHEN n = 14 THEN 512 ELSE 900 END)"
        );
    }
}
