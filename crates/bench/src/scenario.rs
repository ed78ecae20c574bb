//! The workloads and the runs that set them up: each subcommand provisions
//! what it needs, then measures the health floor and its RPC on the same
//! connections to the same server, one after the other.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use padlock_proto::auth::v1::session_service_client::SessionServiceClient;
use padlock_proto::auth::v1::two_factor_service_client::TwoFactorServiceClient;
use padlock_proto::auth::v1::{RefreshRequest, SignInRequest, VerifyRequest};
use padlock_proto::deploy::v1::app_service_client::AppServiceClient;
use padlock_proto::deploy::v1::permission_service_client::PermissionServiceClient;
use padlock_proto::deploy::v1::policy_service_client::PolicyServiceClient;
use padlock_proto::deploy::v1::{
    Action, AddTeamMemberRequest, CheckAccessRequest, CreateAppRequest, Environment,
    GrantNodePermissionsRequest, NodePermission, TeamRole,
};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cli::{BulkArgs, LoadArgs, SupportArgs};
use crate::grpc::{authed, bearer, connect, endpoint, failure_key, rpc_error};
use crate::http::{self, Http};
use crate::load::{self, Attempt, LoadShape, Measurement, Workload};
use crate::report::{Phase, Report};
use crate::setup::{Provisioner, Session};
use crate::{bulk, clock, steps, totp};

mod workloads;

pub use workloads::*;

/// How long a worker with no unused TOTP code waits before looking again.
const MAX_CODE_WAIT: Duration = Duration::from_millis(250);

const HEALTH_RPC: &str = "grpc.health.v1.Health/Check";
/// The gateway's floor: its liveness route, no backend call.
const GATEWAY_FLOOR: &str = "GET /healthz";

fn next(counter: &AtomicUsize, len: usize) -> usize {
    counter.fetch_add(1, Ordering::Relaxed) % len.max(1)
}

// ---------------------------------------------------------------- runs

/// A run in progress: the report it fills and how it loads servers.
#[derive(Debug)]
pub struct Run {
    pub report: Report,
    shape: LoadShape,
    load: LoadArgs,
    setup_started: Option<Instant>,
}

impl Run {
    pub fn new(scenario: &str, load: &LoadArgs, default_concurrency: usize) -> Self {
        let concurrency = load.concurrency.unwrap_or(default_concurrency).max(1);
        let shape = LoadShape {
            concurrency,
            warmup: load.warmup,
            duration: load.duration,
            rate: load.rate,
        };
        Self {
            report: Report {
                tool: format!("padlock-bench {}", env!("CARGO_PKG_VERSION")),
                scenario: scenario.to_owned(),
                started_at: clock::unix_now().as_secs(),
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
                concurrency,
                connections: load.connections.max(1),
                warmup_s: load.warmup.as_secs_f64(),
                duration_s: load.duration.as_secs_f64(),
                setup_users: 0,
                setup_s: 0.0,
                phases: Vec::new(),
                notes: Vec::new(),
            },
            shape,
            load: load.clone(),
            setup_started: None,
        }
    }

    fn start_setup(&mut self) {
        eprintln!("setup ...");
        self.setup_started = Some(Instant::now());
    }

    fn end_setup(&mut self, users: usize) {
        let secs = self
            .setup_started
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        self.report.setup_users = users;
        self.report.setup_s = secs;
        eprintln!("setup: {users} users in {secs:.1} s");
    }

    /// Seconds a token must stay valid for: every phase of the run.
    fn run_secs(&self) -> u64 {
        let per_phase = self.shape.warmup + self.shape.duration;
        (per_phase * 2).as_secs() + 1
    }

    fn note(&mut self, note: String) {
        self.report.notes.push(note);
    }

    async fn connect(&self, addr: &str) -> anyhow::Result<Vec<Channel>> {
        connect(addr, self.report.connections, self.load.timeout).await
    }

    async fn measure<W: Workload>(
        &mut self,
        name: &str,
        server: &str,
        rpc: &str,
        workload: W,
        channels: &[Channel],
    ) -> anyhow::Result<Measurement> {
        eprintln!(
            "measuring {name} on {server}: {} concurrent, {:.1} s + {:.1} s warm-up ...",
            self.shape.concurrency,
            self.shape.duration.as_secs_f64(),
            self.shape.warmup.as_secs_f64()
        );
        let m = load::run(Arc::new(workload), channels, self.shape).await?;
        self.report.phases.push(Phase::new(
            name,
            server,
            rpc,
            rpc == HEALTH_RPC || rpc == GATEWAY_FLOOR,
            &m,
        ));
        Ok(m)
    }

    /// The health floor on `server`, unless `--no-floor`.
    async fn floor(&mut self, server: &str, channels: &[Channel]) -> anyhow::Result<()> {
        if self.load.no_floor {
            return Ok(());
        }
        self.measure(
            "floor Health/Check",
            server,
            HEALTH_RPC,
            HealthCheck,
            channels,
        )
        .await
        .map(drop)
    }

    pub fn finish(mut self) -> Report {
        self.report.compute_ratios();
        self.report
    }
}

/// `health`: the floor alone.
pub async fn health(addr: &str, load: &LoadArgs) -> anyhow::Result<Report> {
    let mut run = Run::new("health", load, 64);
    let channels = run.connect(addr).await?;
    run.measure(
        "floor Health/Check",
        addr,
        HEALTH_RPC,
        HealthCheck,
        &channels,
    )
    .await?;
    Ok(run.finish())
}

/// The setup `check-access` and `transport` share: a Technical Contact
/// (TOTP, stepped up) owns a new app; `users` users join it with DEPLOY and
/// TRANSPORT on each of `environments`; each signs in and (unless
/// `refused`) steps up with TOTP, its token fresh for the run. Returns the
/// app's id and the users' sessions.
pub(crate) async fn transporters(
    run: &mut Run,
    auth: &str,
    deploy: &str,
    users: usize,
    refused: bool,
    environments: &[Environment],
    support: &SupportArgs,
) -> anyhow::Result<(String, Vec<Session>)> {
    let timeout = run.load.timeout;
    let p = Provisioner::connect(auth, support, timeout).await?;
    let deploy_setup = endpoint(deploy, timeout)?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to deploy at {deploy}: {e}"))?;

    let tc_name = format!("bench-{}-tc", p.run_id());
    p.create_user(&tc_name, &[]).await?;
    let tc = p.enroll_totp(p.sign_in(&tc_name).await?).await?;
    let app = AppServiceClient::new(deploy_setup.clone())
        .create_app(authed(
            CreateAppRequest {
                name: format!("bench {}", p.run_id()),
                technical_contact: tc_name.clone(),
            },
            &p.support_bearer().await?,
        ))
        .await
        .map_err(|s| rpc_error("CreateApp as the support user (needs role operator)", &s))?
        .into_inner();

    let mut sessions = if refused {
        p.signed_in_users(users).await?
    } else {
        p.totp_users(users)
            .await?
            .into_iter()
            .map(|u| u.session)
            .collect()
    };

    // Granting on production is padlocked: the TC's session is stepped up,
    // and a refresh (the user setup may have outlasted its access token)
    // keeps its mfa_at.
    let mut tc_session = tc.session;
    p.refresh(&mut tc_session).await?;
    let tc_bearer = &tc_session.bearer;
    let app_id = &app.id;
    p.parallel("members with TRANSPORT", users, |i| {
        let channel = deploy_setup.clone();
        let username = p.username(i);
        async move {
            AppServiceClient::new(channel.clone())
                .add_team_member(authed(
                    AddTeamMemberRequest {
                        app_id: app_id.clone(),
                        username: username.clone(),
                        role: TeamRole::Deploy.into(),
                    },
                    tc_bearer,
                ))
                .await
                .map_err(|s| rpc_error(&format!("AddTeamMember {username}"), &s))?;
            for environment in environments {
                PermissionServiceClient::new(channel.clone())
                    .grant_node_permissions(authed(
                        GrantNodePermissionsRequest {
                            app_id: app_id.clone(),
                            environment: (*environment).into(),
                            username: username.clone(),
                            permissions: vec![NodePermission::Transport.into()],
                        },
                        tc_bearer,
                    ))
                    .await
                    .map_err(|s| rpc_error(&format!("GrantNodePermissions {username}"), &s))?;
            }
            anyhow::Ok(())
        }
    })
    .await?;
    let refreshed = p
        .keep_fresh_for(sessions.iter_mut(), run.run_secs())
        .await?;
    if refreshed > 0 {
        run.note(format!(
            "{refreshed} access tokens were refreshed before measuring (the setup outlasted their lifetime)"
        ));
    }

    Ok((app.id, sessions))
}

/// `check-access`: a Technical Contact (TOTP, stepped up) owns a new app;
/// `users` users join it with DEPLOY and TRANSPORT on production; each signs
/// in and (unless `refused`) steps up with TOTP. Then the floor and
/// CheckAccess on deploy.
pub async fn check_access(
    auth: &str,
    deploy: &str,
    users: usize,
    refused: bool,
    support: &SupportArgs,
    load: &LoadArgs,
) -> anyhow::Result<Report> {
    anyhow::ensure!(users > 0, "--users must be at least 1");
    let scenario = if refused {
        "check-access --refused"
    } else {
        "check-access"
    };
    let mut run = Run::new(scenario, load, 64);
    run.start_setup();
    let production = [Environment::Production];
    let (app_id, sessions) =
        transporters(&mut run, auth, deploy, users, refused, &production, support).await?;
    run.end_setup(users + 1);

    let channels = run.connect(deploy).await?;
    run.floor(deploy, &channels).await?;
    let (name, expect_refusal) = if refused {
        (
            format!("CheckAccess refused ({users} users)"),
            Some(padlock_proto::Reason::MfaRequired.as_str_name()),
        )
    } else {
        (format!("CheckAccess allowed ({users} users)"), None)
    };
    let workload = CheckAccess {
        tokens: sessions.into_iter().map(|s| s.bearer).collect(),
        app_id,
        expect_refusal,
        next: AtomicUsize::new(0),
    };
    run.measure(
        &name,
        deploy,
        "padlock.deploy.v1.PolicyService/CheckAccess",
        workload,
        &channels,
    )
    .await?;
    Ok(run.finish())
}

/// `verify`: `users` users enroll TOTP (or, with `existing`, sign in that
/// many of the bulk users), then the floor and Verify on auth.
pub async fn verify(
    auth: &str,
    users: usize,
    existing: Option<usize>,
    bulk: &BulkArgs,
    support: &SupportArgs,
    load: &LoadArgs,
) -> anyhow::Result<Report> {
    anyhow::ensure!(users > 0, "--users must be at least 1");
    let mut run = Run::new("verify", load, 32);
    if run.shape.concurrency > users {
        run.note(format!(
            "concurrency lowered from {} to {users}: one request per user at a time",
            run.shape.concurrency
        ));
        run.shape.concurrency = users;
        run.report.concurrency = users;
    }
    run.start_setup();
    let enrolled = match existing {
        Some(existing) => {
            bulk::sign_in_existing(
                auth,
                bulk,
                existing,
                users,
                support.setup_concurrency,
                load.timeout,
                run.run_secs(),
            )
            .await?
        }
        None => {
            let p = Provisioner::connect(auth, support, load.timeout).await?;
            let mut enrolled = p.totp_users(users).await?;
            p.keep_fresh_for(enrolled.iter_mut().map(|u| &mut u.session), run.run_secs())
                .await?;
            enrolled
        }
    };
    run.end_setup(users);

    let channels = run.connect(auth).await?;
    run.floor(auth, &channels).await?;
    let span = run.shape.warmup + run.shape.duration;
    let budget = steps::budget(
        enrolled.iter().map(|u| Some(u.last_step)),
        clock::unix_now(),
        span,
    );
    eprintln!(
        "code budget: at most {budget} unused codes for {:.1} s ({:.0}/s)",
        span.as_secs_f64(),
        budget as f64 / span.as_secs_f64().max(0.001)
    );
    let workload = Verify {
        users: Mutex::new(
            enrolled
                .into_iter()
                .map(|u| VerifyUser {
                    bearer: u.session.bearer,
                    secret: u.secret,
                    last_step: u.last_step,
                })
                .collect(),
        ),
    };
    let m = run
        .measure(
            &match existing {
                Some(existing) => format!("Verify TOTP ({users} of {existing} bulk users)"),
                None => format!("Verify TOTP ({users} users)"),
            },
            auth,
            "padlock.auth.v1.TwoFactorService/Verify",
            workload,
            &channels,
        )
        .await?;
    run.note(format!(
        "at most {budget} unused codes existed for the {:.1} s of warm-up and measurement",
        span.as_secs_f64()
    ));
    if m.waited > Duration::ZERO {
        let worker_time = span.as_secs_f64() * run.shape.concurrency as f64;
        run.note(format!(
            "workers were idle {:.0}% of the time for want of unused codes: the throughput is \
             capped by --users, not by the service (see BENCHMARKS.md: users >= rate x \
             (warm-up + duration) / 2 for runs under 30 s)",
            100.0 * m.waited.as_secs_f64() / worker_time.max(0.001)
        ));
    }
    Ok(run.finish())
}

/// `sign-in`: `users` users, then the floor and SignIn on auth.
pub async fn sign_in(
    auth: &str,
    users: usize,
    support: &SupportArgs,
    load: &LoadArgs,
) -> anyhow::Result<Report> {
    let mut run = Run::new("sign-in", load, 32);
    anyhow::ensure!(
        users >= run.shape.concurrency,
        "--users ({users}) must be at least --concurrency ({}): one sign-in in flight per user",
        run.shape.concurrency
    );
    run.start_setup();
    let p = Provisioner::connect(auth, support, load.timeout).await?;
    p.parallel("users created", users, |i| {
        let p = &p;
        async move { p.create_user(&p.username(i), &[]).await }
    })
    .await?;
    run.end_setup(users);
    let channels = run.connect(auth).await?;
    run.floor(auth, &channels).await?;
    let workload = SignIn {
        usernames: (0..users).map(|i| p.username(i)).collect(),
        password: p.password().to_owned(),
        workers: AtomicUsize::new(0),
        concurrency: run.shape.concurrency,
    };
    run.measure(
        &format!("SignIn argon2id ({users} users)"),
        auth,
        "padlock.auth.v1.SessionService/SignIn",
        workload,
        &channels,
    )
    .await?;
    Ok(run.finish())
}

/// `refresh`: `users` users sign in, then the floor and Refresh on auth.
pub async fn refresh(
    auth: &str,
    users: usize,
    support: &SupportArgs,
    load: &LoadArgs,
) -> anyhow::Result<Report> {
    anyhow::ensure!(users > 0, "--users must be at least 1");
    let mut run = Run::new("refresh", load, 32);
    run.start_setup();
    let p = Provisioner::connect(auth, support, load.timeout).await?;
    let sessions = p.signed_in_users(users).await?;
    run.end_setup(users);
    let channels = run.connect(auth).await?;
    run.floor(auth, &channels).await?;
    let workload = Refresh {
        session_tokens: sessions.into_iter().map(|s| s.session_token).collect(),
        next: AtomicUsize::new(0),
    };
    run.measure(
        &format!("Refresh ({users} sessions)"),
        auth,
        "padlock.auth.v1.SessionService/Refresh",
        workload,
        &channels,
    )
    .await?;
    Ok(run.finish())
}

/// `transport`: the setup of `check-access` (stepped-up users with TRANSPORT
/// on production), then through the gateway one of them uploads a package
/// and brings it to acceptance; then the gateway's floor (`GET /healthz`)
/// and the web UI's "Transport to Production": `POST
/// /api/v1/packages/{id}/transports` acceptance -> production, each
/// request a user's session cookies, every answer 201 (a new deployment).
pub async fn transport(
    auth: &str,
    deploy: &str,
    gateway: &str,
    users: usize,
    support: &SupportArgs,
    load: &LoadArgs,
) -> anyhow::Result<Report> {
    use hyper::{Method, StatusCode};
    anyhow::ensure!(users > 0, "--users must be at least 1");
    let mut run = Run::new("transport", load, 16);
    run.start_setup();
    let environments = [
        Environment::Test,
        Environment::Acceptance,
        Environment::Production,
    ];
    let (app_id, sessions) =
        transporters(&mut run, auth, deploy, users, false, &environments, support).await?;
    let cookies: Vec<String> = sessions
        .iter()
        .map(|s| http::session_cookie(&s.session_token, s.bearer.to_str().unwrap_or_default()))
        .collect();
    let mut setup = Http::connect(gateway).await?;
    let (status, body) = setup
        .send(
            Method::POST,
            &format!("/api/v1/apps/{app_id}/packages?version=1.0.0&file_name=bench.mda"),
            &cookies[0],
            Some(http::Body {
                content_type: "application/octet-stream",
                bytes: b"padlock-bench package",
            }),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::CREATED,
        "uploading a package through the gateway: HTTP {status}"
    );
    let package: serde_json::Value = serde_json::from_slice(&body)?;
    let package_id = package["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the gateway's package has no id"))?
        .to_owned();
    for (path, body, what) in [
        (
            format!("/api/v1/packages/{package_id}/deployments"),
            r#"{"environment":"test"}"#,
            "deploying to test",
        ),
        (
            format!("/api/v1/packages/{package_id}/transports"),
            r#"{"from_environment":"test","to_environment":"acceptance"}"#,
            "transporting to acceptance",
        ),
    ] {
        let (status, _) = setup
            .send(
                Method::POST,
                &path,
                &cookies[0],
                Some(http::Body {
                    content_type: "application/json",
                    bytes: body.as_bytes(),
                }),
            )
            .await?;
        anyhow::ensure!(
            status == StatusCode::CREATED,
            "{what} through the gateway: HTTP {status}"
        );
    }
    run.end_setup(users + 1);

    // The HTTP workloads make their own connections; the load driver still
    // wants gRPC channels to hand out.
    let channels = run.connect(deploy).await?;
    let call = |method, path: String, json: Option<&str>, expect| GatewayCall {
        gateway: gateway.to_owned(),
        method,
        path,
        json: json.map(str::to_owned),
        cookies: cookies.clone(),
        expect,
        next: AtomicUsize::new(0),
    };
    if !run.load.no_floor {
        let floor = call(Method::GET, "/healthz".into(), None, StatusCode::OK);
        run.measure(
            "floor GET /healthz",
            gateway,
            GATEWAY_FLOOR,
            floor,
            &channels,
        )
        .await?;
    }
    let transport = call(
        Method::POST,
        format!("/api/v1/packages/{package_id}/transports"),
        Some(r#"{"from_environment":"acceptance","to_environment":"production"}"#),
        StatusCode::CREATED,
    );
    run.measure(
        &format!("Transport to Production ({users} users)"),
        gateway,
        "POST /api/v1/packages/{id}/transports",
        transport,
        &channels,
    )
    .await?;
    Ok(run.finish())
}
