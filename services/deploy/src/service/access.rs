//! What the policy says, for clients that draw padlocks and open the
//! two-factor dialog before trying: the padlock table, and whether the
//! caller may do one action now. Changes nothing.

use padlock_token::Claims;

use super::App;
use crate::error::Result;
use crate::policy::{self, Action, Decision, Env};

impl App {
    /// The step-up decision for `claims` doing `action` on `env` of
    /// `app_id` now, from cached holdings ([`App::check_holdings`]).
    pub(crate) async fn check_access(
        &self,
        claims: &Claims,
        action: Action,
        app_id: &str,
        env: Env,
    ) -> Result<Decision> {
        let holdings = self
            .check_holdings(&claims.preferred_username, app_id)
            .await?;
        Ok(policy::decide(
            Ok(claims),
            self.policy(),
            action,
            app_id,
            env,
            &holdings,
            self.now(),
        ))
    }
}
