//! sea-orm entities for the deploy tables; private to the store.

macro_rules! no_relations {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod app {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "apps")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub created_at: i64,
        pub created_by: String,
    }

    no_relations!();
}

pub mod team_member {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "team_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub app_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub username: String,
        pub role: String,
        pub added_at: i64,
        pub added_by: String,
    }

    no_relations!();
}

pub mod node_permission {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "node_permissions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub app_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub environment: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub username: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub permission: String,
        pub granted_at: i64,
        pub granted_by: String,
    }

    no_relations!();
}

pub mod package {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "packages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub app_id: String,
        pub version: String,
        pub file_name: String,
        pub size: i64,
        pub sha256: String,
        pub uploaded_by: String,
        pub uploaded_at: i64,
    }

    no_relations!();
}

pub mod deployment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deployments")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub app_id: String,
        pub package_id: String,
        pub environment: String,
        pub from_environment: Option<String>,
        pub deployed_by: String,
        pub deployed_at: i64,
        pub mfa_at: Option<i64>,
        pub mfa_method: Option<String>,
    }

    no_relations!();
}

/// Read only: records are written through `audit_chain`, which also owns
/// the chain's columns (`seq`, `prev_hash`, `hash`).
pub mod audit_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub at: i64,
        pub actor: String,
        pub action: String,
        pub app_id: Option<String>,
        pub environment: Option<String>,
        pub outcome: String,
        pub reason: Option<String>,
        pub mfa_at: Option<i64>,
        pub mfa_method: Option<String>,
        pub detail: String,
    }

    no_relations!();
}
