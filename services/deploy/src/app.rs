//! The application state, built once and shared by every handler, and the
//! two questions every handler asks: who is calling, and may they do this
//! padlocked action now (asked before anything changes).

use std::sync::Arc;

use padlock_runtime::SharedClock;
use padlock_token::{Claims, TokenError};
use tonic::metadata::MetadataMap;

use crate::blobs::BlobStore;
use crate::cache::{
    DEFAULT_HOLDINGS_CACHE_ENTRIES, DEFAULT_TOKEN_CACHE_ENTRIES, HoldingsCache, TokenCache,
};
use crate::error::{DeployError, Result};
use crate::keys::{KeyCache, VerifyError};
use crate::metrics::Metrics;
use crate::policy::{self, Action, Env, Grant, Holdings, Policy};
use crate::store::{AppChange, AuditEvent, Member, NodeGrant, Outcome, Role, Store};

/// Roles (from auth's token) that may create apps.
pub const APP_CREATOR_ROLES: [&str; 2] = ["operator", "support"];

#[derive(Debug, Clone)]
pub struct App(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: Store,
    clock: SharedClock,
    keys: KeyCache,
    /// Verifications of tokens seen before, reused while exact.
    tokens: TokenCache,
    /// What people hold, for `CheckAccess` only.
    holdings: HoldingsCache,
    policy: Policy,
    blobs: BlobStore,
    metrics: Metrics,
    /// Serialises "store the blob, write its row, or undo the blob", so an
    /// undo never removes content a concurrent upload of the same bytes is
    /// about to reference.
    package_commit: tokio::sync::Mutex<()>,
}

/// A verified token, or one whose only fault is `mfa_at` in the future.
pub type Verified = std::result::Result<Claims, TokenError>;

/// A caller the policy let through, with the second factor relied on.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub claims: Claims,
}

impl Authorized {
    pub fn username(&self) -> &str {
        &self.claims.preferred_username
    }
}

impl App {
    pub fn new(
        store: Store,
        clock: SharedClock,
        keys: KeyCache,
        policy: Policy,
        blobs: BlobStore,
        permission_recheck: std::time::Duration,
    ) -> Self {
        App(Arc::new(Inner {
            store,
            clock,
            keys,
            tokens: TokenCache::new(DEFAULT_TOKEN_CACHE_ENTRIES),
            holdings: HoldingsCache::new(permission_recheck, DEFAULT_HOLDINGS_CACHE_ENTRIES),
            policy,
            blobs,
            metrics: Metrics::new(&padlock_runtime::otel::meter()),
            package_commit: tokio::sync::Mutex::new(()),
        }))
    }

    /// Held from finishing an upload's blob until its row is written.
    pub async fn package_commit(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.package_commit.lock().await
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.0.blobs
    }

    pub fn policy(&self) -> &Policy {
        &self.0.policy
    }

    pub fn keys(&self) -> &KeyCache {
        &self.0.keys
    }

    pub fn now(&self) -> i64 {
        self.0.clock.unix()
    }

    /// The caller's verified claims, for actions without a padlock rule.
    pub async fn caller(&self, metadata: &MetadataMap) -> Result<Claims> {
        Ok(Claims::clone(&*self.caller_shared(metadata).await?))
    }

    /// [`App::caller`] without copying the claims out of the token cache.
    pub async fn caller_shared(&self, metadata: &MetadataMap) -> Result<Arc<Claims>> {
        let token =
            padlock_runtime::metadata::bearer_token(metadata).ok_or(DeployError::TokenInvalid)?;
        match self.verify_token(token).await {
            Ok(claims) => Ok(claims),
            Err(VerifyError::KeysUnavailable) => Err(DeployError::KeysUnavailable),
            Err(VerifyError::Token(_)) => Err(DeployError::TokenInvalid),
        }
    }

    /// Every token goes through here: [`KeyCache::verify`], or a reuse of
    /// an earlier verification of the same token that gives the same answer
    /// ([`TokenCache`]).
    async fn verify_token(&self, token: &str) -> std::result::Result<Arc<Claims>, VerifyError> {
        self.0.tokens.verify(&self.0.keys, token, self.now()).await
    }

    /// The caller's team membership of `app_id`, required.
    pub async fn member_of(&self, claims: &Claims, app_id: &str) -> Result<Member> {
        self.0
            .store
            .member(app_id, &claims.preferred_username)
            .await?
            .ok_or(DeployError::NotAMember)
    }

    /// What `username` holds on `app_id`, read from the database now.
    pub async fn holdings(&self, username: &str, app_id: &str) -> Result<Holdings> {
        let member = self.0.store.member(app_id, username).await?;
        let grants = self.0.store.grants(app_id, Some(username)).await?;
        Ok(holdings_of(app_id, member, grants))
    }

    /// What `username` holds on `app_id`, for `CheckAccess`: from the
    /// [`HoldingsCache`] while the app's permissions version is current by
    /// its rules, else from the database. `AppNotFound` if there is no such
    /// app. Padlocked actions use [`App::holdings`], always the database.
    pub async fn check_holdings(&self, username: &str, app_id: &str) -> Result<Arc<Holdings>> {
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

    /// The caller's token, verified first thing in every padlocked RPC, so
    /// an unauthenticated caller learns nothing about what exists. Only a
    /// token whose sole fault is an `mfa_at` in the future gets past here:
    /// the policy refuses that as `MFA_EXPIRED` for padlocked actions.
    pub async fn verify(&self, metadata: &MetadataMap) -> Result<Verified> {
        let token = padlock_runtime::metadata::bearer_token(metadata).unwrap_or_default();
        match self.verify_token(token).await {
            Ok(claims) => Ok(Ok(Claims::clone(&claims))),
            Err(VerifyError::Token(TokenError::MfaInFuture)) => Ok(Err(TokenError::MfaInFuture)),
            Err(VerifyError::Token(_)) => Err(DeployError::TokenInvalid),
            Err(VerifyError::KeysUnavailable) => Err(DeployError::KeysUnavailable),
        }
    }

    /// [`App::verify`] for a padlocked RPC: an invalid token is refused as
    /// the step-up rule's `TOKEN_INVALID`, with the rule's metadata when the
    /// request names a valid environment.
    pub async fn verify_for(
        &self,
        metadata: &MetadataMap,
        action: Action,
        env: Option<Env>,
    ) -> Result<Verified> {
        match (self.verify(metadata).await, env) {
            (Err(DeployError::TokenInvalid), Some(env)) => {
                let rule = self.0.policy.rule(action, env);
                self.0.metrics.step_up_refused(
                    policy::Refusal::TokenInvalid.reason().as_str_name(),
                    action,
                    env,
                );
                Err(DeployError::Refused(Box::new(policy::refusal_status(
                    policy::Refusal::TokenInvalid,
                    action,
                    env,
                    &rule,
                ))))
            }
            (other, _) => other,
        }
    }

    /// The step-up rule for `action` on `env` of `app_id`, checked inside
    /// the change that carries the action out: opens the app's change
    /// (`AppNotFound` without the app), reads what the caller holds there
    /// under the app's lock and decides. On a refusal the change is rolled
    /// back, the refusal of a known caller audited, and the rule's status
    /// returned; otherwise the caller and the open change, whose commit
    /// writes the action's audit record with it.
    pub async fn authorize(
        &self,
        verified: &Verified,
        action: Action,
        app_id: &str,
        env: Env,
    ) -> Result<(Authorized, AppChange)> {
        let change = self
            .0
            .store
            .change(app_id)
            .await?
            .ok_or(DeployError::AppNotFound)?;
        let holdings = match verified {
            Ok(claims) => {
                let username = claims.preferred_username.as_str();
                let member = change.member(username).await?;
                let grants = change.grants(Some(username)).await?;
                holdings_of(app_id, member, grants)
            }
            Err(_) => Holdings::default(),
        };
        let now = self.now();
        let decision = policy::decide(
            verified.as_ref(),
            &self.0.policy,
            action,
            app_id,
            env,
            &holdings,
            now,
        );
        let refusal = match (decision.outcome, verified) {
            (Ok(()), Ok(claims)) => {
                let who = Authorized {
                    claims: claims.clone(),
                };
                return Ok((who, change));
            }
            (Ok(()), Err(_)) => policy::Refusal::TokenInvalid,
            (Err(refusal), _) => refusal,
        };
        // Release the app (and on SQLite the write lock) before writing the
        // refusal's record in a transaction of its own.
        change.rollback().await?;
        let reason = policy::reason_for(refusal, &decision.rule).as_str_name();
        self.0.metrics.step_up_refused(reason, action, env);
        if let Ok(claims) = verified {
            self.0
                .store
                .audit(AuditEvent {
                    at: now,
                    actor: claims.preferred_username.clone(),
                    action: action.as_str(),
                    app_id: Some(app_id.to_owned()),
                    env: Some(env),
                    outcome: Outcome::Refused,
                    reason: Some(reason),
                    mfa_at: claims.mfa_at,
                    mfa_method: claims.mfa_method.clone(),
                    detail: String::new(),
                })
                .await?;
        }
        tracing::info!(
            action = action.as_str(),
            environment = env.as_str(),
            reason,
            "padlocked action refused"
        );
        Err(DeployError::Refused(Box::new(policy::refusal_status(
            refusal,
            action,
            env,
            &decision.rule,
        ))))
    }

    /// The audit record of an action `who` did on `app_id`, relying on the
    /// second factor their token carries.
    pub fn audit_ok(
        &self,
        who: &Authorized,
        action: &'static str,
        app_id: &str,
        env: Option<Env>,
        detail: String,
    ) -> AuditEvent {
        AuditEvent {
            at: self.now(),
            actor: who.username().to_owned(),
            action,
            app_id: Some(app_id.to_owned()),
            env,
            outcome: Outcome::Ok,
            reason: None,
            mfa_at: who.claims.mfa_at,
            mfa_method: who.claims.mfa_method.clone(),
            detail,
        }
    }
}

/// What a member holds on `app_id`: Technical Contact or not, and their
/// node permissions there (none for a non-member).
fn holdings_of(app_id: &str, member: Option<Member>, grants: Vec<NodeGrant>) -> Holdings {
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
