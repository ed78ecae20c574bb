//! Server-side shortcuts for harnesses that drive the service in-process
//! (the fuzz targets): a user made as `padlock-auth users add` makes one,
//! and a live session as a sign-in (and, if asked, a verified code) leaves
//! behind, without a password hash or a code per session. Nothing here is
//! reachable over the network.

use crate::app::{App, hash_session_token, new_session_token};
use crate::factor::Method;
use crate::store::Session;

/// A live session's tokens.
#[derive(Debug, Clone)]
pub struct SessionTokens {
    /// A signed access token for the session.
    pub access_token: String,
    /// The opaque token `Refresh` and `SignOut` take.
    pub session_token: String,
}

impl App {
    /// Creates a user, as `padlock-auth users add` does; returns its id.
    pub async fn add_user(
        &self,
        username: &str,
        password: String,
        roles: Vec<String>,
    ) -> anyhow::Result<String> {
        let user = crate::grpc::support::create_user(
            self.store(),
            self.hasher(),
            self.now(),
            None,
            None,
            username,
            password,
            roles,
        )
        .await?;
        Ok(user.id)
    }

    /// A new live session of user `user_id`, signed in now; `stepped_up`:
    /// a TOTP code was verified in it just now.
    pub async fn open_session(
        &self,
        user_id: &str,
        stepped_up: bool,
    ) -> anyhow::Result<SessionTokens> {
        let user = self
            .store()
            .user_by_id(user_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no user {user_id}"))?;
        let now = self.now();
        let session_token = new_session_token();
        let session = Session {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            auth_time: now,
            mfa_at: stepped_up.then_some(now),
            mfa_method: stepped_up.then_some(Method::Totp),
            expires_at: now + self.settings().session_ttl,
            ended_at: None,
        };
        self.store()
            .create_session(&session, &hash_session_token(&session_token), now)
            .await?;
        let access_token = self.issue_token(&user, &session)?.token;
        Ok(SessionTokens {
            access_token,
            session_token,
        })
    }
}
