//! Session lookups for code checks, read in batches.
//!
//! Every `Verify` reads its session, user and factor before checking the
//! code. On SQLite each statement is handed to the connection's own thread
//! and its rows handed back, two thread switches that cost more than the
//! read itself; on PostgreSQL each is a round trip. So one task, the
//! [`SessionReader`], reads the sessions of all the lookups waiting in one
//! query (`WHERE id IN (...)`) and answers each, while the next batch
//! gathers. A lookup sees the database as of its batch's query, which
//! starts after the lookup was asked for, as a read of its own would.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use super::{Result, SessionContext, Store, StoreError};

/// Sessions read in one query at most.
const MAX_BATCH: usize = 256;

/// Lookups waiting at most; more wait to be queued.
const QUEUE: usize = 1024;

struct Lookup {
    session_id: String,
    reply: oneshot::Sender<Result<Option<SessionContext>>>,
}

/// Hands lookups to the reader task; cheap to clone. The task ends when
/// every handle is gone.
#[derive(Debug, Clone)]
pub struct SessionReader {
    lookups: mpsc::Sender<Lookup>,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup").finish_non_exhaustive()
    }
}

impl SessionReader {
    /// Starts the reader task on the current tokio runtime.
    pub fn spawn(store: Store) -> Self {
        let (lookups, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, queue));
        SessionReader { lookups }
    }

    /// [`Store::session_with_user`], in the next batch.
    pub async fn session_with_user(&self, session_id: &str) -> Result<Option<SessionContext>> {
        let (reply, found) = oneshot::channel();
        let lookup = Lookup {
            session_id: session_id.to_owned(),
            reply,
        };
        self.lookups
            .send(lookup)
            .await
            .map_err(|_| StoreError::Unavailable)?;
        found.await.map_err(|_| StoreError::Unavailable)?
    }
}

/// The reader: one batch at a time, as long as anyone can send.
async fn run(store: Store, mut queue: mpsc::Receiver<Lookup>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let ids: Vec<&str> = batch.iter().map(|l| l.session_id.as_str()).collect();
        match store.sessions_with_users(&ids).await {
            Ok(found) => answer(&mut batch, &found),
            Err(e) => {
                for lookup in batch.drain(..) {
                    let _ = lookup.reply.send(Err(e));
                }
            }
        }
    }
}

fn answer(batch: &mut Vec<Lookup>, found: &HashMap<String, SessionContext>) {
    for lookup in batch.drain(..) {
        // A caller that gave up is not waiting for the answer.
        let _ = lookup
            .reply
            .send(Ok(found.get(&lookup.session_id).cloned()));
    }
}
