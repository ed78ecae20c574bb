//! Micro-benchmarks (`cargo bench -p padlock-bench`):
//!
//! - `token`: padlock_token's `KeyRing::generate`, `KeyRing::sign` and
//!   `Verifier::verify`, beside a bare Ed25519 `verify_strict` of the same
//!   signing input and signature; then the ratio bare / verify, measured
//!   interleaved in the same process (docs/design.md target: >= 0.8).
//! - `totp`: this crate's RFC 6238 code path (the load tool's
//!   authenticator) and totp-rs, the library the auth service's own `totp`
//!   module wraps, in the shape that module calls it (a builder per step,
//!   three steps per check).

use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::Criterion;
use ed25519_dalek::{Signature, VerifyingKey};
use padlock_bench::totp;
use padlock_token::{Claims, KeyRing, Verifier};

const ISS: &str = "padlock-auth";
const AUD: &str = "padlock-deploy";
/// A fixed time inside the token's lifetime, so the bench reads no clock.
const NOW: i64 = 1_750_000_000;
/// RFC 6238 Appendix B's SHA-1 seed.
const SEED: &[u8] = b"12345678901234567890";

/// Claims the size of a stepped-up padlock access token.
fn claims() -> Claims {
    Claims {
        iss: ISS.into(),
        aud: AUD.into(),
        sub: "0b6f1c1e-4a47-4f0e-9d51-1f1c1b7a9e10".into(),
        preferred_username: "bench-abcdefgh-000042".into(),
        roles: vec![],
        sid: "6d3a4b1e-8f7c-4c2a-9e55-2a7d9c1b0f33".into(),
        iat: NOW,
        exp: NOW + 600,
        jti: "f2b0d6a4-1c3e-4b5f-8a9d-7e6c5b4a3f21".into(),
        auth_time: NOW - 5,
        amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
        acr: "2".into(),
        mfa_at: Some(NOW),
        mfa_method: Some("totp".into()),
    }
}

/// A signed token with the pieces a bare check needs.
struct Fixture {
    ring: KeyRing,
    verifier: Verifier,
    token: String,
    key: VerifyingKey,
    signature: Signature,
}

impl Fixture {
    fn new() -> Self {
        let ring = KeyRing::generate();
        let verifier = Verifier::new(&ring.jwks(), ISS, AUD);
        let token = ring.sign(&claims()).expect("signing a token");
        let (_, signature) = token.rsplit_once('.').expect("a compact JWS");
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .expect("base64url signature");
        let signature = Signature::from_slice(&signature).expect("64-byte signature");
        let x = URL_SAFE_NO_PAD
            .decode(ring.current.public_jwk().x)
            .expect("base64url key");
        let key = VerifyingKey::from_bytes(&x.try_into().expect("32-byte key"))
            .expect("an Ed25519 point");
        let fixture = Self {
            ring,
            verifier,
            token,
            key,
            signature,
        };
        assert!(fixture.verify().is_ok() && fixture.bare().is_ok());
        fixture
    }

    fn signing_input(&self) -> &[u8] {
        let (input, _) = self.token.rsplit_once('.').expect("a compact JWS");
        input.as_bytes()
    }

    fn verify(&self) -> Result<Claims, padlock_token::TokenError> {
        self.verifier.verify(black_box(&self.token), NOW)
    }

    fn bare(&self) -> Result<(), ed25519_dalek::SignatureError> {
        self.key
            .verify_strict(black_box(self.signing_input()), black_box(&self.signature))
    }
}

fn token_benches(c: &mut Criterion, f: &Fixture) {
    let mut group = c.benchmark_group("token");
    group.bench_function("KeyRing::generate", |b| b.iter(KeyRing::generate));
    let claims = claims();
    group.bench_function("KeyRing::sign", |b| {
        b.iter(|| f.ring.sign(black_box(&claims)))
    });
    group.bench_function("Verifier::verify", |b| b.iter(|| f.verify()));
    group.bench_function("ed25519 verify_strict (bare)", |b| b.iter(|| f.bare()));
    group.finish();
}

/// totp-rs as the auth service's `totp::code_at` calls it: a builder per step.
fn totp_rs_code(step: u64) -> String {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(totp::DIGITS as u8)
        .with_step_duration(totp::STEP_SECS)
        .with_secret(SEED)
        .build_noncompliant()
        .generate(step * totp::STEP_SECS)
        .to_string()
}

fn totp_benches(c: &mut Criterion) {
    let now = u64::try_from(NOW).expect("positive");
    let step = totp::step_at(now);
    // The next step's code: a verifier checks all three steps of its window.
    let code = totp::code(SEED, step + 1);
    assert_eq!(totp_rs_code(step + 1), code, "both paths agree");
    let mut group = c.benchmark_group("totp");
    group.bench_function("code (padlock-bench RFC 6238)", |b| {
        b.iter(|| totp::code(black_box(SEED), black_box(step)))
    });
    group.bench_function("verify +-1 step (padlock-bench RFC 6238)", |b| {
        b.iter(|| totp::matching_step(black_box(SEED), black_box(&code), now))
    });
    group.bench_function("code (totp-rs, builder per step)", |b| {
        b.iter(|| totp_rs_code(black_box(step)))
    });
    group.bench_function("verify +-1 step (totp-rs, builder per step)", |b| {
        b.iter(|| {
            // Every step is computed, as the service does (no early exit).
            (step - 1..=step + 1).fold(None, |found, s| {
                if totp_rs_code(s) == black_box(code.as_str()) {
                    Some(s)
                } else {
                    found
                }
            })
        })
    });
    group.finish();
}

/// Rounds of the interleaved ratio measurement, and calls per round.
const RATIO_ROUNDS: usize = 21;
const RATIO_CALLS: u32 = 2_000;

fn time_per_call(calls: u32, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..calls {
        op();
    }
    start.elapsed() / calls
}

/// bare / verify, each round timing both back to back (alternating which
/// goes first), so drift on a shared machine hits both alike; the median of
/// the rounds' ratios.
fn ratio(f: &Fixture) {
    let mut ratios = Vec::with_capacity(RATIO_ROUNDS);
    let (mut verify_ns, mut bare_ns) = (Vec::new(), Vec::new());
    for round in 0..RATIO_ROUNDS {
        let verify = || time_per_call(RATIO_CALLS, || drop(black_box(f.verify())));
        let bare = || time_per_call(RATIO_CALLS, || drop(black_box(f.bare())));
        let (v, b) = if round % 2 == 0 {
            let v = verify();
            (v, bare())
        } else {
            let b = bare();
            (verify(), b)
        };
        verify_ns.push(v.as_nanos());
        bare_ns.push(b.as_nanos());
        ratios.push(b.as_secs_f64() / v.as_secs_f64());
    }
    let median_f = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let median_u = |v: &mut Vec<u128>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let r = median_f(&mut ratios);
    let verdict = if r >= 0.8 { "meets" } else { "misses" };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "token/ratio: bare ed25519 verify_strict {} ns / Verifier::verify {} ns = {r:.3} \
         (median of {RATIO_ROUNDS} interleaved rounds of {RATIO_CALLS} calls; \
         target >= 0.8: {verdict})",
        median_u(&mut bare_ns),
        median_u(&mut verify_ns),
    );
}

fn main() {
    let fixture = Fixture::new();
    let mut c = Criterion::default().configure_from_args();
    token_benches(&mut c, &fixture);
    totp_benches(&mut c);
    c.final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // then each benchmark runs once as a test and the ratio is skipped.
    if std::env::args().any(|a| a == "--bench") {
        ratio(&fixture);
    }
}
