//! Who is calling: the bearer token verified (through the token cache),
//! and what the caller holds on an app, read from the database or, for
//! `CheckAccess` only, from the holdings cache.

use std::sync::Arc;

use padlock_token::{Claims, TokenError};
use tonic::metadata::MetadataMap;

use super::App;
use crate::error::{DeployError, Result};
use crate::keys::VerifyError;
use crate::policy::{Action, Env, Grant, Holdings, Refusal, Role};
use crate::store::{Member, NodeGrant};

/// The caller of a padlocked action after token verification: valid
/// claims, or a token whose only fault is an `mfa_at` in the future (the
/// policy refuses that as `MFA_EXPIRED` where a padlock applies).
#[derive(Debug, Clone)]
pub(crate) enum Verified {
    Claims(Arc<Claims>),
    MfaInFuture,
}

impl Verified {
    /// The claims, if the token was fully valid.
    pub(crate) fn claims(&self) -> Option<&Claims> {
        match self {
            Verified::Claims(claims) => Some(claims),
            Verified::MfaInFuture => None,
        }
    }
}

impl App {
    /// The caller's verified claims, for actions without a padlock rule.
    pub(crate) async fn caller(&self, metadata: &MetadataMap) -> Result<Claims> {
        Ok(Claims::clone(&*self.caller_shared(metadata).await?))
    }

    /// [`App::caller`] without copying the claims out of the token cache.
    pub(crate) async fn caller_shared(&self, metadata: &MetadataMap) -> Result<Arc<Claims>> {
        let token =
            padlock_runtime::metadata::bearer_token(metadata).ok_or(DeployError::TokenInvalid)?;
        match self.verify_token(token).await {
            Ok(claims) => Ok(claims),
            Err(VerifyError::KeysUnavailable) => Err(DeployError::KeysUnavailable),
            Err(VerifyError::Token(_)) => Err(DeployError::TokenInvalid),
        }
    }

    /// Every token goes through here: [`crate::keys::KeyCache::verify`], or
    /// a reuse of an earlier verification of the same token that gives the
    /// same answer ([`crate::cache::TokenCache`]).
    async fn verify_token(&self, token: &str) -> std::result::Result<Arc<Claims>, VerifyError> {
        self.0.tokens.verify(&self.0.keys, token, self.now()).await
    }

    /// The caller's token, verified first thing in every padlocked RPC, so
    /// an unauthenticated caller learns nothing about what exists. Only a
    /// token whose sole fault is an `mfa_at` in the future gets past here.
    pub(crate) async fn verify(&self, metadata: &MetadataMap) -> Result<Verified> {
        let token = padlock_runtime::metadata::bearer_token(metadata).unwrap_or_default();
        match self.verify_token(token).await {
            Ok(claims) => Ok(Verified::Claims(claims)),
            Err(VerifyError::Token(TokenError::MfaInFuture)) => Ok(Verified::MfaInFuture),
            Err(VerifyError::Token(_)) => Err(DeployError::TokenInvalid),
            Err(VerifyError::KeysUnavailable) => Err(DeployError::KeysUnavailable),
        }
    }

    /// [`App::verify`] for a padlocked RPC: an invalid token is refused as
    /// the step-up rule's `TOKEN_INVALID`, with the rule's metadata when the
    /// request names a valid environment.
    pub(crate) async fn verify_for(
        &self,
        metadata: &MetadataMap,
        action: Action,
        env: Option<Env>,
    ) -> Result<Verified> {
        match (self.verify(metadata).await, env) {
            (Err(DeployError::TokenInvalid), Some(env)) => {
                let refusal = Refusal::TokenInvalid;
                self.0
                    .metrics
                    .step_up_refused(refusal.reason(), action, env);
                Err(DeployError::Refused {
                    refusal,
                    action,
                    env,
                    rule: self.0.policy.rule(action, env),
                })
            }
            (other, _) => other,
        }
    }

    /// The caller's team membership of `app_id`, required.
    pub(crate) async fn member_of(&self, claims: &Claims, app_id: &str) -> Result<Member> {
        self.0
            .store
            .member(app_id, &claims.preferred_username)
            .await?
            .ok_or(DeployError::NotAMember)
    }

    /// What `username` holds on `app_id`, read from the database now.
    async fn holdings(&self, username: &str, app_id: &str) -> Result<Holdings> {
        let member = self.0.store.member(app_id, username).await?;
        let grants = self.0.store.grants(app_id, Some(username)).await?;
        Ok(holdings_of(app_id, member, grants))
    }

    /// What `username` holds on `app_id`, for `CheckAccess`: from the
    /// holdings cache while the app's permissions version is current by
    /// its rules, else from the database. `AppNotFound` if there is no such
    /// app. Padlocked actions read the database, inside their change.
    pub(crate) async fn check_holdings(
        &self,
        username: &str,
        app_id: &str,
    ) -> Result<Arc<Holdings>> {
        let cache = &self.0.holdings;
        // Read before the version, so a change committed here after this
        // point makes the next call read the version again.
        let local_changes = self.0.store.local_permission_changes();
        let now_ms = self.0.clock.now().timestamp_millis();
        let version = match cache.version(app_id, now_ms, local_changes) {
            Some(version) => version,
            None => {
                let Some(version) = self.0.store.permissions_version(app_id).await? else {
                    cache.forget(app_id);
                    return Err(DeployError::AppNotFound);
                };
                cache.checked(app_id, version, now_ms, local_changes);
                version
            }
        };
        if let Some(holdings) = cache.holdings(app_id, username, version) {
            return Ok(holdings);
        }
        // Read after the version: at least as new as what it stands for.
        let holdings = Arc::new(self.holdings(username, app_id).await?);
        cache.keep(app_id, username, version, Arc::clone(&holdings));
        Ok(holdings)
    }
}

/// What a member holds on `app_id`: Technical Contact or not, and their
/// node permissions there (none for a non-member).
pub(super) fn holdings_of(
    app_id: &str,
    member: Option<Member>,
    grants: Vec<NodeGrant>,
) -> Holdings {
    let technical_contact_of = match member {
        Some(m) if m.role == Role::TechnicalContact => vec![app_id.to_owned()],
        Some(_) => Vec::new(),
        None => return Holdings::default(),
    };
    let grants = grants
        .into_iter()
        .map(|g| Grant {
            app_id: g.app_id,
            env: g.env,
            permission: g.permission,
        })
        .collect();
    Holdings {
        technical_contact_of,
        grants,
    }
}
