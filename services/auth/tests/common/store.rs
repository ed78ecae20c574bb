//! Storage-level fixtures: users, sessions and factors written through the
//! store's own functions, factors confirmed through the code checks with
//! real codes (`Store::check_codes`), and short names for what a check
//! answered. Time is a parameter of every check: tests pass later times
//! instead of waiting.

use std::sync::Arc;

use padlock_auth::sealing::DataKeys;
use padlock_auth::store::{
    AuditEvent, CodeCheck, CodeOutcome, Method, NewFactor, Outcome, PendingCode, Purpose, SendGate,
    Session, Store, User,
};
use padlock_auth::totp::{self, Algorithm};
use padlock_runtime::Secret;
use padlock_test_support::TestDatabase;

/// 2027-01-15T08:00:00Z, at the start of a TOTP step.
pub const NOW: i64 = 1_800_000_000;
/// The TOTP time step at [`NOW`] (RFC 6238: 30 s steps).
pub const T: i64 = NOW / 30;
/// The TOTP secret of every factor here (RFC 6238 Appendix B's SHA-1 seed).
pub const SECRET: &[u8] = b"12345678901234567890";
pub const PHONE: &str = "+31612345678";

/// Each backend's fresh database and a store on it.
pub async fn stores() -> Vec<(TestDatabase, Store)> {
    let mut all = Vec::new();
    for db in padlock_test_support::databases().await {
        let store = Store::connect(&db.url).await.expect("connect and migrate");
        all.push((db, store));
    }
    all
}

/// Fresh data keys, as a service holds them.
pub fn keys() -> Arc<DataKeys> {
    Arc::new(DataKeys::generate("k1").expect("a key id"))
}

/// The code of [`SECRET`] for time step `step`.
pub fn code(step: i64) -> String {
    totp::code_at(
        SECRET,
        Algorithm::Sha1,
        6,
        u64::try_from(step * 30).unwrap(),
    )
}

/// Six digits that are the code of no step from `T - 2` to `T + 2 + n`:
/// the `n`-th of them (from 0).
pub fn wrong_code(n: usize) -> String {
    let taken: Vec<String> = (T - 2..=T + 2 + n as i64).map(code).collect();
    (0..1_000_000u32)
        .map(|c| format!("{c:06}"))
        .filter(|c| !taken.contains(c))
        .nth(n)
        .unwrap()
}

pub fn user(id: &str, username: &str) -> User {
    User {
        id: id.into(),
        username: username.into(),
        password_hash: "$argon2id$stub".into(),
        roles: vec!["operator".into(), "support".into()],
        created_at: NOW,
    }
}

/// The audit record a user is created with.
pub fn created(id: &str) -> AuditEvent {
    AuditEvent {
        at: NOW,
        kind: "user_created",
        outcome: Outcome::Ok,
        actor: None,
        subject: Some(id.into()),
        session_id: None,
        detail: String::new(),
    }
}

/// The session [`with_session`] gives `user_id`.
pub fn session_of(user_id: &str) -> String {
    format!("s-{user_id}")
}

/// A session of `user_id`, live for 30 days from [`NOW`].
pub fn live_session(id: &str, user_id: &str) -> Session {
    Session {
        id: id.into(),
        user_id: user_id.into(),
        auth_time: NOW,
        mfa_at: None,
        mfa_method: None,
        expires_at: NOW + 30 * 86_400,
        ended_at: None,
    }
}

/// A pending enrollment of `method` for `user_id`: [`SECRET`] or
/// [`PHONE`], sealed as the service seals them.
pub fn pending(keys: &DataKeys, user_id: &str, enrollment_id: &str, method: Method) -> NewFactor {
    let (secret, masked, mac) = match method {
        Method::Totp => (SECRET, None, None),
        Method::Sms => (
            PHONE.as_bytes(),
            Some("+31 6** *** *78".to_owned()),
            Some(hex::encode(keys.mac(PHONE.as_bytes()).1)),
        ),
    };
    let sealed = keys.seal(secret, user_id.as_bytes());
    NewFactor {
        masked_phone: masked,
        phone_mac: mac,
        user_id: user_id.into(),
        method,
        enrollment_id: enrollment_id.into(),
        secret_key_id: sealed.key_id,
        secret_ciphertext: sealed.blob,
        created_at: NOW,
        enrollment_expires_at: NOW + 600,
    }
}

/// A check of `code` by `user_id` in its session [`session_of`] at `now`.
pub fn check(
    keys: &Arc<DataKeys>,
    user_id: &str,
    purpose: Purpose,
    code: &str,
    now: i64,
) -> CodeCheck {
    CodeCheck {
        session_id: session_of(user_id),
        user_id: user_id.into(),
        now,
        code: Secret::new(code.to_owned()),
        purpose,
        keys: keys.clone(),
    }
}

/// A `Verify` of `code` by `user_id` at `now`.
pub fn verify(keys: &Arc<DataKeys>, user_id: &str, code: &str, now: i64) -> CodeCheck {
    check(keys, user_id, Purpose::Verify, code, now)
}

/// A `ConfirmEnrollment` of `enrollment_id` with `code` by `user_id` at `now`.
pub fn confirm(
    keys: &Arc<DataKeys>,
    user_id: &str,
    enrollment_id: &str,
    code: &str,
    now: i64,
) -> CodeCheck {
    let purpose = Purpose::Confirm {
        enrollment_id: enrollment_id.into(),
    };
    check(keys, user_id, purpose, code, now)
}

/// The enrollment id [`enrolled`] and [`sms_pending`] use.
pub fn enrollment_of(user_id: &str) -> String {
    format!("e-{user_id}")
}

/// User `id` with a live session [`session_of`].
pub async fn with_session(store: &Store, id: &str) {
    store
        .create_user(&user(id, &format!("user-{id}")), created(id))
        .await
        .expect("create user");
    store
        .create_session(&live_session(&session_of(id), id), &format!("h-{id}"), NOW)
        .await
        .expect("create a session");
}

/// User `id` with a live session and an active TOTP factor, confirmed at
/// [`NOW`] with the code of step [`T`] (which is then used).
pub async fn enrolled(store: &Store, keys: &Arc<DataKeys>, id: &str) {
    with_session(store, id).await;
    let enrollment = enrollment_of(id);
    assert!(
        store
            .begin_enrollment(&pending(keys, id, &enrollment, Method::Totp))
            .await
            .expect("begin enrollment")
    );
    let confirmed = one(store, confirm(keys, id, &enrollment, &code(T), NOW)).await;
    assert_eq!(confirmed, "stepped up", "confirming {id}'s enrollment");
}

/// User `id` with a live session and a pending SMS enrollment whose code
/// went out at [`NOW`]: returns the code.
pub async fn sms_pending(store: &Store, keys: &DataKeys, id: &str) -> String {
    with_session(store, id).await;
    let pending = pending(keys, id, &enrollment_of(id), Method::Sms);
    assert!(store.begin_enrollment(&pending).await.expect("begin"));
    send_sms_code(store, keys, id, NOW).await
}

/// User `id` with a live session and an active SMS factor, confirmed at
/// [`NOW`]; a new code went out at `NOW + 60`: returns that code.
pub async fn sms_enrolled(store: &Store, keys: &Arc<DataKeys>, id: &str) -> String {
    let first = sms_pending(store, keys, id).await;
    let confirmed = one(store, confirm(keys, id, &enrollment_of(id), &first, NOW)).await;
    assert_eq!(confirmed, "stepped up", "confirming {id}'s number");
    send_sms_code(store, keys, id, NOW + 60).await
}

/// Stores a new SMS code for `id` at `now`, as sending one does, with no
/// cooldown or limits: returns it. Codes differ from one call to the next.
pub async fn send_sms_code(store: &Store, keys: &DataKeys, id: &str, now: i64) -> String {
    let code = format!("{:06}", (now % 1_000_000 + 424_242) % 1_000_000);
    let material = padlock_auth::sms::code_material(id, &code);
    let (key_id, tag) = keys.mac(&material);
    let pending = PendingCode {
        hash: hex::encode(tag),
        key_id,
        expires_at: now + 300,
        tries: 0,
    };
    let gate = store
        .store_code(id, &pending, now, 0, &[])
        .await
        .expect("store a code");
    assert_eq!(gate, SendGate::Open);
    code
}

/// Checks `check` alone; its answer in short ([`summary`]).
pub async fn one(store: &Store, check: CodeCheck) -> String {
    let answers = store.check_codes(&[check]).await.expect("check a code");
    summary(&answers[0].outcome)
}

/// A check's answer in short, for assertions.
pub fn summary(outcome: &CodeOutcome) -> String {
    match outcome {
        CodeOutcome::SteppedUp { .. } => "stepped up".into(),
        CodeOutcome::SessionGone => "session gone".into(),
        CodeOutcome::Wrong { tries_left } => format!("wrong, {tries_left} left"),
        CodeOutcome::WrongAndLocked { until } => format!("wrong, locked until {until}"),
        CodeOutcome::Locked { until } => format!("locked until {until}"),
        CodeOutcome::Reused => "reused".into(),
        CodeOutcome::Refused(refusal) => format!("refused: {refusal:?}"),
    }
}
