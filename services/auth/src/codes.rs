//! Comparing a code with what a factor holds: the TOTP time step it
//! matches, or whether it is the SMS code waiting. Pure functions over a
//! factor as stored; the store calls [`compare`] only under a try it took
//! first (`store::code_checks`), and records the outcome itself.

use crate::sealing::DataKeys;
use crate::store::{Factor, Method};
use crate::totp::{self, TotpSecret};

/// What a code is for a factor at some time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compared {
    /// The TOTP code of this time step (whether that step is still unused
    /// is the store's to decide, atomically).
    TotpStep(i64),
    /// The SMS code waiting, whose MAC is this.
    SmsCode(String),
    /// Neither.
    Wrong,
}

/// A factor's secret or code could not be read (a data key is missing, or
/// a stored value is damaged); logged where it happens, never with the
/// secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// What `code` is for `factor` at `now`.
pub fn compare(
    keys: &DataKeys,
    factor: &Factor,
    code: &str,
    now: i64,
) -> Result<Compared, Unreadable> {
    match factor.method {
        Method::Totp => {
            let secret = open_factor_secret(keys, factor, "TOTP secret")?;
            let now = u64::try_from(now).map_err(|_| Unreadable)?;
            let step = totp::matching_step(&TotpSecret::from_bytes(secret), code, now);
            Ok(match step.and_then(|s| i64::try_from(s).ok()) {
                Some(step) => Compared::TotpStep(step),
                None => Compared::Wrong,
            })
        }
        Method::Sms => {
            // No code waiting: nothing to match (the store refuses such a
            // check before it takes a try).
            let Some(pending) = &factor.code else {
                return Ok(Compared::Wrong);
            };
            let tag = hex::decode(&pending.hash).map_err(|_| {
                tracing::error!("a stored SMS code MAC is not hex");
                Unreadable
            })?;
            let material = sms_code_material(&factor.user_id, code);
            Ok(if keys.verify_mac(&pending.key_id, &material, &tag) {
                Compared::SmsCode(pending.hash.clone())
            } else {
                Compared::Wrong
            })
        }
    }
}

/// What an SMS code's MAC covers: the user and the code, so a code row
/// moved to another user never matches.
pub fn sms_code_material(user_id: &str, code: &str) -> Vec<u8> {
    format!("sms-code:{user_id}:{code}").into_bytes()
}

/// The clear secret of `factor` (a TOTP seed or a phone number), sealed
/// under the data keys with its user id as associated data. A failure is
/// logged as "cannot open a {what}" (never the secret).
pub fn open_factor_secret(
    keys: &DataKeys,
    factor: &Factor,
    what: &'static str,
) -> Result<Vec<u8>, Unreadable> {
    keys.open(
        &factor.secret_key_id,
        &factor.secret_ciphertext,
        factor.user_id.as_bytes(),
    )
    .map_err(|e| {
        tracing::error!(error = %e, "cannot open a {what}");
        Unreadable
    })
}
