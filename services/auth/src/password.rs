//! Password hashing with argon2id (RFC 9106) at the argon2 crate's defaults
//! (m = 19 MiB, t = 2, p = 1: OWASP's minimum for argon2id). Hashing runs on
//! the blocking pool so it never stalls the RPC workers, and at most one
//! hash per core runs at once: each takes 19 MiB, so a burst of sign-ins
//! must queue rather than grow the process by gigabytes.

use std::sync::Arc;

use tokio::sync::Semaphore;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::rngs::OsRng;

use crate::error::{AuthError, Result};

/// Runs argon2 with bounded concurrency; cheap to clone.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

impl Hasher {
    pub fn new(concurrency: usize) -> Self {
        Hasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// One hash at a time per core.
    pub fn per_core() -> Self {
        Self::new(
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
        )
    }

    pub async fn hash(&self, password: String) -> Result<String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AuthError::Internal)?;
        hash(password).await
    }

    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
        dummy: String,
    ) -> Result<bool> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AuthError::Internal)?;
        verify(password, stored, dummy).await
    }
}

/// Hashes a new password into a PHC string.
async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| AuthError::Internal)
    })
    .await
    .map_err(|_| AuthError::Internal)?
}

/// Checks `password` against a PHC string. With no stored hash (unknown
/// user) it checks against `dummy` so both cases cost the same time.
async fn verify(password: String, stored: Option<String>, dummy: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let phc = stored.unwrap_or(dummy);
        let parsed = PasswordHash::new(&phc).map_err(|_| AuthError::Internal)?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && ok)
    })
    .await
    .map_err(|_| AuthError::Internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hasher_bounds_concurrency_and_still_answers() {
        let hasher = Hasher::new(1);
        let phcs = futures_lite_join(&hasher).await;
        assert!(phcs.iter().all(|p| p.starts_with("$argon2id$")));
        assert_eq!(
            hasher.permits.available_permits(),
            1,
            "every permit returned"
        );
    }

    async fn futures_lite_join(hasher: &Hasher) -> Vec<String> {
        let a = hasher.hash("one password".into());
        let b = hasher.hash("another one".into());
        let (a, b) = tokio::join!(a, b);
        vec![a.unwrap(), b.unwrap()]
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let phc = hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        let dummy = hash("dummy".into()).await.unwrap();
        assert!(
            verify("correct horse".into(), Some(phc.clone()), dummy.clone())
                .await
                .unwrap()
        );
        assert!(
            !verify("wrong".into(), Some(phc), dummy.clone())
                .await
                .unwrap()
        );
        // Unknown user: false even when the password matches the dummy.
        assert!(!verify("dummy".into(), None, dummy).await.unwrap());
    }
}
