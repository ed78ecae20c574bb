//! Reads that run on the pool or inside an [`super::AppChange`]: one
//! definition each, so a check made inside a change reads exactly what the
//! same check outside it reads.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entity::{app, deployment, node_permission, team_member};
use super::{
    App, Deployment, Member, NodeGrant, Result, Role, deployment_from_row, env_of, member_from_row,
    permission_of,
};
use crate::policy::Env;

pub(super) async fn app(conn: &impl ConnectionTrait, id: &str) -> Result<Option<App>> {
    let Some(row) = app::Entity::find_by_id(id.to_owned()).one(conn).await? else {
        return Ok(None);
    };
    Ok(Some(with_technical_contacts(conn, row).await?))
}

/// The app called `name`, if any: names are unique.
pub(super) async fn app_named(conn: &impl ConnectionTrait, name: &str) -> Result<Option<App>> {
    let Some(row) = app::Entity::find()
        .filter(app::Column::Name.eq(name))
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(with_technical_contacts(conn, row).await?))
}

/// `row` with its Technical Contacts, by username.
pub(super) async fn with_technical_contacts(
    conn: &impl ConnectionTrait,
    row: app::Model,
) -> Result<App> {
    let technical_contacts = team_member::Entity::find()
        .filter(team_member::Column::AppId.eq(row.id.as_str()))
        .filter(team_member::Column::Role.eq(Role::TechnicalContact.as_str()))
        .order_by_asc(team_member::Column::Username)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| m.username)
        .collect();
    Ok(App {
        id: row.id,
        name: row.name,
        created_at: row.created_at,
        technical_contacts,
    })
}

pub(super) async fn member(
    conn: &impl ConnectionTrait,
    app_id: &str,
    username: &str,
) -> Result<Option<Member>> {
    let row = team_member::Entity::find_by_id((app_id.to_owned(), username.to_owned()))
        .one(conn)
        .await?;
    Ok(row.and_then(member_from_row))
}

pub(super) async fn grants(
    conn: &impl ConnectionTrait,
    app_id: &str,
    username: Option<&str>,
) -> Result<Vec<NodeGrant>> {
    let mut query =
        node_permission::Entity::find().filter(node_permission::Column::AppId.eq(app_id));
    if let Some(username) = username {
        query = query.filter(node_permission::Column::Username.eq(username));
    }
    let rows = query
        .order_by_asc(node_permission::Column::Username)
        .order_by_asc(node_permission::Column::Environment)
        .order_by_asc(node_permission::Column::Permission)
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(NodeGrant {
                env: env_of(&r.environment)?,
                permission: permission_of(&r.permission)?,
                app_id: r.app_id,
                username: r.username,
            })
        })
        .collect())
}

pub(super) async fn deployments(
    conn: &impl ConnectionTrait,
    app_id: &str,
    env: Option<Env>,
    limit: u64,
) -> Result<Vec<Deployment>> {
    let mut query = deployment::Entity::find().filter(deployment::Column::AppId.eq(app_id));
    if let Some(env) = env {
        query = query.filter(deployment::Column::Environment.eq(env.as_str()));
    }
    let rows = query
        .order_by_desc(deployment::Column::Id)
        .limit(limit)
        .all(conn)
        .await?;
    Ok(rows.into_iter().filter_map(deployment_from_row).collect())
}

pub(super) async fn current_deployment(
    conn: &impl ConnectionTrait,
    app_id: &str,
    env: Env,
) -> Result<Option<Deployment>> {
    Ok(deployments(conn, app_id, Some(env), 1)
        .await?
        .into_iter()
        .next())
}
