//! The pure access check (`policy::decide`, docs/design.md "The step-up rule")
//! on its own: what every padlocked call and `CheckAccess` pay beyond the
//! token verification and the permission lookup. BENCHMARKS.md has the
//! figures; `cargo test -p padlock-deploy --benches` runs each once.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use padlock_deploy::policy::{Action, Env, Grant, Holdings, Permission, Policy, decide};
use padlock_token::Claims;

const NOW: i64 = 1_800_000_000;
const APP: &str = "0b5a1e3c-7d2f-4c11-9e4e-2f3a4b5c6d7e";

fn claims(mfa_at: Option<i64>) -> Claims {
    Claims {
        iss: "https://auth.padlock.test".into(),
        aud: "padlock".into(),
        sub: "u-deployer".into(),
        preferred_username: "dev".into(),
        roles: vec![],
        sid: "s-1".into(),
        iat: NOW - 60,
        exp: NOW + 540,
        jti: "j-1".into(),
        auth_time: NOW - 3600,
        amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
        acr: "aal2".into(),
        mfa_at,
        mfa_method: mfa_at.map(|_| "totp".into()),
    }
}

/// A Deploy member of a few apps with TRANSPORT on production of one.
fn holdings() -> Holdings {
    let mut grants: Vec<Grant> = (0..8)
        .map(|n| Grant {
            app_id: format!("other-app-{n}"),
            env: Env::Test,
            permission: Permission::Operate,
        })
        .collect();
    grants.push(Grant {
        app_id: APP.into(),
        env: Env::Production,
        permission: Permission::Transport,
    });
    Holdings {
        technical_contact_of: vec![],
        grants,
    }
}

fn access(c: &mut Criterion) {
    let policy = Policy::default();
    let holdings = holdings();
    let fresh = claims(Some(NOW - 600));
    let none = claims(None);
    let mut group = c.benchmark_group("access");
    group.bench_function("decide allowed (transport to production)", |b| {
        b.iter(|| {
            let d = decide(
                Ok(black_box(&fresh)),
                &policy,
                Action::TransportPackage,
                black_box(APP),
                Env::Production,
                &holdings,
                black_box(NOW),
            );
            assert!(d.allowed());
            d
        })
    });
    group.bench_function("decide refused (MFA_REQUIRED)", |b| {
        b.iter(|| {
            let d = decide(
                Ok(black_box(&none)),
                &policy,
                Action::TransportPackage,
                black_box(APP),
                Env::Production,
                &holdings,
                black_box(NOW),
            );
            assert!(!d.allowed());
            d
        })
    });
    group.finish();
}

criterion_group!(benches, access);
criterion_main!(benches);
