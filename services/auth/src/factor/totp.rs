//! The TOTP factor (RFC 6238) as Google Authenticator speaks it: secret
//! generation, the `otpauth://` enrollment URI and its QR code, and code
//! verification that returns the matched time step so the store can refuse
//! a code's reuse ([`Totp`], the [`Factor`] of an authenticator app). Time
//! is always a parameter; nothing here reads the clock.

use std::fmt;
use std::hint::black_box;

use padlock_proto::auth::v1::StartTotpEnrollmentResponse;
use qrcodegen_image::image::codecs::png::PngEncoder;
use qrcodegen_image::image::{ExtendedColorType, ImageEncoder, ImageError};
use qrcodegen_image::qrcodegen::{QrCode, QrCodeEcc};
use rand::RngCore;
use rand::rngs::OsRng;
use tonic::metadata::MetadataMap;

use super::{Compared, Enrollment, Factor, Method, Pending, SingleUse, Unreadable, open_secret};
use crate::app::{App, Caller};
use crate::error::{AuthError, Result as AuthResult};
use crate::grpc::timestamp;
use crate::sealing::DataKeys;
use crate::store::Factor as StoredFactor;

/// Secret length in bytes. RFC 4226 §4: at least 128 bits, 160 recommended.
pub(crate) const SECRET_BYTES: usize = 20;
/// Code length. RFC 4226 §5.3 and what Google Authenticator shows.
pub const DIGITS: usize = 6;
/// Time step in seconds. RFC 6238 §5.2 recommends 30.
pub const STEP_SECS: u64 = 30;
/// Steps of clock drift accepted either side. RFC 6238 §5.2: one step.
pub const SKEW_STEPS: u64 = 1;
/// Issuer shown by the authenticator app, in the label and the `issuer` parameter.
pub const ISSUER: &str = "padlock";

/// [`DIGITS`] as totp-rs takes it; the assertion proves at compile time that it fits.
const DIGITS_U8: u8 = {
    assert!(DIGITS <= u8::MAX as usize);
    DIGITS as u8
};

/// White border around a QR code, in modules (ISO/IEC 18004 asks for 4).
const QR_QUIET_ZONE: i32 = 4;
/// Error correction level; M (15%) is what totp-rs and most issuers use.
const QR_ECC: QrCodeEcc = QrCodeEcc::Medium;

/// Why an enrollment URI or QR code could not be made. Messages carry no
/// secret, URI or account name.
#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    /// The account is empty or contains `:`, which the Key URI format uses to
    /// separate issuer from account.
    #[error("account name must be non-empty and must not contain ':'")]
    InvalidAccountName,
    /// The secret is shorter than RFC 4226 §4 allows (128 bits).
    #[error("TOTP secret is shorter than 128 bits")]
    SecretTooShort,
    /// totp-rs refused to build the URI for another reason.
    #[error("could not build the otpauth URI")]
    Uri,
    /// The text does not fit in the largest QR code.
    #[error("text is too long for a QR code")]
    QrTooLong,
    /// The QR code could not be written as PNG.
    #[error("could not encode the QR code as PNG")]
    Png(#[source] ImageError),
}

/// The TOTP factor: an authenticator app holds a secret; a check compares
/// the code with the secret's codes around now.
#[derive(Debug)]
pub(crate) struct Totp;

/// What the enrollment answer shows, made before the factor is stored.
/// Every field holds the secret; `Debug` prints none of them.
pub(crate) struct Shown {
    secret: TotpSecret,
    uri: String,
    qr_png: Vec<u8>,
    qr_svg: String,
}

impl fmt::Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Shown([redacted])")
    }
}

impl Factor for Totp {
    const METHOD: Method = Method::Totp;
    type Start = ();
    type Prepared = Shown;
    type Started = StartTotpEnrollmentResponse;

    fn prepare(_app: &App, caller: &Caller, _start: ()) -> AuthResult<(Enrollment, Shown)> {
        let secret = TotpSecret::generate();
        let uri = otpauth_uri(&secret, &caller.claims.preferred_username)
            .map_err(|_| AuthError::Internal)?;
        let qr_png = qr_png(&uri).map_err(|_| AuthError::Internal)?;
        let qr_svg = qr_svg(&uri).map_err(|_| AuthError::Internal)?;
        let enrollment = Enrollment {
            secret: secret.as_bytes().to_vec(),
            masked_phone: None,
            phone_mac: None,
            detail: "method=totp".into(),
        };
        Ok((
            enrollment,
            Shown {
                secret,
                uri,
                qr_png,
                qr_svg,
            },
        ))
    }

    async fn started(
        _app: &App,
        _caller: &Caller,
        pending: Pending,
        shown: Shown,
        _metadata: &MetadataMap,
    ) -> AuthResult<StartTotpEnrollmentResponse> {
        Ok(StartTotpEnrollmentResponse {
            enrollment_id: pending.enrollment_id,
            secret: shown.secret.to_base32(),
            otpauth_uri: shown.uri,
            qr_png: shown.qr_png,
            qr_svg: shown.qr_svg,
            expires_at: timestamp(pending.expires_at),
        })
    }

    /// The time step `code` matches for the factor's secret, if any.
    fn compare(
        keys: &DataKeys,
        factor: &StoredFactor,
        code: &str,
        now: i64,
    ) -> std::result::Result<Compared, Unreadable> {
        let secret = open_secret(keys, factor, "TOTP secret")?;
        let now = u64::try_from(now).map_err(|_| Unreadable)?;
        let step = matching_step(&TotpSecret::from_bytes(secret), code, now);
        Ok(match step.and_then(|s| i64::try_from(s).ok()) {
            Some(step) => Compared::Right(SingleUse::Step(step)),
            None => Compared::Wrong,
        })
    }
}

/// The HMAC used to compute codes (RFC 6238 §1.2). Enrollment always uses
/// SHA-1: Google Authenticator ignores the `algorithm` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl From<Algorithm> for totp_rs::Algorithm {
    fn from(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha1 => totp_rs::Algorithm::SHA1,
            Algorithm::Sha256 => totp_rs::Algorithm::SHA256,
            Algorithm::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

/// A user's raw TOTP secret. `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    /// A fresh [`SECRET_BYTES`]-byte secret from the operating system's CSPRNG.
    pub fn generate() -> TotpSecret {
        let mut bytes = vec![0; SECRET_BYTES];
        OsRng.fill_bytes(&mut bytes);
        TotpSecret(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> TotpSecret {
        TotpSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// RFC 4648 base32 without padding, as Google Authenticator's
    /// "Enter a setup key" expects.
    pub fn to_base32(&self) -> String {
        totp_rs::Secret::from(self.as_bytes()).to_base32()
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The Key URI Format enrollment link,
/// `otpauth://totp/padlock:<account>?secret=<base32>&issuer=padlock`, with
/// the account percent-encoded. SHA-1, 6 digits and 30 s are the defaults, so
/// totp-rs leaves them out.
pub fn otpauth_uri(secret: &TotpSecret, account: &str) -> Result<String, TotpError> {
    // totp-rs checks the account only when the URI is built; check it up front
    // so every refusal maps to one error.
    if account.is_empty() || account.contains(':') {
        return Err(TotpError::InvalidAccountName);
    }
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(DIGITS_U8)
        .with_step_duration(STEP_SECS)
        .with_secret(secret.as_bytes())
        .with_issuer(Some(ISSUER))
        .with_account_name(account)
        .build()
        .map_err(from_totp_rs)?;
    totp.to_url().map_err(from_totp_rs)
}

/// totp-rs errors can quote the URI (and so the secret); keep only the kind.
fn from_totp_rs(error: totp_rs::TotpError) -> TotpError {
    match error {
        totp_rs::TotpError::InvalidAccountName { .. } | totp_rs::TotpError::AccountNameNotSet => {
            TotpError::InvalidAccountName
        }
        totp_rs::TotpError::SecretTooShort { .. } => TotpError::SecretTooShort,
        _ => TotpError::Uri,
    }
}

/// `uri` as a black-on-white PNG QR code (raw PNG bytes): 8 pixels per
/// module with a 4-module quiet zone.
pub fn qr_png(uri: &str) -> Result<Vec<u8>, TotpError> {
    let canvas = qrcodegen_image::draw_canvas(encode_qr(uri)?);
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(
            canvas.as_raw(),
            canvas.width(),
            canvas.height(),
            ExtendedColorType::L8,
        )
        .map_err(TotpError::Png)?;
    Ok(png)
}

/// `uri` as a self-contained SVG QR code: one square per dark module on a
/// white background, with a 4-module quiet zone. It scales to any size.
pub fn qr_svg(uri: &str) -> Result<String, TotpError> {
    let qr = encode_qr(uri)?;
    let side = qr.size() + 2 * QR_QUIET_ZONE;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                if !path.is_empty() {
                    path.push(' ');
                }
                let (left, top) = (x + QR_QUIET_ZONE, y + QR_QUIET_ZONE);
                path.push_str(&format!("M{left},{top}h1v1h-1z"));
            }
        }
    }
    Ok(format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            "\n",
            r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" viewBox="0 0 {side} {side}" stroke="none" shape-rendering="crispEdges">"#,
            "\n",
            r##"<rect width="100%" height="100%" fill="#FFFFFF"/>"##,
            "\n",
            r##"<path d="{path}" fill="#000000"/>"##,
            "\n</svg>\n",
        ),
        side = side,
        path = path,
    ))
}

fn encode_qr(text: &str) -> Result<QrCode, TotpError> {
    QrCode::encode_text(text, QR_ECC).map_err(|_| TotpError::QrTooLong)
}

/// The `digits`-digit code for `secret` at `unix` seconds (RFC 6238 §4), with
/// [`STEP_SECS`]-second steps. Every code padlock computes comes from here.
///
/// # Panics
///
/// If `digits` is outside 6..=8, the lengths RFC 4226 §5.3 and RFC 6238
/// Appendix A define; callers pass constants.
pub fn code_at(secret: &[u8], algorithm: Algorithm, digits: usize, unix: u64) -> String {
    assert!(
        (6..=8).contains(&digits),
        "TOTP codes have 6 to 8 digits, not {digits}"
    );
    // `build_noncompliant` so that a short stored secret still yields a code
    // (the digit count is checked above); enrollment only creates 160-bit ones.
    totp_rs::Builder::new()
        .with_algorithm(algorithm.into())
        .with_digits(digits as u8)
        .with_step_duration(STEP_SECS)
        .with_secret(secret)
        .build_noncompliant()
        .generate(unix)
        .to_string()
}

/// The time step (`unix / STEP_SECS`) whose SHA-1, 6-digit code equals
/// `code`, among the current step and [`SKEW_STEPS`] either side; `None` if
/// none does or the code is malformed.
///
/// Every candidate is computed and compared in constant time, so timing does
/// not tell which step matched. If two steps happen to share a code the later
/// one wins, so replay protection errs towards refusing. The caller must
/// refuse a step at or below the last one it accepted (RFC 6238 §5.2: a code
/// is valid once).
pub fn matching_step(secret: &TotpSecret, code: &str, unix: u64) -> Option<u64> {
    if !is_well_formed(code) {
        return None;
    }
    let current = unix / STEP_SECS;
    let mut matched = None;
    for step in current.saturating_sub(SKEW_STEPS)..=current.saturating_add(SKEW_STEPS) {
        let expected = code_at(
            secret.as_bytes(),
            Algorithm::Sha1,
            DIGITS,
            step.saturating_mul(STEP_SECS),
        );
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) {
            matched = Some(step);
        }
    }
    matched
}

/// Exactly [`DIGITS`] ASCII digits: no spaces, signs or other scripts' digits.
pub fn is_well_formed(code: &str) -> bool {
    code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// Compares equal-length byte strings without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    black_box(difference) == 0
}

#[cfg(test)]
mod tests;
