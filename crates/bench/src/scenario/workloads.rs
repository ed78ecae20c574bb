//! The workloads: one request of each kind a run repeats, and how a
//! failure is keyed in the report.

use super::*;

/// `grpc.health.v1.Health/Check` for the whole server (service "").
#[derive(Debug, Default)]
pub struct HealthCheck;

impl Workload for HealthCheck {
    type Client = HealthClient<Channel>;

    fn client(&self, channel: Channel) -> Self::Client {
        HealthClient::new(channel)
    }

    async fn call(&self, client: &mut Self::Client) -> Attempt {
        let reply = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        Attempt::Done(match reply {
            Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
            Ok(r) => Err(format!("unexpected: status {}", r.get_ref().status)),
            Err(status) => Err(failure_key(&status)),
        })
    }
}

/// CheckAccess(transport, app, production), tokens round-robin.
#[derive(Debug)]
pub struct CheckAccess {
    pub tokens: Vec<AsciiMetadataValue>,
    pub app_id: String,
    /// `None`: every answer must be `allowed`; `Some(reason)`: every answer
    /// must be a refusal with this reason.
    pub expect_refusal: Option<&'static str>,
    pub next: AtomicUsize,
}

impl Workload for CheckAccess {
    type Client = PolicyServiceClient<Channel>;

    fn client(&self, channel: Channel) -> Self::Client {
        PolicyServiceClient::new(channel)
    }

    async fn call(&self, client: &mut Self::Client) -> Attempt {
        let token = &self.tokens[next(&self.next, self.tokens.len())];
        let request = authed(
            CheckAccessRequest {
                action: Action::TransportPackage.into(),
                app_id: self.app_id.clone(),
                environment: Environment::Production.into(),
            },
            token,
        );
        Attempt::Done(match client.check_access(request).await {
            Err(status) => Err(failure_key(&status)),
            Ok(reply) => {
                let reply = reply.into_inner();
                match (self.expect_refusal, reply.allowed) {
                    (None, true) => Ok(()),
                    (Some(reason), false) if reply.reason == reason => Ok(()),
                    (_, true) => Err("unexpected: allowed".into()),
                    (_, false) => Err(format!("unexpected: refused {}", reply.reason)),
                }
            }
        })
    }
}

/// A user the Verify workload holds: its token, secret and last step.
#[derive(Clone)]
pub struct VerifyUser {
    pub bearer: AsciiMetadataValue,
    pub secret: Vec<u8>,
    pub last_step: u64,
}

impl std::fmt::Debug for VerifyUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyUser")
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// TwoFactorService.Verify with a fresh code each time. A user is taken out
/// of the queue while its request is in flight, so two codes of one user
/// never race (the later step would make the earlier one a reuse).
#[derive(Debug)]
pub struct Verify {
    pub users: Mutex<VecDeque<VerifyUser>>,
}

impl Verify {
    pub(super) fn take(&self) -> Option<VerifyUser> {
        self.users.lock().ok()?.pop_front()
    }

    pub(super) fn give_back(&self, user: VerifyUser) {
        if let Ok(mut users) = self.users.lock() {
            users.push_back(user);
        }
    }
}

impl Workload for Verify {
    type Client = TwoFactorServiceClient<Channel>;

    fn client(&self, channel: Channel) -> Self::Client {
        TwoFactorServiceClient::new(channel)
    }

    async fn call(&self, client: &mut Self::Client) -> Attempt {
        let Some(mut user) = self.take() else {
            return Attempt::Wait(Duration::from_millis(1));
        };
        let step = match steps::next_step(Some(user.last_step), clock::unix_now()) {
            Ok(step) => step,
            Err(wait) => {
                self.give_back(user);
                return Attempt::Wait(wait.min(MAX_CODE_WAIT));
            }
        };
        let request = authed(
            VerifyRequest {
                code: totp::code(&user.secret, step),
            },
            &user.bearer,
        );
        // Never present this step again, whatever the answer.
        user.last_step = step;
        let outcome = match client.verify(request).await {
            Ok(reply) => match bearer(&reply.into_inner().access_token) {
                // Each step-up returns a new token; keeping it keeps the
                // user's token fresh through long runs.
                Ok(token) => {
                    user.bearer = token;
                    Ok(())
                }
                Err(_) => Err("unexpected: unusable access token".into()),
            },
            Err(status) => Err(failure_key(&status)),
        };
        self.give_back(user);
        Attempt::Done(outcome)
    }
}

/// SessionService.SignIn. Each worker signs in users of its own (worker
/// `w` of `c` takes users `w`, `w + c`, ...), so no user ever has two
/// sign-ins in flight: that is how people sign in, and a pile of parallel
/// attempts at one username is what auth's throttle counts before argon2
/// runs (services/auth/src/throttle.rs), so it would refuse them.
#[derive(Debug)]
pub struct SignIn {
    pub usernames: Vec<String>,
    pub password: String,
    /// Workers so far; the next one's index.
    pub workers: AtomicUsize,
    pub concurrency: usize,
}

/// A sign-in worker: its client and its place among the users.
#[derive(Debug)]
pub struct SignInWorker {
    pub(super) client: SessionServiceClient<Channel>,
    /// The index of the user it signs in next.
    pub(super) user: usize,
}

impl Workload for SignIn {
    type Client = SignInWorker;

    fn client(&self, channel: Channel) -> Self::Client {
        SignInWorker {
            client: SessionServiceClient::new(channel),
            user: next(&self.workers, self.usernames.len()),
        }
    }

    async fn call(&self, worker: &mut Self::Client) -> Attempt {
        let username = &self.usernames[worker.user];
        worker.user = (worker.user + self.concurrency) % self.usernames.len();
        let request = SignInRequest {
            username: username.clone(),
            password: self.password.clone(),
        };
        Attempt::Done(
            worker
                .client
                .sign_in(request)
                .await
                .map(drop)
                .map_err(|s| failure_key(&s)),
        )
    }
}

/// One HTTP call to the gateway per request, the sessions' cookies
/// round-robin; `expect` is the status that counts as success.
#[derive(Debug)]
pub struct GatewayCall {
    pub gateway: String,
    pub method: hyper::Method,
    pub path: String,
    pub json: Option<String>,
    pub cookies: Vec<String>,
    pub expect: hyper::StatusCode,
    pub next: AtomicUsize,
}

impl Workload for GatewayCall {
    /// Connected on first use: a keep-alive HTTP/1.1 connection per worker.
    type Client = Option<Http>;

    fn client(&self, _channel: Channel) -> Self::Client {
        None
    }

    async fn call(&self, client: &mut Self::Client) -> Attempt {
        let http = match client {
            Some(http) => http,
            None => match Http::connect(&self.gateway).await {
                Ok(http) => client.insert(http),
                Err(_) => return Attempt::Done(Err("connect".into())),
            },
        };
        let cookie = &self.cookies[next(&self.next, self.cookies.len())];
        let body = self.json.as_deref().map(|json| http::Body {
            content_type: "application/json",
            bytes: json.as_bytes(),
        });
        let outcome = match http
            .send(self.method.clone(), &self.path, cookie, body)
            .await
        {
            Ok((status, _)) if status == self.expect => Ok(()),
            Ok((status, _)) => Err(format!("HTTP {}", status.as_u16())),
            Err(_) => {
                // The connection is unusable; the next call makes another.
                *client = None;
                Err("connection".into())
            }
        };
        Attempt::Done(outcome)
    }
}

/// SessionService.Refresh, sessions round-robin.
#[derive(Debug)]
pub struct Refresh {
    pub session_tokens: Vec<String>,
    pub next: AtomicUsize,
}

impl Workload for Refresh {
    type Client = SessionServiceClient<Channel>;

    fn client(&self, channel: Channel) -> Self::Client {
        SessionServiceClient::new(channel)
    }

    async fn call(&self, client: &mut Self::Client) -> Attempt {
        let token = &self.session_tokens[next(&self.next, self.session_tokens.len())];
        let request = RefreshRequest {
            session_token: token.clone(),
        };
        Attempt::Done(
            client
                .refresh(request)
                .await
                .map(drop)
                .map_err(|s| failure_key(&s)),
        )
    }
}
