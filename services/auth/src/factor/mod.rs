//! Second factors: the [`Factor`] trait says what differs between methods
//! (starting an enrollment, what a check compares, what is stored), and
//! this module holds what they share: the enrollment flow ([`enroll`]) and
//! the dispatch from a stored factor's [`Method`] to its module
//! ([`compare`], [`comparable`]). Checking a code (`Verify`,
//! `ConfirmEnrollment`) is [`check`]; the rules it relies on (a try taken
//! before a code is compared, single use) live once in the store
//! (`store::code_checks`). See docs/design.md "Second factors".
//!
//! A new method is one module here implementing [`Factor`], a [`Method`]
//! variant, its arm in [`compare`] and [`comparable`], and its RPCs.

pub(crate) mod check;
pub mod sms;
pub mod totp;

use tonic::metadata::MetadataMap;

use crate::app::{App, Caller};
use crate::config::ENROLLMENT_TTL_SECS;
use crate::error::{AuthError, Result};
use crate::sealing::DataKeys;
use crate::store::{AuditEvent, Factor as StoredFactor, FactorState, NewFactor, Outcome, Refusal};

pub(crate) use sms::Sms;
pub(crate) use totp::Totp;

/// A second-factor method, as stored and as tokens name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Totp,
    Sms,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Totp => "totp",
            Method::Sms => "sms",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "totp" => Some(Method::Totp),
            "sms" => Some(Method::Sms),
            _ => None,
        }
    }
}

/// One second-factor method: what differs between TOTP, SMS and the next.
/// Everything else (one factor per user, pending until confirmed, the
/// lockout, single use, the audit trail) is shared and is not a method's
/// to decide.
pub trait Factor {
    /// How the factor is stored and named.
    const METHOD: Method;
    /// What the user gives to start an enrollment.
    type Start;
    /// What [`Factor::prepare`] hands on to [`Factor::started`].
    type Prepared;
    /// What a started enrollment answers.
    type Started;

    /// Starting an enrollment, before anything is read or stored: checks
    /// what the user gave and makes what the factor will hold.
    fn prepare(
        app: &App,
        caller: &Caller,
        start: Self::Start,
    ) -> Result<(Enrollment, Self::Prepared)>;

    /// The answer once the pending factor is stored and audited (SMS: the
    /// first code is sent).
    async fn started(
        app: &App,
        caller: &Caller,
        pending: Pending,
        prepared: Self::Prepared,
        metadata: &MetadataMap,
    ) -> Result<Self::Started>;

    /// Whether a check of `factor` may take a try at all at `now` (SMS: a
    /// code is waiting). Asked before the try is taken and again under it.
    fn comparable(_factor: &StoredFactor, _now: i64) -> std::result::Result<(), Refusal> {
        Ok(())
    }

    /// What a check compares: `code` against `factor` at `now`, under a
    /// try the store took first.
    fn compare(
        keys: &DataKeys,
        factor: &StoredFactor,
        code: &str,
        now: i64,
    ) -> std::result::Result<Compared, Unreadable>;
}

/// What a new enrollment stores: the secret, sealed under the data keys
/// with the user id as associated data, and what the factor shows of it.
/// `Debug` leaves the secret out.
pub(crate) struct Enrollment {
    /// The clear secret: a TOTP seed, a phone number.
    pub secret: Vec<u8>,
    /// SMS: the masked number and a MAC of the number (send limits).
    pub masked_phone: Option<String>,
    pub phone_mac: Option<String>,
    /// The `enrollment_started` audit record's detail; no secret.
    pub detail: String,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("masked_phone", &self.masked_phone)
            .field("detail", &self.detail)
            .finish_non_exhaustive()
    }
}

/// A pending enrollment as stored.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub enrollment_id: String,
    pub expires_at: i64,
}

/// What `code` is for a factor at some time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Compared {
    /// Right; what it uses up, if still unused (the store's to decide,
    /// atomically).
    Right(SingleUse),
    Wrong,
}

/// What a right code uses up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SingleUse {
    /// TOTP: this time step and every one before it.
    Step(i64),
    /// SMS: the code waiting, whose MAC is this.
    Code(String),
}

/// A factor's secret or code could not be read (a data key is missing, or
/// a stored value is damaged); logged where it happens, never with the
/// secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unreadable;

/// Starts an enrollment of `F` for the caller: refused while a factor is
/// active (only support resets one); otherwise a pending factor replaces
/// any pending one, and is audited.
pub(crate) async fn enroll<F: Factor>(
    app: &App,
    metadata: &MetadataMap,
    start: F::Start,
) -> Result<F::Started> {
    let caller = app.caller(metadata).await?;
    let (enrollment, prepared) = F::prepare(app, &caller, start)?;
    let user_id = caller.claims.sub.clone();
    let existing = app.store().factor(&user_id).await?;
    if existing.is_some_and(|f| f.state == FactorState::Active) {
        audit(
            app,
            &caller,
            "enrollment_started",
            Outcome::Refused,
            "factor already active".into(),
        )
        .await?;
        return Err(AuthError::FactorLocked);
    }
    // The user id is the associated data: a ciphertext copied to another
    // user's row does not open.
    let sealed = app.data_keys().seal(&enrollment.secret, user_id.as_bytes());
    let now = app.now();
    let pending = Pending {
        enrollment_id: uuid::Uuid::new_v4().to_string(),
        expires_at: now + ENROLLMENT_TTL_SECS,
    };
    let started = app
        .store()
        .begin_enrollment(&NewFactor {
            masked_phone: enrollment.masked_phone,
            phone_mac: enrollment.phone_mac,
            user_id,
            method: F::METHOD,
            enrollment_id: pending.enrollment_id.clone(),
            secret_key_id: sealed.key_id,
            secret_ciphertext: sealed.blob,
            created_at: now,
            enrollment_expires_at: pending.expires_at,
        })
        .await?;
    if !started {
        // Another request activated a factor in the meantime.
        return Err(AuthError::FactorLocked);
    }
    audit(
        app,
        &caller,
        "enrollment_started",
        Outcome::Ok,
        enrollment.detail,
    )
    .await?;
    F::started(app, &caller, pending, prepared, metadata).await
}

/// An audit record of the caller acting on their own factor.
pub(crate) async fn audit(
    app: &App,
    caller: &Caller,
    kind: &'static str,
    outcome: Outcome,
    detail: String,
) -> Result<()> {
    app.store()
        .audit(AuditEvent {
            at: app.now(),
            kind,
            outcome,
            actor: Some(caller.claims.sub.clone()),
            subject: Some(caller.claims.sub.clone()),
            session_id: Some(caller.session.id.clone()),
            detail,
        })
        .await?;
    Ok(())
}

/// [`Factor::comparable`] of `factor`'s method.
pub(crate) fn comparable(factor: &StoredFactor, now: i64) -> std::result::Result<(), Refusal> {
    match factor.method {
        Method::Totp => Totp::comparable(factor, now),
        Method::Sms => Sms::comparable(factor, now),
    }
}

/// [`Factor::compare`] of `factor`'s method.
pub(crate) fn compare(
    keys: &DataKeys,
    factor: &StoredFactor,
    code: &str,
    now: i64,
) -> std::result::Result<Compared, Unreadable> {
    match factor.method {
        Method::Totp => Totp::compare(keys, factor, code, now),
        Method::Sms => Sms::compare(keys, factor, code, now),
    }
}

/// The clear secret of `factor` (a TOTP seed or a phone number), sealed
/// under the data keys with its user id as associated data. A failure is
/// logged as "cannot open a {what}" (never the secret).
pub(crate) fn open_secret(
    keys: &DataKeys,
    factor: &StoredFactor,
    what: &'static str,
) -> std::result::Result<Vec<u8>, Unreadable> {
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
