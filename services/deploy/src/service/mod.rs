//! The service layer: the application state, built once and shared by
//! every adapter, and one use case per operation. A padlocked use case is
//! one function that verifies nothing itself (the adapter hands it the
//! [`Verified`] caller), authorizes inside the change that carries it out
//! (`authorize.rs`), makes the change and commits it with its audit
//! record; a refusal is audited and returned as a domain value.

mod access;
mod apps;
mod authorize;
mod caller;
mod nodes;
mod packages;
mod permissions;

use std::sync::Arc;

use padlock_runtime::SharedClock;
use padlock_token::Claims;

use crate::blobs::BlobStore;
use crate::cache::{
    DEFAULT_HOLDINGS_CACHE_ENTRIES, DEFAULT_TOKEN_CACHE_ENTRIES, HoldingsCache, TokenCache,
};
use crate::keys::KeyCache;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::store::Store;

pub(crate) use caller::Verified;
pub(crate) use nodes::{NodeView, node_name};
pub(crate) use packages::NewPackage;
pub(crate) use permissions::PermissionChange;

/// The deploy service's state: its store, package files, keys, caches and
/// policy. Cheap to clone; every clone shares the same state.
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

/// A caller the policy let through, with the second factor relied on.
#[derive(Debug, Clone)]
pub(crate) struct Authorized {
    pub(crate) claims: Claims,
}

impl Authorized {
    pub(crate) fn username(&self) -> &str {
        &self.claims.preferred_username
    }
}

impl App {
    pub(crate) fn new(
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

    /// The store, for tests that must look behind the gRPC surface
    /// ([`crate::inspect`]); the service's own code reaches it the same way.
    #[doc(hidden)]
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// Where the package with this SHA-256 is (or would be) stored, for
    /// tests that check the file; `None` for a malformed digest.
    #[doc(hidden)]
    pub fn package_path(&self, sha256_hex: &str) -> Option<std::path::PathBuf> {
        self.0.blobs.path_of(sha256_hex)
    }

    pub(crate) fn blobs(&self) -> &BlobStore {
        &self.0.blobs
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.0.policy
    }

    pub(crate) fn now(&self) -> i64 {
        self.0.clock.unix()
    }
}
