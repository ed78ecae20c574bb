//! What `CheckAccess` would otherwise recompute on every call: the
//! verification of a token it has seen before ([`TokenCache`]). Bounded,
//! and giving the answers the uncached path gives.
//!
//! Profiled before this cache (BENCHMARKS.md), about half of deploy's CPU
//! on `CheckAccess` went to its four database reads and under a tenth to
//! verifying the token.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use padlock_token::{Claims, TokenError, Verifier};
use sha2::{Digest, Sha256};

use crate::keys::{KeyCache, VerifyError};

/// Verified tokens kept at most, by default: about 1 KiB each (the claims
/// and the key id), so at most about 10 MB, against the service's 64 MB
/// budget (DESIGN.md, "Targets"). Ten thousand is ten thousand people
/// active within one token lifetime (10 minutes) on one replica.
pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 10_000;

/// Claims of tokens that passed [`KeyCache::verify`], keyed by the
/// SHA-256 of the token (the token itself is not kept).
///
/// Reusing a verification is exact because everything the verifier checks
/// either cannot change for a given token string (signature, `alg`, `iss`,
/// `aud`: they are all in the hashed bytes) or is checked again at every
/// use:
/// - the time checks (`exp`, `iat`, `mfa_at` in the future) run again
///   against the clock ([`Verifier::check_times`]), so a kept token never
///   lives past its `exp` plus the verifier's leeway;
/// - the key that verified it must still be in the key set: after a JWKS
///   refresh that dropped its `kid`, the entry is discarded and the token
///   verified afresh (and refused as an unknown key, as without the cache).
///   A `kid` is auth's RFC 7638 thumbprint of the key, so a `kid` still in
///   the set is the same key.
///
/// Failed verifications are not kept: a bad token costs a full check every
/// time, as before. The policy's freshness rule (`mfa_at` plus the action's
/// max age against now) is not part of verification and is never cached.
#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    entries: RwLock<HashMap<[u8; 32], Kept>>,
}

#[derive(Debug, Clone)]
struct Kept {
    claims: Arc<Claims>,
    kid: String,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// [`KeyCache::verify`] at `now` (the time `keys` reads too), reusing
    /// an earlier success for the same token while it stays exact.
    pub async fn verify(
        &self,
        keys: &KeyCache,
        token: &str,
        now: i64,
    ) -> Result<Arc<Claims>, VerifyError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(kept) = self.get(&digest) {
            if keys.trusts_kid(&kept.kid) {
                return match Verifier::check_times(&kept.claims, now) {
                    Ok(()) => Ok(kept.claims),
                    Err(error) => {
                        if error == TokenError::Expired {
                            self.remove(&digest);
                        }
                        Err(error.into())
                    }
                };
            }
            self.remove(&digest);
        }
        let claims = Arc::new(keys.verify(token).await?);
        // The header parsed a moment ago inside `verify`; it cannot fail now.
        let kid = Verifier::decode_header_kid(token)?;
        self.insert(
            digest,
            Kept {
                claims: Arc::clone(&claims),
                kid,
            },
            now,
        );
        Ok(claims)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.read().len()
    }

    fn get(&self, digest: &[u8; 32]) -> Option<Kept> {
        self.read().get(digest).cloned()
    }

    fn remove(&self, digest: &[u8; 32]) {
        self.write().remove(digest);
    }

    /// Keeps `kept`; when full, first drops what has expired, then the
    /// eighth of the entries that expire soonest (they have the least use
    /// left), so eviction runs once per many inserts.
    fn insert(&self, digest: [u8; 32], kept: Kept, now: i64) {
        let mut entries = self.write();
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries
                .retain(|_, k| Verifier::check_times(&k.claims, now) != Err(TokenError::Expired));
            let target = self.capacity - self.capacity.div_ceil(8);
            if entries.len() > target {
                let mut by_exp: Vec<(i64, [u8; 32])> =
                    entries.iter().map(|(d, k)| (k.claims.exp, *d)).collect();
                let excess = by_exp.len() - target;
                by_exp.select_nth_unstable(excess - 1);
                for (_, d) in &by_exp[..excess] {
                    entries.remove(d);
                }
            }
        }
        entries.insert(digest, kept);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], Kept>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], Kept>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn kept(exp: i64) -> Kept {
        Kept {
            claims: Arc::new(Claims {
                iss: "padlock-auth".into(),
                aud: "padlock-deploy".into(),
                sub: "id".into(),
                preferred_username: "dev".into(),
                roles: vec![],
                sid: "sid".into(),
                iat: NOW - 10,
                exp,
                jti: "jti".into(),
                auth_time: NOW - 10,
                amr: vec!["pwd".into()],
                acr: "aal1".into(),
                mfa_at: None,
                mfa_method: None,
            }),
            kid: "kid".into(),
        }
    }

    fn digest(n: u32) -> [u8; 32] {
        Sha256::digest(n.to_be_bytes()).into()
    }

    #[test]
    fn token_cache_never_holds_more_than_its_capacity() {
        let cache = TokenCache::new(8);
        for n in 0..100 {
            cache.insert(digest(n), kept(NOW + 600 + i64::from(n)), NOW);
            assert!(cache.len() <= 8, "{} after {n}", cache.len());
        }
        // The ones that expire last are the ones left.
        assert!(cache.get(&digest(99)).is_some());
        assert!(cache.get(&digest(0)).is_none());
    }

    #[test]
    fn a_full_token_cache_drops_expired_tokens_first() {
        let cache = TokenCache::new(4);
        let dead = NOW - padlock_token::LEEWAY_SECS - 1;
        cache.insert(digest(0), kept(dead), NOW);
        for n in 1..4 {
            cache.insert(digest(n), kept(NOW + 600), NOW);
        }
        cache.insert(digest(4), kept(NOW + 600), NOW);
        assert!(cache.get(&digest(0)).is_none());
        for n in 1..5 {
            assert!(cache.get(&digest(n)).is_some(), "{n}");
        }
        assert_eq!(cache.len(), 4);
    }
}
