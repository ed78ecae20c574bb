//! The key cache against an in-memory JWKS and a real gRPC auth: fetch
//! on first use, refresh on an unknown `kid`, rate limits, failures.

use super::*;
use std::time::Duration;

use async_trait::async_trait;
use padlock_token::JwkSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use padlock_runtime::ManualClock;
use padlock_token::{KeyRing, SigningKey};

const ISS: &str = "https://auth.padlock.test";
const AUD: &str = "padlock-deploy";
const NOW: i64 = 1_700_000_000;

/// An in-memory JWKS that counts its fetches.
#[derive(Debug, Default)]
struct FakeSource {
    jwks: Mutex<Option<JwkSet>>,
    fetches: AtomicUsize,
    /// Times `fetch` yields before answering, so concurrent callers
    /// really overlap with it.
    yields: usize,
}

impl FakeSource {
    fn serving(jwks: JwkSet) -> Arc<Self> {
        Arc::new(Self {
            jwks: Mutex::new(Some(jwks)),
            ..Self::default()
        })
    }

    fn set(&self, jwks: Option<JwkSet>) {
        *self.jwks.lock().unwrap() = jwks;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl JwksSource for FakeSource {
    async fn fetch(&self) -> Result<JwkSet, FetchError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        for _ in 0..self.yields {
            tokio::task::yield_now().await;
        }
        self.jwks
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| FetchError::Rpc(tonic::Status::unavailable("auth is down")))
    }
}

fn claims() -> Claims {
    Claims {
        iss: ISS.into(),
        aud: AUD.into(),
        sub: "user-1".into(),
        preferred_username: "alice".into(),
        roles: vec![],
        sid: "session-1".into(),
        iat: NOW,
        exp: NOW + 600,
        jti: "jti-1".into(),
        auth_time: NOW,
        amr: vec!["pwd".into()],
        acr: "1".into(),
        mfa_at: None,
        mfa_method: None,
    }
}

fn cache(source: Arc<FakeSource>, clock: &ManualClock) -> KeyCache {
    KeyCache::new(source, ISS, AUD, Arc::new(clock.clone()))
}

/// The ring after a rotation: a new current key, the old one previous.
fn rotate(ring: &KeyRing) -> KeyRing {
    KeyRing::new(SigningKey::generate(), Some(ring.current.clone()))
}

#[tokio::test]
async fn first_use_fetches_once_and_then_uses_the_cache() {
    let ring = KeyRing::generate();
    let source = FakeSource::serving(ring.jwks());
    let clock = ManualClock::at_unix(NOW);
    let keys = cache(source.clone(), &clock);
    assert!(keys.cached_kids().is_empty());
    assert_eq!(source.fetches(), 0);

    let token = ring.sign(&claims()).unwrap();
    for _ in 0..3 {
        assert_eq!(keys.verify(&token).await.unwrap(), claims());
    }
    assert_eq!(source.fetches(), 1);
    assert_eq!(keys.cached_kids(), [ring.current.kid()]);
}

#[tokio::test]
async fn unknown_kid_refreshes_once_and_verifies_after_rotation() {
    let ring = KeyRing::generate();
    let source = FakeSource::serving(ring.jwks());
    let clock = ManualClock::at_unix(NOW);
    let keys = cache(source.clone(), &clock);
    let old_token = ring.sign(&claims()).unwrap();
    keys.verify(&old_token).await.unwrap();
    assert_eq!(source.fetches(), 1);

    let rotated = rotate(&ring);
    source.set(Some(rotated.jwks()));
    let new_token = rotated.sign(&claims()).unwrap();
    assert_eq!(keys.verify(&new_token).await.unwrap(), claims());
    assert_eq!(source.fetches(), 2);
    // Tokens signed before the rotation still verify, with no fetch.
    assert_eq!(keys.verify(&old_token).await.unwrap(), claims());
    assert_eq!(keys.verify(&new_token).await.unwrap(), claims());
    assert_eq!(source.fetches(), 2);
    let mut want = vec![
        rotated.current.kid().to_owned(),
        ring.current.kid().to_owned(),
    ];
    want.sort();
    assert_eq!(keys.cached_kids(), want);
}

#[tokio::test]
async fn unknown_kid_refreshes_at_most_once_per_interval() {
    let ring = KeyRing::generate();
    let source = FakeSource::serving(ring.jwks());
    let clock = ManualClock::at_unix(NOW);
    let keys = cache(source.clone(), &clock);
    keys.verify(&ring.sign(&claims()).unwrap()).await.unwrap();
    assert_eq!(source.fetches(), 1);

    let stranger = KeyRing::generate().sign(&claims()).unwrap();
    let other_stranger = KeyRing::generate().sign(&claims()).unwrap();
    let unknown = |r: Result<Claims, VerifyError>| {
        matches!(r, Err(VerifyError::Token(TokenError::UnknownKid(_))))
    };
    assert!(unknown(keys.verify(&stranger).await));
    assert_eq!(source.fetches(), 2);
    clock.advance(Duration::from_secs(29));
    assert!(unknown(keys.verify(&other_stranger).await));
    assert!(unknown(keys.verify(&stranger).await));
    assert_eq!(source.fetches(), 2, "a second refresh within 30 s");

    clock.advance(Duration::from_secs(2));
    assert!(unknown(keys.verify(&stranger).await));
    assert_eq!(source.fetches(), 3, "31 s later a refresh is allowed");
    // The known key kept working throughout.
    keys.verify(&ring.sign(&claims()).unwrap()).await.unwrap();
    assert_eq!(source.fetches(), 3);
}

#[tokio::test]
async fn rotation_within_the_interval_is_picked_up_after_it() {
    let ring = KeyRing::generate();
    let source = FakeSource::serving(ring.jwks());
    let clock = ManualClock::at_unix(NOW);
    let keys = cache(source.clone(), &clock);
    keys.verify(&ring.sign(&claims()).unwrap()).await.unwrap();
    // A made-up kid spends the refresh...
    let stranger = KeyRing::generate().sign(&claims()).unwrap();
    assert!(keys.verify(&stranger).await.is_err());
    // ...so a rotation right after waits for the next window.
    let rotated = rotate(&ring);
    source.set(Some(rotated.jwks()));
    let mut later = claims();
    later.iat = NOW + 31;
    later.exp = NOW + 631;
    let token = rotated.sign(&later).unwrap();
    assert!(matches!(
        keys.verify(&token).await,
        Err(VerifyError::Token(TokenError::UnknownKid(_)))
    ));
    clock.advance(Duration::from_secs(31));
    assert_eq!(keys.verify(&token).await.unwrap(), later);
    assert_eq!(source.fetches(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unknown_kid_tokens_share_one_fetch() {
    let ring = KeyRing::generate();
    let source = Arc::new(FakeSource {
        jwks: Mutex::new(Some(ring.jwks())),
        yields: 50,
        ..FakeSource::default()
    });
    let clock = ManualClock::at_unix(NOW);
    let keys = Arc::new(cache(source.clone(), &clock));
    keys.refresh().await.unwrap();
    assert_eq!(source.fetches(), 1);

    let rotated = rotate(&ring);
    source.set(Some(rotated.jwks()));
    let token = rotated.sign(&claims()).unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (keys, token, start) = (keys.clone(), token.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                keys.verify(&token).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), claims());
    }
    assert_eq!(source.fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_use_shares_one_fetch() {
    let ring = KeyRing::generate();
    let source = Arc::new(FakeSource {
        jwks: Mutex::new(Some(ring.jwks())),
        yields: 50,
        ..FakeSource::default()
    });
    let keys = Arc::new(cache(source.clone(), &ManualClock::at_unix(NOW)));
    let token = ring.sign(&claims()).unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (keys, token, start) = (keys.clone(), token.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                keys.verify(&token).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), claims());
    }
    assert_eq!(source.fetches(), 1);
}

#[tokio::test]
async fn fetch_failure_with_nothing_cached_is_keys_unavailable() {
    let ring = KeyRing::generate();
    let source = Arc::new(FakeSource::default());
    let clock = ManualClock::at_unix(NOW);
    let keys = cache(source.clone(), &clock);
    let token = ring.sign(&claims()).unwrap();
    assert_eq!(keys.verify(&token).await, Err(VerifyError::KeysUnavailable));
    assert_eq!(source.fetches(), 1);
    assert!(keys.cached_kids().is_empty());
    assert!(matches!(keys.refresh().await, Err(FetchError::Rpc(_))));

    // Once auth answers, the next request fetches and succeeds.
    source.set(Some(ring.jwks()));
    assert_eq!(keys.verify(&token).await.unwrap(), claims());
}

#[tokio::test]
async fn fetch_failure_with_keys_cached_keeps_the_keys() {
    let ring = KeyRing::generate();
    let source = FakeSource::serving(ring.jwks());
    let clock = ManualClock::at_unix(NOW);
    let keys = cache(source.clone(), &clock);
    let token = ring.sign(&claims()).unwrap();
    keys.verify(&token).await.unwrap();

    source.set(None);
    assert!(keys.refresh().await.is_err());
    let stranger = KeyRing::generate().sign(&claims()).unwrap();
    assert!(matches!(
        keys.verify(&stranger).await,
        Err(VerifyError::Token(TokenError::UnknownKid(_)))
    ));
    assert_eq!(source.fetches(), 3);
    assert_eq!(keys.verify(&token).await.unwrap(), claims());
    assert_eq!(keys.cached_kids(), [ring.current.kid()]);
}

#[tokio::test]
async fn a_jwks_without_usable_keys_does_not_replace_the_cache() {
    let ring = KeyRing::generate();
    let source = FakeSource::serving(ring.jwks());
    let keys = cache(source.clone(), &ManualClock::at_unix(NOW));
    keys.refresh().await.unwrap();
    let mut foreign = ring.current.public_jwk();
    foreign.kty = "RSA".into();
    source.set(Some(JwkSet {
        keys: vec![foreign],
    }));
    assert!(matches!(
        keys.refresh().await,
        Err(FetchError::NoUsableKeys)
    ));
    assert_eq!(keys.cached_kids(), [ring.current.kid()]);
    let token = ring.sign(&claims()).unwrap();
    assert_eq!(keys.verify(&token).await.unwrap(), claims());
}

#[tokio::test]
async fn bad_tokens_are_refused_without_a_refresh() {
    let ring = KeyRing::generate();
    let source = FakeSource::serving(ring.jwks());
    let clock = ManualClock::at_unix(NOW);
    let keys = cache(source.clone(), &clock);
    let token = ring.sign(&claims()).unwrap();
    keys.verify(&token).await.unwrap();
    clock.advance(Duration::from_secs(3_600));
    assert_eq!(
        keys.verify(&token).await,
        Err(VerifyError::Token(TokenError::Expired))
    );
    assert_eq!(
        keys.verify("not.a.token").await,
        Err(VerifyError::Token(TokenError::Malformed))
    );
    assert_eq!(source.fetches(), 1);
}

#[tokio::test]
async fn grpc_source_reads_auths_jwks() {
    use padlock_proto::auth::v1 as pb;
    use padlock_proto::auth::v1::key_service_server::{KeyService, KeyServiceServer};

    #[derive(Debug)]
    struct Auth(JwkSet);

    #[tonic::async_trait]
    impl KeyService for Auth {
        async fn get_jwks(
            &self,
            _: tonic::Request<pb::GetJwksRequest>,
        ) -> Result<tonic::Response<pb::Jwks>, tonic::Status> {
            let keys = self
                .0
                .keys
                .iter()
                .map(|k| pb::Jwk {
                    kty: k.kty.clone(),
                    crv: k.crv.clone(),
                    x: k.x.clone(),
                    kid: k.kid.clone(),
                    r#use: k.use_.clone(),
                    alg: k.alg.clone(),
                })
                .collect();
            Ok(tonic::Response::new(pb::Jwks { keys }))
        }
    }

    let ring = rotate(&KeyRing::generate());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeyServiceServer::new(Auth(ring.jwks())))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );

    let source = GrpcJwksSource::connect_lazy(format!("http://{addr}"), FETCH_TIMEOUT).unwrap();
    assert_eq!(source.fetch().await.unwrap(), ring.jwks());

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(matches!(source.fetch().await, Err(FetchError::Rpc(_))));
}

#[test]
fn bad_url_is_refused() {
    assert!(GrpcJwksSource::connect_lazy("not a url", FETCH_TIMEOUT).is_err());
}

/// An auth that accepts the connection and never answers: the fetch
/// fails with the timeout instead of holding its callers. The outer
/// bound only turns a regression into a failure rather than a hang.
#[tokio::test]
async fn a_hanging_auth_fails_the_fetch_within_its_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, mut connections) = tokio::sync::mpsc::unbounded_channel();
    let hang = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            // Keep the socket open, read nothing, answer nothing.
            let _ = accepted.send(socket);
        }
    });
    let timeout = Duration::from_millis(300);
    let source = GrpcJwksSource::connect_lazy(format!("http://{addr}"), timeout).unwrap();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), source.fetch())
        .await
        .expect("the fetch must not hang");
    let Err(FetchError::Rpc(status)) = result else {
        panic!("expected a failed call: {result:?}");
    };
    // The expiry comes wrapped in a transport error while the HTTP/2
    // handshake (which auth never answers) is still under way.
    let timed_out = std::iter::successors(std::error::Error::source(&status), |e| e.source())
        .any(|e| e.is::<tonic::TimeoutExpired>());
    assert!(timed_out, "{status:?}");
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    assert!(connections.recv().await.is_some(), "auth was reached");
    hang.abort();
}
