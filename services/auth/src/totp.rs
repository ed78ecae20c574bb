//! TOTP (RFC 6238) as Google Authenticator speaks it: secret generation, the
//! `otpauth://` enrollment URI and its QR code, and code verification that
//! returns the matched time step so the caller can refuse a code's reuse.
//! Time is always a parameter; nothing here reads the clock.

use std::fmt;
use std::hint::black_box;

use qrcodegen_image::image::codecs::png::PngEncoder;
use qrcodegen_image::image::{ExtendedColorType, ImageEncoder, ImageError};
use qrcodegen_image::qrcodegen::{QrCode, QrCodeEcc};
use rand::RngCore;
use rand::rngs::OsRng;

/// Secret length in bytes. RFC 4226 §4: at least 128 bits, 160 recommended.
pub const SECRET_BYTES: usize = 20;
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
mod tests {
    use std::io::ErrorKind;
    use std::process::Command;

    use super::*;

    const SEED_SHA1: &[u8] = b"12345678901234567890";
    const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
    const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";
    /// `SEED_SHA1` in base32.
    const SEED_SHA1_BASE32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(SEED_SHA1.to_vec())
    }

    /// `Some(stdout)` of a tool, or `None` when it is not installed.
    fn run_tool(program: &str, args: &[&str]) -> Option<String> {
        match Command::new(program).args(args).output() {
            Ok(output) => {
                assert!(
                    output.status.success(),
                    "{program} {args:?} failed: {output:?}"
                );
                Some(String::from_utf8(output.stdout).unwrap())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => panic!("could not run {program}: {e}"),
        }
    }

    #[test]
    fn rfc6238_appendix_b_vectors() {
        let rows: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (time, sha1, sha256, sha512) in rows {
            assert_eq!(
                code_at(SEED_SHA1, Algorithm::Sha1, 8, time),
                sha1,
                "SHA1 at {time}"
            );
            assert_eq!(
                code_at(SEED_SHA256, Algorithm::Sha256, 8, time),
                sha256,
                "SHA256 at {time}"
            );
            assert_eq!(
                code_at(SEED_SHA512, Algorithm::Sha512, 8, time),
                sha512,
                "SHA512 at {time}"
            );
        }
    }

    #[test]
    fn six_digit_code_is_the_low_digits_with_leading_zero_kept() {
        // RFC 6238 row 1111111109 is 07081804; its 6-digit code keeps the 0.
        assert_eq!(code_at(SEED_SHA1, Algorithm::Sha1, 6, 1111111109), "081804");
    }

    #[test]
    #[should_panic(expected = "6 to 8 digits")]
    fn code_at_refuses_digit_counts_outside_the_rfc() {
        code_at(SEED_SHA1, Algorithm::Sha1, 10, 59);
    }

    #[test]
    fn matching_step_accepts_previous_current_and_next_step() {
        let secret = rfc_secret();
        let now = 1111111111; // step 37037037
        let current = now / STEP_SECS;
        for step in [current - 1, current, current + 1] {
            let code = code_at(SEED_SHA1, Algorithm::Sha1, DIGITS, step * STEP_SECS);
            assert_eq!(
                matching_step(&secret, &code, now),
                Some(step),
                "step {step}"
            );
        }
    }

    #[test]
    fn matching_step_refuses_two_steps_away() {
        let secret = rfc_secret();
        let now = 1111111111;
        let current = now / STEP_SECS;
        for step in [current - 2, current + 2] {
            let code = code_at(SEED_SHA1, Algorithm::Sha1, DIGITS, step * STEP_SECS);
            assert_eq!(matching_step(&secret, &code, now), None, "step {step}");
        }
    }

    #[test]
    fn matching_step_window_ends_exactly_at_step_boundaries() {
        let secret = rfc_secret();
        // The code of step 1 (t = 30..=59) is accepted from the first second
        // of step 0 to the last second of step 2, and nowhere else.
        let code = code_at(SEED_SHA1, Algorithm::Sha1, DIGITS, 59);
        for t in [0, 29, 30, 59, 60, 89] {
            assert_eq!(matching_step(&secret, &code, t), Some(1), "t={t}");
        }
        assert_eq!(matching_step(&secret, &code, 90), None, "t=90");
        assert_eq!(matching_step(&secret, &code, 119), None, "t=119");

        // Step 3 (t = 90..=119) is first accepted at t=60, as the next step.
        let code = code_at(SEED_SHA1, Algorithm::Sha1, DIGITS, 90);
        assert_eq!(matching_step(&secret, &code, 59), None, "t=59");
        assert_eq!(matching_step(&secret, &code, 60), Some(3), "t=60");
    }

    #[test]
    fn matching_step_at_time_zero_has_no_previous_step() {
        let secret = rfc_secret();
        let code = code_at(SEED_SHA1, Algorithm::Sha1, DIGITS, 0);
        assert_eq!(matching_step(&secret, &code, 0), Some(0));
        assert_eq!(matching_step(&secret, &code, 59), Some(0));
    }

    #[test]
    fn matching_step_refuses_a_code_for_another_secret() {
        let code = code_at(SEED_SHA1, Algorithm::Sha1, DIGITS, 1111111111);
        let other = TotpSecret::from_bytes(SEED_SHA256.to_vec());
        assert_eq!(matching_step(&other, &code, 1111111111), None);
    }

    #[test]
    fn malformed_codes_are_refused() {
        let secret = rfc_secret();
        let now = 1111111109;
        let good = code_at(SEED_SHA1, Algorithm::Sha1, DIGITS, now);
        assert!(is_well_formed(&good));
        assert_eq!(matching_step(&secret, &good, now), Some(now / STEP_SECS));

        let eight = code_at(SEED_SHA1, Algorithm::Sha1, 8, now); // "07081804" ends in `good`
        let malformed = [
            String::new(),
            good[..5].to_string(),
            format!("{good}0"),
            eight,
            format!(" {}", &good[1..]),
            format!("+{}", &good[1..]),
            "12a456".to_string(),
            "abcdef".to_string(),
            "١٢٣٤٥٦".to_string(),       // Arabic-Indic digits
            "１２３４５６".to_string(), // fullwidth digits
        ];
        for code in &malformed {
            assert!(!is_well_formed(code), "{code:?} is well formed");
            assert_eq!(matching_step(&secret, code, now), None, "{code:?} matched");
        }
    }

    #[test]
    fn generated_secret_codes_match_oathtool() {
        // Pinned output of `oathtool --totp -b GEZD... --now @1700000000`, so
        // the comparison runs even where oathtool is not installed.
        assert_eq!(
            code_at(SEED_SHA1, Algorithm::Sha1, DIGITS, 1700000000),
            "921300"
        );

        let secret = TotpSecret::generate();
        let base32 = secret.to_base32();
        for unix in [1700000000u64, 1700000029, 1700000030, 4102444800] {
            let now = format!("@{unix}");
            let Some(out) = run_tool("oathtool", &["--totp", "-b", &base32, "--now", &now]) else {
                eprintln!("oathtool not on PATH; checked the pinned vector only");
                return;
            };
            assert_eq!(
                out.trim(),
                code_at(secret.as_bytes(), Algorithm::Sha1, DIGITS, unix)
            );
        }
    }

    #[test]
    fn generated_secrets_are_160_bits_and_differ() {
        let a = TotpSecret::generate();
        let b = TotpSecret::generate();
        assert_eq!(a.as_bytes().len(), SECRET_BYTES);
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn base32_is_rfc4648_without_padding_and_round_trips() {
        assert_eq!(rfc_secret().to_base32(), SEED_SHA1_BASE32);

        let secret = TotpSecret::generate();
        let base32 = secret.to_base32();
        assert_eq!(base32.len(), 32); // 160 bits / 5 bits per character
        assert!(
            base32
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        let decoded = totp_rs::Secret::try_from_base32(&base32).unwrap();
        assert_eq!(decoded.as_bytes(), secret.as_bytes());
    }

    #[test]
    fn debug_redacts_the_secret() {
        let secret = rfc_secret();
        let printed = format!("{secret:?} {:?}", vec![secret.clone()]);
        assert_eq!(printed, "[redacted] [[redacted]]");
    }

    #[test]
    fn otpauth_uri_has_issuer_account_and_secret() {
        let uri = otpauth_uri(&rfc_secret(), "alice@example.com").unwrap();
        assert_eq!(
            uri,
            "otpauth://totp/padlock:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=padlock"
        );
        // It parses back to the same parameters.
        let parsed = totp_rs::Totp::from_url(&uri).unwrap();
        assert_eq!(parsed.account_name(), "alice@example.com");
        assert_eq!(parsed.issuer(), Some(ISSUER));
        assert_eq!(parsed.secret().as_bytes(), SEED_SHA1);
        assert_eq!(parsed.algorithm(), totp_rs::Algorithm::SHA1);
        assert_eq!(usize::from(parsed.digits()), DIGITS);
        assert_eq!(parsed.step(), STEP_SECS);
    }

    #[test]
    fn otpauth_uri_percent_encodes_the_account() {
        let uri = otpauth_uri(&rfc_secret(), "Zoë O'Neil/ops&dev").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/padlock:Zo%C3%AB%20O%27Neil%2Fops%26dev?secret="),
            "{uri}"
        );
        let parsed = totp_rs::Totp::from_url(&uri).unwrap();
        assert_eq!(parsed.account_name(), "Zoë O'Neil/ops&dev");
    }

    #[test]
    fn otpauth_uri_refuses_bad_accounts_and_short_secrets() {
        let secret = rfc_secret();
        for account in ["", "alice:admin"] {
            let err = otpauth_uri(&secret, account).unwrap_err();
            assert!(
                matches!(err, TotpError::InvalidAccountName),
                "{account:?}: {err:?}"
            );
        }
        let short = TotpSecret::from_bytes(vec![7; 15]);
        let err = otpauth_uri(&short, "alice").unwrap_err();
        assert!(matches!(err, TotpError::SecretTooShort), "{err:?}");
    }

    #[test]
    fn qr_png_decodes_back_to_the_uri() {
        let uri = otpauth_uri(&TotpSecret::generate(), "alice@example.com").unwrap();
        let png = qr_png(&uri).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");

        let file = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
        std::fs::write(file.path(), &png).unwrap();
        let path = file.path().to_str().unwrap();
        match run_tool("zbarimg", &["--raw", "-q", path]) {
            Some(decoded) => assert_eq!(decoded.strip_suffix('\n'), Some(uri.as_str())),
            None => eprintln!("zbarimg not on PATH; checked the PNG signature only"),
        }
    }

    #[test]
    fn qr_svg_draws_the_same_modules_as_the_qr_code() {
        let uri = otpauth_uri(&rfc_secret(), "alice@example.com").unwrap();
        let svg = qr_svg(&uri).unwrap();
        let qr = encode_qr(&uri).unwrap();

        let side = qr.size() + 2 * QR_QUIET_ZONE;
        assert!(
            svg.contains(&format!(r#"viewBox="0 0 {side} {side}""#)),
            "{svg}"
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        // No external references: the SVG stands alone.
        assert!(!svg.contains("href"));

        let mut dark = Vec::new();
        for y in 0..qr.size() {
            for x in 0..qr.size() {
                if qr.get_module(x, y) {
                    dark.push(format!(
                        "M{},{}h1v1h-1z",
                        x + QR_QUIET_ZONE,
                        y + QR_QUIET_ZONE
                    ));
                }
            }
        }
        let drawn: Vec<&str> = svg
            .split(r#"<path d=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .split(' ')
            .collect();
        assert_eq!(drawn, dark);
        // The finder pattern's top-left corner sits just inside the quiet zone.
        assert_eq!(drawn[0], "M4,4h1v1h-1z");
    }

    #[test]
    fn qr_refuses_text_too_long_for_any_qr_code() {
        let text = "x".repeat(8000);
        assert!(matches!(qr_png(&text), Err(TotpError::QrTooLong)));
        assert!(matches!(qr_svg(&text), Err(TotpError::QrTooLong)));
    }
}
