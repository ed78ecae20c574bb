//! sea-orm entities for the auth tables. Private to the store: handlers see
//! the domain types in `store`, never these.

pub mod user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub username: String,
        pub password_hash: String,
        pub roles: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub user_id: String,
        pub token_hash: String,
        pub auth_time: i64,
        pub mfa_at: Option<i64>,
        pub mfa_method: Option<String>,
        pub created_at: i64,
        pub expires_at: i64,
        pub ended_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod factor {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "factors")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        pub method: String,
        pub state: String,
        pub enrollment_id: String,
        pub secret_key_id: String,
        pub secret_ciphertext: Vec<u8>,
        pub created_at: i64,
        pub enrollment_expires_at: i64,
        pub activated_at: Option<i64>,
        pub last_step: Option<i64>,
        pub failed_attempts: i32,
        pub locked_until: Option<i64>,
        pub lockouts: i32,
        pub code_hash: Option<String>,
        pub code_key_id: Option<String>,
        pub code_expires_at: Option<i64>,
        pub code_tries: i32,
        pub code_sent_at: Option<i64>,
        pub masked_phone: Option<String>,
        pub phone_mac: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
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
        pub kind: String,
        pub outcome: String,
        pub actor: Option<String>,
        pub subject: Option<String>,
        pub session_id: Option<String>,
        pub detail: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod sms_limit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sms_limits")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub bucket: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub window_start: i64,
        pub count: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
