//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use padlock_runtime::Secret;

#[derive(Debug, clap::Parser)]
#[command(
    name = "padlock-bench",
    version,
    about = "Load padlock's services over gRPC and compare each RPC with the \
             grpc.health.v1.Health/Check floor of the same server in the same run"
)]
pub struct Cli {
    /// Also write the report as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Worker threads of this tool's runtime (default: one per CPU).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The floor alone: grpc.health.v1.Health/Check.
    Health {
        /// host:port of any padlock service.
        #[arg(long)]
        addr: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// deploy PolicyService.CheckAccess(transport, app, production) with a
    /// pool of users' tokens, beside deploy's floor.
    CheckAccess {
        #[arg(long)]
        auth: String,
        #[arg(long)]
        deploy: String,
        /// Distinct users whose tokens are used round-robin.
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Use tokens without `mfa_at` (refused with MFA_REQUIRED) instead
        /// of stepped-up ones.
        #[arg(long)]
        refused: bool,
        #[command(flatten)]
        support: SupportArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// The gateway's "Transport to Production" (POST
    /// /api/v1/packages/{id}/transports) with stepped-up users' session
    /// cookies, beside the gateway's floor (GET /healthz).
    Transport {
        #[arg(long)]
        auth: String,
        #[arg(long)]
        deploy: String,
        /// host:port of the gateway (HTTP).
        #[arg(long)]
        gateway: String,
        /// Distinct users whose sessions are used round-robin.
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[command(flatten)]
        support: SupportArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// auth TwoFactorService.Verify with valid TOTP codes, each used once,
    /// beside auth's floor.
    Verify {
        #[arg(long)]
        auth: String,
        /// Users enrolled with TOTP. Each has at most two unused codes at
        /// the start and one more per 30 s step: see BENCHMARKS.md.
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Instead of creating and enrolling new users, sign in `--users`
        /// of the first N users `bulk-users` made (evenly spread over them)
        /// and present their codes. None of the sample may have verified
        /// within the last 90 s. No support user is needed.
        #[arg(long, value_name = "N")]
        existing: Option<usize>,
        #[command(flatten)]
        bulk: BulkArgs,
        #[command(flatten)]
        support: SupportArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// auth SessionService.SignIn (argon2id per request), beside auth's floor.
    SignIn {
        #[arg(long)]
        auth: String,
        /// At least --concurrency: each user has one sign-in in flight.
        #[arg(long, default_value_t = 32)]
        users: usize,
        #[command(flatten)]
        support: SupportArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// auth SessionService.Refresh over the users' sessions, beside auth's floor.
    Refresh {
        #[arg(long)]
        auth: String,
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[command(flatten)]
        support: SupportArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Writes users with active TOTP factors straight into the auth
    /// database (for the scale figure), then prints rows/s. Runs auth's
    /// migrations first if the schema is missing.
    BulkUsers(BulkUsersArgs),
}

/// Where `bulk-users` writes and what.
#[derive(Debug, Clone, clap::Args)]
pub struct BulkUsersArgs {
    /// auth's database, `postgres://...` or `sqlite://...`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret<String>,
    /// auth's data keys, `id:base64key,...`: the TOTP secrets are sealed
    /// under the first, so auth must run with the same keys.
    #[arg(long, env = "PADLOCK_DATA_KEYS", hide_env_values = true)]
    pub data_keys: Secret<String>,
    /// The `padlock-auth` whose `users import` writes the users; default:
    /// the one beside padlock-bench, else `padlock-auth` on PATH.
    #[arg(long)]
    pub auth_bin: Option<std::path::PathBuf>,
    /// Users to insert.
    #[arg(long)]
    pub users: usize,
    /// Number of the first one, to add to an earlier load with the same
    /// prefix (e.g. `--first 1000 --users 999000` after `--users 1000`).
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    #[command(flatten)]
    pub bulk: BulkArgs,
}

/// Which bulk users, and the seed their passwords and TOTP secrets derive
/// from.
#[derive(Debug, Clone, clap::Args)]
pub struct BulkArgs {
    /// Bulk usernames are `<prefix>-<7-digit number>`.
    #[arg(long, default_value = "bulk")]
    pub prefix: String,
    /// Any string; `bulk-users` and `verify --existing` must use the same.
    #[arg(long, env = "PADLOCK_BENCH_BULK_SEED", hide_env_values = true)]
    pub bulk_seed: Option<Secret<String>>,
}

/// The support user the setup provisions through. Create it first with
/// `padlock-auth users add --username NAME --role support --role operator`.
/// Support calls and CreateApp need its second factor: the setup steps it
/// up with TOTP, enrolling it on the first run.
#[derive(Debug, Clone, clap::Args)]
pub struct SupportArgs {
    #[arg(
        long,
        env = "PADLOCK_BENCH_SUPPORT_USERNAME",
        default_value = "bench-support"
    )]
    pub support_username: String,
    /// Prefer the environment variable: arguments show in process lists.
    #[arg(long, env = "PADLOCK_BENCH_SUPPORT_PASSWORD", hide_env_values = true)]
    pub support_password: Option<String>,
    /// Where the support user's TOTP secret is kept between runs (base32,
    /// as an authenticator app keeps it; mode 0600). Absent file: the first
    /// run enrolls the user and writes it. Without this option a run can
    /// only enroll a support user that has no second factor yet, and the
    /// secret is forgotten when it ends.
    #[arg(long, env = "PADLOCK_BENCH_SUPPORT_TOTP_FILE")]
    pub support_totp_file: Option<PathBuf>,
    /// Users provisioned at once during the setup.
    #[arg(long, default_value_t = 16)]
    pub setup_concurrency: usize,
}

impl SupportArgs {
    /// The support user's password, which every setup but `verify
    /// --existing` signs in with.
    pub fn password(&self) -> anyhow::Result<&str> {
        self.support_password.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "the setup signs in as the support user: give --support-password \
                 (or PADLOCK_BENCH_SUPPORT_PASSWORD)"
            )
        })
    }
}

/// How hard and how long to push.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Requests in flight at once (default: 64 for health and check-access,
    /// 32 for verify, sign-in and refresh).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Measured time per phase, e.g. 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before each phase.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Deadline of each request.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Skip the health floor (no ratio then).
    #[arg(long)]
    pub no_floor: bool,
    /// Requests started per second across all workers, evenly spaced
    /// (default: as many as the concurrency allows). For soaks at a share
    /// of the peak.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,
}

/// `10s`, `500ms`, `2m`, `1.5s`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {text:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("not a duration: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn subcommands_parse_as_documented() {
        let cli = Cli::try_parse_from([
            "padlock-bench",
            "check-access",
            "--auth",
            "127.0.0.1:1",
            "--deploy",
            "127.0.0.1:2",
            "--users",
            "20",
            "--support-password",
            "pw",
            "--duration",
            "2s",
            "--json",
            "out.json",
        ])
        .unwrap();
        assert_eq!(cli.json.as_deref(), Some(std::path::Path::new("out.json")));
        let Command::CheckAccess {
            users,
            refused,
            support,
            load,
            ..
        } = cli.command
        else {
            panic!("not check-access");
        };
        assert_eq!(users, 20);
        assert!(!refused);
        assert_eq!(support.support_username, "bench-support");
        assert_eq!(load.duration, Duration::from_secs(2));
        assert_eq!(load.connections, 4);
        assert_eq!(load.concurrency, None);
    }
}
