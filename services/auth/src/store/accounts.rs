//! Users and sessions: created, found by id, username or token hash,
//! ended; and the read that starts every code check, a session with its
//! user and factor.

use std::collections::HashMap;

use padlock_runtime::{audit, db};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use super::entity::{factor, session, user};
use super::{
    AuditEvent, Method, Result, Session, SessionContext, Store, User, factor_from_row, insert_audit,
};

impl Store {
    /// Creates a user and its audit record in one transaction: a user is
    /// never created without its record (or half-created on a lost
    /// connection).
    pub async fn create_user(&self, u: &User, audit: AuditEvent) -> Result<()> {
        let txn = audit::begin(&self.db).await?;
        user::Entity::insert(user::ActiveModel {
            id: Set(u.id.clone()),
            username: Set(u.username.clone()),
            password_hash: Set(u.password_hash.clone()),
            roles: Set(u.roles.join(" ")),
            created_at: Set(u.created_at),
        })
        .exec_without_returning(&txn)
        .await?;
        insert_audit(&txn, vec![audit]).await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let row = user::Entity::find()
            .filter(user::Column::Username.eq(username))
            .one(&self.db)
            .await?;
        Ok(row.map(user_from_row))
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        Ok(user::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(user_from_row))
    }

    pub async fn create_session(&self, s: &Session, token_hash: &str, now: i64) -> Result<()> {
        session::Entity::insert(session::ActiveModel {
            id: Set(s.id.clone()),
            user_id: Set(s.user_id.clone()),
            token_hash: Set(token_hash.to_owned()),
            auth_time: Set(s.auth_time),
            mfa_at: Set(s.mfa_at),
            mfa_method: Set(s.mfa_method.map(|m| m.as_str().to_owned())),
            created_at: Set(now),
            expires_at: Set(s.expires_at),
            ended_at: Set(None),
        })
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    pub async fn session(&self, id: &str) -> Result<Option<Session>> {
        Ok(session::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(session_from_row))
    }

    /// A session with its user and the user's factor, in one query: what
    /// checking a code needs (`TwoFactorService`). `None` without the session.
    pub async fn session_with_user(&self, session_id: &str) -> Result<Option<SessionContext>> {
        let mut found = self.sessions_with_users(&[session_id]).await?;
        Ok(found.remove(session_id))
    }

    /// [`Store::session_with_user`] for many sessions in one query, by
    /// session id; sessions that do not exist are missing.
    pub async fn sessions_with_users(
        &self,
        session_ids: &[&str],
    ) -> Result<HashMap<String, SessionContext>> {
        use sea_orm::sea_query::{Alias, JoinType, Query};
        use sea_orm::{ConnectionTrait, FromQueryResult, IdenStatic, Iterable};
        const S: &str = "s_";
        const U: &str = "u_";
        const F: &str = "f_";
        let mut query = Query::select();
        for c in session::Column::iter() {
            query.expr_as(
                Expr::col((session::Entity, c)),
                Alias::new(format!("{S}{}", c.as_str())),
            );
        }
        for c in user::Column::iter() {
            query.expr_as(
                Expr::col((user::Entity, c)),
                Alias::new(format!("{U}{}", c.as_str())),
            );
        }
        for c in factor::Column::iter() {
            query.expr_as(
                Expr::col((factor::Entity, c)),
                Alias::new(format!("{F}{}", c.as_str())),
            );
        }
        query
            .from(session::Entity)
            .join(
                JoinType::InnerJoin,
                user::Entity,
                Expr::col((user::Entity, user::Column::Id))
                    .equals((session::Entity, session::Column::UserId)),
            )
            .join(
                JoinType::LeftJoin,
                factor::Entity,
                Expr::col((factor::Entity, factor::Column::UserId))
                    .equals((session::Entity, session::Column::UserId)),
            )
            .and_where(
                // Padded by repeating the last id, so that the query has
                // one of a few shapes (db::padded_shape).
                Expr::col((session::Entity, session::Column::Id)).is_in(
                    session_ids.iter().copied().chain(std::iter::repeat_n(
                        session_ids.last().copied().unwrap_or_default(),
                        db::padded_shape(session_ids.len()) - session_ids.len(),
                    )),
                ),
            );
        let mut found = HashMap::with_capacity(session_ids.len());
        for row in self.hot.query_all(&query).await? {
            let session = session::Model::from_query_result(&row, S)?;
            let user = user::Model::from_query_result(&row, U)?;
            let has_factor = row
                .try_get::<Option<String>>(F, factor::Column::UserId.as_str())?
                .is_some();
            let factor = if has_factor {
                factor_from_row(factor::Model::from_query_result(&row, F)?)
            } else {
                None
            };
            found.insert(
                session.id.clone(),
                (session_from_row(session), user_from_row(user), factor),
            );
        }
        Ok(found)
    }

    pub async fn session_by_token_hash(&self, token_hash: &str) -> Result<Option<Session>> {
        Ok(session::Entity::find()
            .filter(session::Column::TokenHash.eq(token_hash))
            .one(&self.db)
            .await?
            .map(session_from_row))
    }

    /// Ends a live session; false if it was not live.
    pub async fn end_session(&self, id: &str, now: i64) -> Result<bool> {
        let result = session::Entity::update_many()
            .col_expr(session::Column::EndedAt, Expr::value(now))
            .filter(session::Column::Id.eq(id))
            .filter(session::Column::EndedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }
}

pub(super) fn user_from_row(r: user::Model) -> User {
    User {
        id: r.id,
        username: r.username,
        password_hash: r.password_hash,
        roles: r.roles.split_whitespace().map(str::to_owned).collect(),
        created_at: r.created_at,
    }
}

pub(super) fn session_from_row(r: session::Model) -> Session {
    Session {
        id: r.id,
        user_id: r.user_id,
        auth_time: r.auth_time,
        mfa_at: r.mfa_at,
        mfa_method: r.mfa_method.as_deref().and_then(Method::parse),
        expires_at: r.expires_at,
        ended_at: r.ended_at,
    }
}
