//! What `CheckAccess` would otherwise recompute on every call: the
//! verification of a token it has seen before ([`TokenCache`]) and what the
//! caller holds on the app ([`HoldingsCache`]). Both are bounded, and both
//! give the answers the uncached path gives, except for one documented
//! bound across replicas.
//!
//! Profiled before these caches (BENCHMARKS.md), about half of deploy's CPU
//! on `CheckAccess` went to its four database reads and under a tenth to
//! verifying the token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use padlock_token::{Claims, TokenError, Verifier};
use sha2::{Digest, Sha256};

use crate::keys::{KeyCache, VerifyError};
use crate::policy::Holdings;

/// Verified tokens kept at most, by default: about 1 KiB each (the claims
/// and the key id), so at most about 10 MB, against the service's 64 MB
/// budget (docs/design.md, "Targets"). Ten thousand is ten thousand people
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

/// How long a replica may answer `CheckAccess` from holdings it cached
/// without asking the database whether the app's permissions changed, by
/// default. See [`HoldingsCache`].
pub const DEFAULT_PERMISSION_RECHECK: Duration = Duration::from_secs(1);

/// People's holdings (and apps) kept at most, by default: a few hundred
/// bytes each, so a few MB.
pub const DEFAULT_HOLDINGS_CACHE_ENTRIES: usize = 10_000;

/// What people hold on an app (Technical Contact or not, node permissions),
/// for `CheckAccess` only, kept with the app's permissions version
/// (`Store::permissions_version`), which every team or node-permission
/// change bumps in its own transaction.
///
/// Kept holdings are used while the version they were read under is
/// current, and the version is re-read from the database
/// - after any team or node-permission change committed through this
///   replica's store (`Store::local_permission_changes`): a revocation
///   counts from the next request on the replica that made it;
/// - otherwise at most every `recheck` (default
///   [`DEFAULT_PERMISSION_RECHECK`], `--permission-recheck-ms`): a change
///   made through another replica counts on this one within that time.
///   `0` re-reads it on every call, exact across replicas at the cost of one
///   primary-key read per call.
///
/// That bound is acceptable because `CheckAccess` is advisory: it changes
/// nothing and only tells the UI where to draw padlocks. The padlocked
/// actions themselves (`App::authorize`) always read the holdings from the
/// database. Re-reading the holdings themselves on a timer would cost two
/// queries per person per interval; the version costs one per app.
///
/// Over `capacity` entries (apps plus people), everything is dropped and
/// read again on demand: memory stays flat whatever the load.
#[derive(Debug)]
pub struct HoldingsCache {
    recheck_ms: i64,
    capacity: usize,
    apps: Mutex<Apps>,
}

#[derive(Debug, Default)]
struct Apps {
    by_id: HashMap<String, AppHoldings>,
    /// People kept, over all apps.
    people: usize,
}

/// One app's version as last read, and the holdings read under it.
#[derive(Debug)]
struct AppHoldings {
    version: i64,
    /// Clock time of the read, in Unix milliseconds (taken before it).
    checked_at_ms: i64,
    /// `Store::local_permission_changes` as it was before the read.
    local_changes: u64,
    people: HashMap<String, Arc<Holdings>>,
}

impl HoldingsCache {
    pub fn new(recheck: Duration, capacity: usize) -> Self {
        Self {
            recheck_ms: i64::try_from(recheck.as_millis()).unwrap_or(i64::MAX),
            capacity: capacity.max(1),
            apps: Mutex::new(Apps::default()),
        }
    }

    /// `app_id`'s version, if the last read of it may still be used at
    /// `now_ms` with the store's change count at `local_changes`; `None`
    /// means read it again ([`HoldingsCache::checked`]).
    pub fn version(&self, app_id: &str, now_ms: i64, local_changes: u64) -> Option<i64> {
        let apps = self.lock();
        let app = apps.by_id.get(app_id)?;
        let age = now_ms.checked_sub(app.checked_at_ms)?;
        let current = app.local_changes == local_changes && (0..self.recheck_ms).contains(&age);
        current.then_some(app.version)
    }

    /// Records that the database gave `version` for `app_id` in a read
    /// started at `now_ms`, after the store's change count was
    /// `local_changes`. A newer version drops the holdings kept under the
    /// old one; an older one (a slower concurrent read) is ignored.
    pub fn checked(&self, app_id: &str, version: i64, now_ms: i64, local_changes: u64) {
        let mut apps = self.lock();
        let Apps { by_id, people } = &mut *apps;
        if let Some(app) = by_id.get_mut(app_id) {
            if version < app.version {
                return;
            }
            if version > app.version {
                *people -= app.people.len();
                app.people.clear();
                app.version = version;
            }
            app.checked_at_ms = app.checked_at_ms.max(now_ms);
            app.local_changes = app.local_changes.max(local_changes);
            return;
        }
        if by_id.len() + *people >= self.capacity {
            by_id.clear();
            *people = 0;
        }
        by_id.insert(
            app_id.to_owned(),
            AppHoldings {
                version,
                checked_at_ms: now_ms,
                local_changes,
                people: HashMap::new(),
            },
        );
    }

    /// Forgets `app_id` (the database has no such app).
    pub fn forget(&self, app_id: &str) {
        let mut apps = self.lock();
        if let Some(app) = apps.by_id.remove(app_id) {
            apps.people -= app.people.len();
        }
    }

    /// What `username` holds on `app_id`, if read under `version`.
    pub fn holdings(&self, app_id: &str, username: &str, version: i64) -> Option<Arc<Holdings>> {
        let apps = self.lock();
        let app = apps.by_id.get(app_id).filter(|a| a.version == version)?;
        app.people.get(username).cloned()
    }

    /// Keeps what `username` holds on `app_id`, read from the database
    /// after `version` was. Dropped if the app's version moved on meanwhile.
    pub fn keep(&self, app_id: &str, username: &str, version: i64, holdings: Arc<Holdings>) {
        let mut apps = self.lock();
        let Apps { by_id, people } = &mut *apps;
        if by_id.len() + *people >= self.capacity {
            by_id.clear();
            *people = 0;
            return;
        }
        let Some(app) = by_id.get_mut(app_id).filter(|a| a.version == version) else {
            return;
        };
        if app.people.insert(username.to_owned(), holdings).is_none() {
            *people += 1;
        }
    }

    /// Apps plus people kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        let apps = self.lock();
        apps.by_id.len() + apps.people
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Apps> {
        self.apps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Env;
    use crate::policy::{Grant, Permission};

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

    fn holding(permission: Permission) -> Arc<Holdings> {
        Arc::new(Holdings {
            technical_contact_of: vec![],
            grants: vec![Grant {
                app_id: "app".into(),
                env: Env::Production,
                permission,
            }],
        })
    }

    const MS: i64 = NOW * 1000;

    #[test]
    fn holdings_are_kept_under_their_version_until_the_recheck() {
        let cache = HoldingsCache::new(Duration::from_millis(1000), 100);
        assert_eq!(cache.version("app", MS, 0), None);
        cache.checked("app", 3, MS, 0);
        cache.keep("app", "dev", 3, holding(Permission::Transport));
        assert_eq!(cache.version("app", MS + 999, 0), Some(3));
        assert!(cache.holdings("app", "dev", 3).is_some());
        assert!(cache.holdings("app", "ops", 3).is_none());
        // Time to ask the database again, or a clock that went back.
        assert_eq!(cache.version("app", MS + 1000, 0), None);
        assert_eq!(cache.version("app", MS - 1, 0), None);
        // The same version: the holdings stay.
        cache.checked("app", 3, MS + 1000, 0);
        assert_eq!(cache.version("app", MS + 1500, 0), Some(3));
        assert!(cache.holdings("app", "dev", 3).is_some());
    }

    #[test]
    fn a_change_through_this_store_forces_a_recheck_at_once() {
        let cache = HoldingsCache::new(Duration::from_secs(3600), 100);
        cache.checked("app", 1, MS, 7);
        assert_eq!(cache.version("app", MS, 7), Some(1));
        assert_eq!(cache.version("app", MS, 8), None);
    }

    #[test]
    fn a_new_version_drops_the_holdings_and_an_old_one_is_ignored() {
        let cache = HoldingsCache::new(Duration::from_secs(1), 100);
        cache.checked("app", 1, MS, 0);
        cache.keep("app", "dev", 1, holding(Permission::Transport));
        cache.checked("app", 2, MS + 10, 1);
        assert!(cache.holdings("app", "dev", 1).is_none());
        assert!(cache.holdings("app", "dev", 2).is_none());
        assert_eq!(cache.len(), 1, "the app alone");
        // Read under version 1 by a slower request: not kept.
        cache.keep("app", "dev", 1, holding(Permission::Transport));
        assert!(cache.holdings("app", "dev", 2).is_none());
        // A slower read of version 1 does not take the app back.
        cache.checked("app", 1, MS + 20, 1);
        assert_eq!(cache.version("app", MS + 20, 1), Some(2));
    }

    #[test]
    fn zero_recheck_always_asks_the_database() {
        let cache = HoldingsCache::new(Duration::ZERO, 100);
        cache.checked("app", 1, MS, 0);
        assert_eq!(cache.version("app", MS, 0), None);
    }

    #[test]
    fn holdings_cache_never_holds_more_than_its_capacity() {
        let cache = HoldingsCache::new(Duration::from_secs(1), 10);
        for app in 0..5 {
            let app = format!("app-{app}");
            cache.checked(&app, 1, MS, 0);
            for user in 0..20 {
                cache.keep(&app, &format!("user-{user}"), 1, holding(Permission::Logs));
                assert!(cache.len() <= 10, "{}", cache.len());
            }
        }
        cache.forget("app-4");
        assert!(cache.len() <= 10);
    }
}
