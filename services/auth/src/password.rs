//! Password hashing with argon2id (RFC 9106) at the argon2 crate's defaults
//! (m = 19 MiB, t = 2, p = 1: OWASP's minimum for argon2id). Hashing runs on
//! the blocking pool so it never stalls the RPC workers, and only a set
//! number of hashes run at once (`--password-hashes-at-once`, default 1):
//! each takes 19 MiB, so a burst of sign-ins queues rather than growing the
//! process.
//!
//! Each hash's 19 MiB go back to the system as soon as it is done (see
//! [`Memory`]): the argon2 crate's own allocation left the process at over
//! 500 MB after a thousand sign-ups (BENCHMARKS.md).

use std::sync::Arc;

use tokio::sync::Semaphore;

use argon2::password_hash::{Output, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::OsRng;

use crate::error::{AuthError, Result};

/// Runs argon2 with bounded concurrency; cheap to clone.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

impl Hasher {
    /// At most `concurrency` hashes at once (at least one).
    pub fn new(concurrency: usize) -> Self {
        Hasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Hashes a new password into a PHC string, at the default parameters.
    pub async fn hash(&self, password: String) -> Result<String> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            let argon2 = Argon2::default();
            let output = compute(&argon2, password.as_bytes(), salt.as_salt())?;
            let phc = PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::default().into()),
                params: argon2.params().try_into()?,
                salt: Some(salt.as_salt()),
                hash: Some(output),
            };
            Ok(phc.to_string())
        })
        .await
    }

    /// Checks `password` against a PHC string, with the algorithm, version
    /// and parameters that string names. With no stored hash (unknown user)
    /// it checks against `dummy` so both cases cost the same time.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
        dummy: String,
    ) -> Result<bool> {
        let known = stored.is_some();
        let phc = stored.unwrap_or(dummy);
        let ok = self
            .run(move || {
                let parsed = PasswordHash::new(&phc)?;
                Ok(matches(&parsed, password.as_bytes()).unwrap_or(false))
            })
            .await?;
        Ok(known && ok)
    }

    /// Runs `task` on the blocking pool once a permit is free.
    async fn run<T: Send + 'static>(
        &self,
        task: impl FnOnce() -> argon2::password_hash::Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AuthError::Internal)?;
        tokio::task::spawn_blocking(task)
            .await
            .map_err(|_| AuthError::Internal)?
            .map_err(|_| AuthError::Internal)
    }
}

/// argon2's working memory for one hash, given back to the system when
/// dropped.
///
/// The argon2 crate allocates its 19 MiB with `vec!` and frees them after
/// each hash. glibc serves the first such allocation with its own mapping,
/// but freeing it raises glibc's mmap threshold to 19 MiB (mallopt(3),
/// "dynamic mmap threshold"), so every later one came from, and stayed in,
/// the malloc arena of whichever blocking thread ran the hash: 513 MB
/// after provisioning 1,700 users. Reserving more than the highest
/// threshold glibc ever adopts (32 MiB on 64-bit) keeps every allocation a
/// mapping of its own, unmapped on drop; only the blocks argon2 uses are
/// ever touched, so the reserve beyond them costs address space, not
/// memory. (musl and jemalloc map allocations this large directly too.)
struct Memory(Vec<Block>);

/// 33 MiB of 1 KiB blocks: above glibc's `DEFAULT_MMAP_THRESHOLD_MAX`.
const RESERVED_BLOCKS: usize = 33 * 1024;

impl Memory {
    fn for_params(params: &Params) -> Self {
        let mut blocks = Vec::with_capacity(RESERVED_BLOCKS.max(params.block_count()));
        blocks.resize(params.block_count(), Block::new());
        Memory(blocks)
    }
}

/// Whether `password` hashes to `phc`'s output under the algorithm,
/// version and parameters `phc` names (as argon2's own `verify_password`).
fn matches(phc: &PasswordHash<'_>, password: &[u8]) -> argon2::password_hash::Result<bool> {
    let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else {
        return Ok(false);
    };
    let version = phc.version.map(Version::try_from).transpose()?;
    let argon2 = Argon2::new(
        Algorithm::try_from(phc.algorithm)?,
        version.unwrap_or_default(),
        Params::try_from(phc)?,
    );
    // `Output`'s equality is constant-time.
    Ok(compute(&argon2, password, salt)? == expected)
}

/// argon2 of `password` and `salt` under `argon2`'s parameters.
fn compute(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: Salt<'_>,
) -> argon2::password_hash::Result<Output> {
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let params = argon2.params();
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let mut memory = Memory::for_params(params);
    Output::init_with(len, |out| {
        Ok(argon2.hash_password_into_with_memory(password, salt_bytes, out, &mut memory.0)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

    #[tokio::test]
    async fn the_hasher_bounds_concurrency_and_still_answers() {
        let hasher = Hasher::new(2);
        let (a, b, c) = tokio::join!(
            hasher.hash("one password".into()),
            hasher.hash("another one".into()),
            hasher.hash("a third".into()),
        );
        for phc in [a, b, c] {
            assert!(phc.unwrap().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        }
        assert_eq!(
            hasher.permits.available_permits(),
            2,
            "every permit returned"
        );
    }

    #[test]
    fn argon2_memory_is_reserved_above_glibcs_largest_mmap_threshold() {
        let memory = Memory::for_params(&Params::default());
        assert_eq!(memory.0.len(), Params::DEFAULT_M_COST as usize);
        // glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: 4 MiB * sizeof(long).
        assert!(memory.0.capacity() * Block::SIZE > 32 * 1024 * 1024);
        let larger = Params::new(40 * 1024, 1, 1, None).unwrap();
        assert_eq!(Memory::for_params(&larger).0.len(), 40 * 1024);
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hasher = Hasher::new(1);
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        let dummy = hasher.hash("dummy".into()).await.unwrap();
        assert_ne!(phc, dummy);
        let verify = |password: &str, stored: Option<&str>| {
            hasher.verify(password.into(), stored.map(str::to_owned), dummy.clone())
        };
        assert!(verify("correct horse", Some(&phc)).await.unwrap());
        assert!(!verify("wrong", Some(&phc)).await.unwrap());
        // Unknown user: false even when the password matches the dummy.
        assert!(!verify("dummy", None).await.unwrap());
        assert!(verify("x", Some("not a phc string")).await.is_err());
    }

    /// Our PHC strings are argon2's own, and verification follows the
    /// stored parameters, including the older argon2i/v=16 forms.
    #[tokio::test]
    async fn verification_uses_the_stored_parameters() {
        let hasher = Hasher::new(1);
        let ours = hasher.hash("pw".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"pw2", &parsed).is_err());

        let salt = SaltString::generate(&mut OsRng);
        let others = [
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(8 * 1024, 3, 1, None),
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(24 * 1024, 1, 2, Some(16)),
            ),
            (
                Algorithm::Argon2i,
                Version::V0x10,
                Params::new(1024, 2, 1, None),
            ),
        ];
        for (algorithm, version, params) in others {
            let argon2 = Argon2::new(algorithm, version, params.unwrap());
            let phc = argon2.hash_password(b"pw", &salt).unwrap().to_string();
            let dummy = ours.clone();
            assert!(
                hasher
                    .verify("pw".into(), Some(phc.clone()), dummy.clone())
                    .await
                    .unwrap(),
                "{phc}"
            );
            assert!(
                !hasher
                    .verify("pw2".into(), Some(phc.clone()), dummy)
                    .await
                    .unwrap(),
                "{phc}"
            );
        }
    }
}
