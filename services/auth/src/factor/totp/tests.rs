//! TOTP against RFC 6238's vectors, oathtool and zbarimg where installed.

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
