//! Session lookups for code checks, read in batches.
//!
//! Every `Verify` reads its session, user and factor before checking the
//! code. On SQLite each statement is handed to the connection's own thread
//! and its rows handed back, two thread switches that cost more than the
//! read itself; on PostgreSQL each is a round trip. So one task, the
//! [`SessionReader`], reads the sessions of all the lookups waiting in one
//! query (`WHERE id IN (...)`) and answers each, while the next batch
//! gathers ([`Batcher`]). A lookup sees the database as of its batch's
//! query, which starts after the lookup was asked for, as a read of its
//! own would.

use super::batch::Batcher;
use super::{Result, SessionContext, Store};

/// Hands lookups to the reader task; cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionReader(Batcher<String, Option<SessionContext>>);

impl SessionReader {
    /// Starts the reader task where `Store::batch_place` says.
    pub fn spawn(store: Store) -> Self {
        let place = store.batch_place();
        SessionReader(Batcher::spawn(
            "auth-sessions",
            place,
            move |ids: Vec<String>| {
                let store = store.clone();
                async move {
                    let keys: Vec<&str> = ids.iter().map(String::as_str).collect();
                    let found = store.sessions_with_users(&keys).await?;
                    // The same session may be asked for twice in one batch.
                    Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
                }
            },
        ))
    }

    /// [`Store::session_with_user`], in the next batch.
    pub async fn session_with_user(&self, session_id: &str) -> Result<Option<SessionContext>> {
        self.0.call(session_id.to_owned()).await
    }
}
