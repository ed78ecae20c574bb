//! The application state, built once (in `main` or a test) and shared by
//! every handler: storage, clock, signing keys, data keys and settings. Also
//! the two things every handler needs: who is calling, and a fresh token.
//! Both kinds of keys are read again on reload (SIGHUP), so rotating either
//! needs no restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use padlock_runtime::SharedClock;
use padlock_token::{Claims, KeyRing, Verifier};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use crate::config::Settings;
use crate::error::{AuthError, Result};
use crate::key_files::{SealedKeyFiles, Upgrade};
use crate::metrics::Metrics;
use crate::sealing::{DataKeySource, DataKeys};
use crate::sms::SmsSender;
use crate::store::{CodeChecks, Method, Session, Store, User};

/// Where the signing keys come from, so a reload reads the same place.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `current.pem` (generated if missing) and `previous.pem` in a
    /// directory, sealed under the data keys; keys found there in clear
    /// (from before sealing) are sealed when first read.
    Dir(PathBuf),
    /// Files named by configuration, sealed or in clear; never written.
    Files {
        current: PathBuf,
        previous: Option<PathBuf>,
    },
}

impl KeySource {
    /// Reads the keys, opening sealed files with `data_keys`.
    pub fn load(
        &self,
        data_keys: &DataKeys,
    ) -> std::result::Result<KeyRing, padlock_token::KeyError> {
        let format = SealedKeyFiles::new(data_keys, Upgrade::Clear);
        match self {
            KeySource::Dir(dir) => KeyRing::load_or_generate(dir, &format),
            KeySource::Files { current, previous } => {
                KeyRing::from_files(current, previous.as_deref(), &format)
            }
        }
    }

    /// The key files, current first; some may not exist.
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            KeySource::Dir(dir) => vec![
                dir.join(padlock_token::CURRENT_KEY_FILE),
                dir.join(padlock_token::PREVIOUS_KEY_FILE),
            ],
            KeySource::Files { current, previous } => {
                std::iter::once(current).chain(previous).cloned().collect()
            }
        }
    }
}

/// Every key the service holds, swapped as one on reload.
#[derive(Debug)]
struct Keys {
    ring: KeyRing,
    verifier: Verifier,
    data: Arc<DataKeys>,
}

/// Shared, cheap to clone.
#[derive(Debug, Clone)]
pub struct App(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: Store,
    checks: CodeChecks,
    clock: SharedClock,
    settings: Settings,
    key_source: KeySource,
    data_key_source: DataKeySource,
    keys: RwLock<Arc<Keys>>,
    dummy_password_hash: String,
    hasher: crate::password::Hasher,
    sms: Arc<dyn SmsSender>,
    metrics: Metrics,
}

/// The authenticated caller of an RPC.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    pub session: Session,
}

/// A freshly signed access token.
#[derive(Debug)]
pub(crate) struct IssuedToken {
    pub token: String,
    pub expires_at: i64,
}

impl App {
    pub async fn new(
        store: Store,
        clock: SharedClock,
        settings: Settings,
        key_source: KeySource,
        data_key_source: DataKeySource,
        sms: Arc<dyn SmsSender>,
    ) -> anyhow::Result<Self> {
        let keys = load_keys(&key_source, &data_key_source, &settings)?;
        let hasher = crate::password::Hasher::new(settings.password_hashes_at_once);
        let dummy_password_hash = hasher.hash("padlock-dummy-password".into()).await?;
        Ok(App(Arc::new(Inner {
            checks: CodeChecks::spawn(store.clone()),
            store,
            clock,
            settings,
            key_source,
            data_key_source,
            keys: RwLock::new(Arc::new(keys)),
            dummy_password_hash,
            hasher,
            sms,
            metrics: Metrics::new(&padlock_runtime::otel::meter()),
        })))
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// Where codes are checked, in batches (`store::code_checks`).
    pub(crate) fn code_checks(&self) -> &CodeChecks {
        &self.0.checks
    }

    pub fn now(&self) -> i64 {
        self.0.clock.unix()
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// The data keys as of now (a reload may replace them).
    pub fn data_keys(&self) -> Arc<DataKeys> {
        self.keys().data.clone()
    }

    pub fn sms(&self) -> &dyn SmsSender {
        self.0.sms.as_ref()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// argon2id, at most `--password-hashes-at-once` hashes at once.
    pub fn hasher(&self) -> &crate::password::Hasher {
        &self.0.hasher
    }

    pub(crate) fn dummy_password_hash(&self) -> String {
        self.0.dummy_password_hash.clone()
    }

    fn keys(&self) -> Arc<Keys> {
        match self.0.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The public keys, current first.
    pub fn jwks(&self) -> padlock_token::JwkSet {
        self.keys().ring.jwks()
    }

    /// Re-reads the data keys and the signing keys (after `padlock-auth
    /// keys rotate` or `data-keys rotate`). On any error nothing changes.
    pub fn reload_keys(&self) -> anyhow::Result<()> {
        let keys = load_keys(
            &self.0.key_source,
            &self.0.data_key_source,
            &self.0.settings,
        )?;
        let kid = keys.ring.jwks().keys.first().map(|k| k.kid.clone());
        let data_key = keys.data.current_key_id().to_owned();
        match self.0.keys.write() {
            Ok(mut slot) => *slot = Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
        }
        tracing::info!(current_kid = ?kid, current_data_key = %data_key, "keys reloaded");
        Ok(())
    }

    /// Signs an access token for `user` in `session`. `mfa_at` is the
    /// session's, never newer: refreshing does not extend it.
    pub(crate) fn issue_token(&self, user: &User, session: &Session) -> Result<IssuedToken> {
        let now = self.now();
        let settings = &self.0.settings;
        let expires_at = (now + settings.access_token_ttl).min(session.expires_at);
        let mut amr = vec!["pwd".to_owned()];
        let mut acr = "aal1";
        if let Some(method) = session.mfa_method.filter(|_| session.mfa_at.is_some()) {
            // RFC 8176 §2: "otp" for an authenticator app, "sms" for a texted code.
            amr.push(match method {
                Method::Totp => "otp".to_owned(),
                Method::Sms => "sms".to_owned(),
            });
            amr.push("mfa".to_owned());
            acr = "aal2";
        }
        let claims = Claims {
            iss: settings.issuer.clone(),
            aud: settings.audience.clone(),
            sub: user.id.clone(),
            preferred_username: user.username.clone(),
            roles: user.roles.clone(),
            sid: session.id.clone(),
            iat: now,
            exp: expires_at,
            jti: uuid::Uuid::new_v4().to_string(),
            auth_time: session.auth_time,
            amr,
            acr: acr.to_owned(),
            mfa_at: session.mfa_at.filter(|_| session.mfa_method.is_some()),
            mfa_method: session
                .mfa_method
                .filter(|_| session.mfa_at.is_some())
                .map(|m| m.as_str().to_owned()),
        };
        let token = self.keys().ring.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "signing failed");
            AuthError::Internal
        })?;
        Ok(IssuedToken { token, expires_at })
    }

    /// The caller named by `authorization: Bearer <access token>`: a token
    /// we signed, for a session that is still live.
    pub async fn caller(&self, metadata: &MetadataMap) -> Result<Caller> {
        let (claims, now) = self.bearer_claims(metadata)?;
        let session = self
            .0
            .store
            .session(&claims.sid)
            .await?
            .filter(|s| s.user_id == claims.sub && s.is_live(now))
            .ok_or(AuthError::SessionInvalid)?;
        Ok(Caller { claims, session })
    }

    /// The claims of the bearer token in `metadata`, checked now, and
    /// that time.
    pub(crate) fn bearer_claims(&self, metadata: &MetadataMap) -> Result<(Claims, i64)> {
        let token =
            padlock_runtime::metadata::bearer_token(metadata).ok_or(AuthError::TokenInvalid)?;
        let now = self.now();
        let claims = self
            .keys()
            .verifier
            .verify(token, now)
            .map_err(|_| AuthError::TokenInvalid)?;
        Ok((claims, now))
    }

    /// The caller's user record (current roles, not the token's).
    pub(crate) async fn caller_user(&self, caller: &Caller) -> Result<User> {
        self.0
            .store
            .user_by_id(&caller.claims.sub)
            .await?
            .ok_or(AuthError::TokenInvalid)
    }
}

fn load_keys(
    source: &KeySource,
    data_source: &DataKeySource,
    settings: &Settings,
) -> anyhow::Result<Keys> {
    let data = data_source.load()?;
    let ring = source.load(&data)?;
    let verifier = Verifier::new(
        &ring.jwks(),
        settings.issuer.clone(),
        settings.audience.clone(),
    );
    Ok(Keys {
        ring,
        verifier,
        data: Arc::new(data),
    })
}

/// A new opaque session token: 256 random bits, base64url.
pub(crate) fn new_session_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// How a session token is stored: SHA-256, hex. The token has 256 bits of
/// entropy, so a fast hash is enough.
pub(crate) fn hash_session_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The default database: SQLite in the data directory.
pub(crate) fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("auth.db").display())
}
