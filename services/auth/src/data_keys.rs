//! `padlock-auth data-keys`: what each data key protects, and re-encrypting
//! everything under the current one, so an old key can be removed.
//!
//! Rotation, while the service runs:
//! 1. a new key goes first in the data keys of every replica, the old one
//!    stays after it (with several replicas: add it second everywhere, then
//!    move it first, so no replica meets a key it does not know);
//! 2. [`reseal`] re-encrypts every sealed value and key file under it;
//! 3. [`status`] shows when nothing uses the old key any more (SMS codes
//!    MACed under it expire within five minutes), and it can go.
//!
//! Resealing is a compare-and-swap per row: a value the service changed
//! meanwhile is never overwritten, and running it again does what is left.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use padlock_token::{KeyRing, Rewrite};

use crate::Options;
use crate::app::KeySource;
use crate::key_files::{KeyFileState, SealedKeyFiles, Upgrade};
use crate::sealing::DataKeys;
use crate::store::{Method, Resealed, Store};

/// Rows read and resealed per page.
pub(crate) const DEFAULT_BATCH: u64 = 100;

/// What each data key protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    /// Configured key ids, current first.
    pub configured: Vec<String>,
    /// Factor secrets (TOTP secrets, phone numbers) per key id.
    pub secrets: BTreeMap<String, u64>,
    /// SMS codes that can still be entered, per key id of their MAC.
    pub live_codes: BTreeMap<String, u64>,
    /// The signing key files that exist, and what they hold.
    pub key_files: Vec<(PathBuf, Result<KeyFileState, String>)>,
}

impl KeyUse {
    /// How many values `id` protects.
    pub fn uses(&self, id: &str) -> u64 {
        self.secrets.get(id).copied().unwrap_or(0)
            + self.live_codes.get(id).copied().unwrap_or(0)
            + self.files_under(id)
    }

    /// Every key id configured or in use: configured ones first.
    fn ids(&self) -> Vec<String> {
        let mut ids = self.configured.clone();
        let used: BTreeSet<&String> = self
            .secrets
            .keys()
            .chain(self.live_codes.keys())
            .chain(self.key_files.iter().filter_map(|(_, s)| match s {
                Ok(KeyFileState::Sealed { key_id }) => Some(key_id),
                _ => None,
            }))
            .collect();
        ids.extend(
            used.into_iter()
                .filter(|id| !self.configured.contains(id))
                .cloned(),
        );
        ids
    }

    fn files_under(&self, id: &str) -> u64 {
        let files = self
            .key_files
            .iter()
            .filter(|(_, s)| matches!(s, Ok(KeyFileState::Sealed { key_id }) if key_id == id))
            .count();
        u64::try_from(files).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for KeyUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:<10} {:>8} {:>15} {:>17}",
            "data key", "role", "secrets", "live SMS codes", "signing key files"
        )?;
        for id in &self.ids() {
            let role = match self.configured.iter().position(|c| c == id) {
                Some(0) => "current",
                Some(_) => "older",
                None => "MISSING",
            };
            writeln!(
                f,
                "{:<16} {:<10} {:>8} {:>15} {:>17}",
                id,
                role,
                self.secrets.get(id).copied().unwrap_or(0),
                self.live_codes.get(id).copied().unwrap_or(0),
                self.files_under(id)
            )?;
        }
        for (path, state) in &self.key_files {
            let state = match state {
                Ok(KeyFileState::Sealed { key_id }) => format!("sealed under {key_id}"),
                Ok(KeyFileState::Clear) => "in clear (PKCS#8 PEM)".to_owned(),
                Err(e) => format!("unreadable: {e}"),
            };
            writeln!(f, "signing key {}: {state}", path.display())?;
        }
        for id in self.ids().iter().skip(1) {
            let uses = self.uses(id);
            if !self.configured.contains(id) {
                writeln!(
                    f,
                    "{id} is not configured but protects {uses} value(s): they cannot be opened"
                )?;
            } else if uses > 0 {
                writeln!(
                    f,
                    "{id} still protects {uses} value(s): run `padlock-auth data-keys reseal`"
                )?;
            } else {
                writeln!(
                    f,
                    "{id} protects nothing: it can be removed from the data keys"
                )?;
            }
        }
        Ok(())
    }
}

/// What [`reseal`] did, per data key id resealed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// The key everything was resealed under.
    pub current: String,
    /// Secrets now sealed under `current`.
    pub resealed: BTreeMap<String, u64>,
    /// Secrets the service changed while they were being resealed; they
    /// stay as it wrote them (run again if they are still old).
    pub changed_meanwhile: BTreeMap<String, u64>,
    /// Secrets that did not open (their key is missing or wrong).
    pub failed: BTreeMap<String, u64>,
    /// Each signing key file and what happened to it.
    pub key_files: Vec<(PathBuf, Result<Rewrite, String>)>,
}

impl ResealReport {
    /// True when every value and file was handled.
    pub fn is_complete(&self) -> bool {
        self.failed.values().all(|n| *n == 0) && self.key_files.iter().all(|(_, r)| r.is_ok())
    }
}

impl fmt::Display for ResealReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from: BTreeSet<&String> = self
            .resealed
            .keys()
            .chain(self.changed_meanwhile.keys())
            .chain(self.failed.keys())
            .collect();
        if from.is_empty() {
            writeln!(f, "every secret is already sealed under {}", self.current)?;
        }
        let get = |m: &BTreeMap<String, u64>, id: &str| m.get(id).copied().unwrap_or(0);
        for id in from {
            writeln!(
                f,
                "from {id}: {} resealed under {}, {} changed meanwhile, {} failed",
                get(&self.resealed, id),
                self.current,
                get(&self.changed_meanwhile, id),
                get(&self.failed, id)
            )?;
        }
        for (path, result) in &self.key_files {
            let what = match result {
                Ok(Rewrite::Missing) => continue,
                Ok(Rewrite::UpToDate) => "already sealed under the current key".to_owned(),
                Ok(Rewrite::Rewritten) => format!("resealed under {}", self.current),
                Ok(Rewrite::ChangedMeanwhile) => "changed meanwhile; left alone".to_owned(),
                Err(e) => format!("FAILED: {e}"),
            };
            writeln!(f, "signing key {}: {what}", path.display())?;
        }
        Ok(())
    }
}

/// What each data key protects in `store` and the key files of `source`.
pub async fn key_use(
    store: &Store,
    keys: &DataKeys,
    source: &KeySource,
    now: i64,
) -> anyhow::Result<KeyUse> {
    let key_files = source
        .files()
        .into_iter()
        .filter_map(|path| {
            let state = match std::fs::read_to_string(&path) {
                Ok(text) => KeyFileState::of(&text).map_err(|e| e.to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => Err(e.to_string()),
            };
            Some((path, state))
        })
        .collect();
    Ok(KeyUse {
        configured: keys.key_ids().map(str::to_owned).collect(),
        secrets: store.secrets_per_key().await?,
        live_codes: store.live_codes_per_key(now).await?,
        key_files,
    })
}

/// Re-encrypts every factor secret not sealed under the current data key,
/// `batch` rows at a time, each with a compare-and-swap update, then the
/// signing key files. Safe while the service runs; idempotent.
pub async fn reseal_all(
    store: &Store,
    keys: &DataKeys,
    source: &KeySource,
    batch: u64,
) -> anyhow::Result<ResealReport> {
    let current = keys.current_key_id().to_owned();
    let mut report = ResealReport {
        current: current.clone(),
        ..ResealReport::default()
    };
    let mut after: Option<String> = None;
    loop {
        let page = store
            .secrets_not_under(&current, after.as_deref(), batch.max(1))
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.user_id.clone());
        for old in page {
            let counter = match keys.open(&old.key_id, &old.ciphertext, old.user_id.as_bytes()) {
                Err(e) => {
                    tracing::warn!(user_id = %old.user_id, key_id = %old.key_id, error = %e,
                        "a sealed secret did not open; left as it is");
                    &mut report.failed
                }
                Ok(plain) => {
                    let sealed = keys.seal(&plain, old.user_id.as_bytes());
                    let new = Resealed {
                        key_id: sealed.key_id,
                        ciphertext: sealed.blob,
                        // The number's MAC moves with it, so it stays under
                        // the key its secret names.
                        phone_mac: (old.method == Some(Method::Sms))
                            .then(|| hex::encode(keys.mac(&plain).1)),
                    };
                    if store.replace_secret(&old, &new).await? {
                        &mut report.resealed
                    } else {
                        &mut report.changed_meanwhile
                    }
                }
            };
            *counter.entry(old.key_id).or_default() += 1;
        }
    }
    let upgrade = match source {
        KeySource::Dir(_) => Upgrade::ClearAndOlder,
        KeySource::Files { .. } => Upgrade::OlderOnly,
    };
    let format = SealedKeyFiles::new(keys, upgrade);
    report.key_files = source
        .files()
        .into_iter()
        .map(|path| {
            let result = KeyRing::rewrite_file(&path, &format).map_err(|e| e.to_string());
            (path, result)
        })
        .collect();
    Ok(report)
}

/// `data-keys status` for the configured service.
pub async fn status(options: &Options, now: i64) -> anyhow::Result<KeyUse> {
    let store = connect(options).await?;
    let keys = options.data_key_source().load()?;
    key_use(&store, &keys, &options.key_source(), now).await
}

/// `data-keys reseal` for the configured service.
pub async fn reseal(options: &Options, batch: u64) -> anyhow::Result<ResealReport> {
    let store = connect(options).await?;
    let keys = options.data_key_source().load()?;
    reseal_all(&store, &keys, &options.key_source(), batch).await
}

async fn connect(options: &Options) -> anyhow::Result<Store> {
    Store::connect(&crate::database_url(options))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))
}
