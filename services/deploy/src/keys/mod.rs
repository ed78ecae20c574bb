//! Access-token verification against auth's JWKS, fetched over gRPC and
//! cached (docs/design.md, "Identity, sessions and tokens"): keys are fetched on
//! first use; a token with an unknown `kid` triggers at most one refresh per
//! [`MIN_REFRESH_INTERVAL_SECS`], shared by every request waiting for it.
//! Tokens and attacker-chosen header values are never logged.

mod source;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use padlock_runtime::SharedClock;
use padlock_token::{Claims, TokenError, Verifier};

pub use source::{FETCH_TIMEOUT, FetchError, GrpcJwksSource, JwksSource};

/// At most one unknown-`kid` refresh per 30 s: a rotation is picked up
/// within one request, while tokens with made-up key ids cannot turn the
/// deploy service into a load generator against auth.
pub const MIN_REFRESH_INTERVAL_SECS: i64 = 30;

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token itself is bad (feed it to [`crate::policy::decide`]).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No keys were ever fetched and auth cannot be reached: the caller
    /// should answer UNAVAILABLE, not blame the token.
    #[error("signing keys are unavailable")]
    KeysUnavailable,
}

/// The verifier built from the last good JWKS, with its key ids.
#[derive(Debug)]
struct Cached {
    verifier: Verifier,
    kids: Vec<String>,
}

/// Verifies access tokens with keys cached from a [`JwksSource`].
#[derive(Debug)]
pub struct KeyCache {
    source: Arc<dyn JwksSource>,
    issuer: String,
    audience: String,
    clock: SharedClock,
    cached: RwLock<Option<Arc<Cached>>>,
    /// Held while fetching, so concurrent callers wait for one fetch instead
    /// of starting their own. Holds the time of the last unknown-`kid`
    /// refresh, for the rate limit.
    gate: tokio::sync::Mutex<Option<i64>>,
    /// Fetch attempts finished; a caller that sees it move while waiting at
    /// the gate takes that attempt's result instead of fetching again.
    attempts: AtomicU64,
}

/// Why a fetch is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Nothing is cached yet.
    Empty,
    /// A token named a key id the cache does not hold; rate-limited.
    UnknownKid,
}

impl KeyCache {
    pub fn new(
        source: Arc<dyn JwksSource>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        clock: SharedClock,
    ) -> Self {
        Self {
            source,
            issuer: issuer.into(),
            audience: audience.into(),
            clock,
            cached: RwLock::new(None),
            gate: tokio::sync::Mutex::new(None),
            attempts: AtomicU64::new(0),
        }
    }

    /// Verifies `token` at the clock's current time. Fetches keys on first
    /// use; an unknown `kid` triggers at most one (rate-limited, shared)
    /// refresh and a second verification.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let cached = match self.current() {
            Some(cached) => cached,
            None => self
                .fetch_shared(Trigger::Empty, None)
                .await
                .ok_or(VerifyError::KeysUnavailable)?,
        };
        match cached.verifier.verify(token, self.clock.unix()) {
            Err(TokenError::UnknownKid(kid)) => {
                let cached = self
                    .fetch_shared(Trigger::UnknownKid, Some(&kid))
                    .await
                    .unwrap_or(cached);
                Ok(cached.verifier.verify(token, self.clock.unix())?)
            }
            other => Ok(other?),
        }
    }

    /// Fetches the keys now, regardless of the rate limit (start-up, health
    /// checks, tests). On failure the cached keys stay in use.
    #[cfg(test)]
    pub async fn refresh(&self) -> Result<(), FetchError> {
        let _gate = self.gate.lock().await;
        self.fetch_and_store().await.map(|_| ())
    }

    /// The key ids currently trusted, sorted.
    #[cfg(test)]
    pub fn cached_kids(&self) -> Vec<String> {
        self.current()
            .map(|cached| cached.kids.clone())
            .unwrap_or_default()
    }

    /// Whether the keys in use hold `kid` (deploy's token cache asks before
    /// reusing a verification made with that key).
    pub fn trusts_kid(&self, kid: &str) -> bool {
        self.current()
            .is_some_and(|cached| cached.verifier.has_kid(kid))
    }

    fn current(&self) -> Option<Arc<Cached>> {
        self.cached
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Single-flight fetch: returns the keys to verify with after waiting
    /// for (or doing) at most one fetch, or `None` when nothing is cached.
    async fn fetch_shared(&self, trigger: Trigger, kid: Option<&str>) -> Option<Arc<Cached>> {
        let seen = self.attempts.load(Ordering::Acquire);
        let mut last_refresh = self.gate.lock().await;
        let current = self.current();
        // Someone fetched while this caller waited at the gate: use that.
        if self.attempts.load(Ordering::Acquire) != seen {
            return current;
        }
        match trigger {
            Trigger::Empty if current.is_some() => return current,
            Trigger::Empty => {}
            Trigger::UnknownKid => {
                if let (Some(cached), Some(kid)) = (&current, kid)
                    && cached.verifier.has_kid(kid)
                {
                    return current;
                }
                let now = self.clock.unix();
                if last_refresh.is_some_and(|at| now.saturating_sub(at) < MIN_REFRESH_INTERVAL_SECS)
                {
                    tracing::debug!("unknown key id; JWKS refresh rate-limited");
                    return current;
                }
                *last_refresh = Some(now);
            }
        }
        match self.fetch_and_store().await {
            Ok(fresh) => Some(fresh),
            Err(_) => current,
        }
    }

    /// Fetches and, if usable, replaces the cached keys. Call with the gate
    /// held.
    async fn fetch_and_store(&self) -> Result<Arc<Cached>, FetchError> {
        let result = self.fetch_usable().await;
        self.attempts.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                tracing::info!(kids = ?fresh.kids, "JWKS fetched");
                *self.cached.write().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::clone(&fresh));
                Ok(fresh)
            }
            Err(error) => {
                if self.current().is_some() {
                    tracing::warn!(%error, "JWKS refresh failed; keeping the cached keys");
                } else {
                    tracing::warn!(%error, "JWKS fetch failed and no keys are cached");
                }
                Err(error)
            }
        }
    }

    async fn fetch_usable(&self) -> Result<Cached, FetchError> {
        let jwks = self.source.fetch().await?;
        let verifier = Verifier::new(&jwks, self.issuer.clone(), self.audience.clone());
        let mut kids: Vec<String> = jwks
            .keys
            .iter()
            .filter(|k| verifier.has_kid(&k.kid))
            .map(|k| k.kid.clone())
            .collect();
        kids.sort_unstable();
        kids.dedup();
        if kids.is_empty() {
            return Err(FetchError::NoUsableKeys);
        }
        Ok(Cached { verifier, kids })
    }
}

#[cfg(test)]
mod tests;
