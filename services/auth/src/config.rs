//! Command line and settings. Every flag has a `PADLOCK_*` environment
//! fallback; values are checked at start-up with a message that names the
//! flag. Secrets are [`Secret`]s, so they never print.

use std::path::PathBuf;
use std::time::Duration;

use padlock_runtime::Secret;
use padlock_runtime::cli::CommonArgs;

use crate::store::LockoutPolicy;
use crate::throttle::TrustedProxies;

/// auth's gRPC port (docs/design.md "Ports and command lines").
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// docs/design.md: the step-up window is eight hours.
pub(crate) const DEFAULT_MFA_MAX_AGE_SECS: u64 =
    padlock_token::MaxAge::DEFAULT.secs().unsigned_abs();

/// argon2id hashes at once unless configured: one, so a burst of sign-ins
/// queues instead of taking auth over 64 MB resident (19 MiB per hash).
pub(crate) const DEFAULT_PASSWORD_HASHES_AT_ONCE: usize = 1;
/// docs/design.md: access tokens live minutes (default 10).
pub(crate) const DEFAULT_ACCESS_TOKEN_TTL_SECS: u64 = 10 * 60;
/// A session outlives its step-up window by a working day.
pub(crate) const DEFAULT_SESSION_TTL_SECS: u64 = 12 * 60 * 60;
/// A TOTP enrollment must be confirmed within ten minutes.
pub(crate) const ENROLLMENT_TTL_SECS: i64 = 10 * 60;
/// docs/design.md "Lockout": 5 consecutive wrong codes lock the factor for 15
/// minutes, doubling on each further lock up to 24 hours.
pub(crate) const LOCKOUT: LockoutPolicy = LockoutPolicy {
    max_failures: 5,
    first_lock: Duration::from_secs(15 * 60),
    max_lock: Duration::from_secs(24 * 60 * 60),
};

/// docs/design.md "SMS": a code is valid 5 minutes and allows 5 tries.
pub(crate) const SMS_CODE_TTL_SECS: i64 = 5 * 60;
pub(crate) const SMS_CODE_MAX_TRIES: u32 = 5;

/// Sending limits against SMS pumping and cost (docs/design.md "SMS": resend
/// cooldown, hourly and daily caps per user and per number, a global cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsLimits {
    pub resend_cooldown_secs: i64,
    pub per_user_hour: u32,
    pub per_user_day: u32,
    pub per_number_hour: u32,
    pub per_number_day: u32,
    pub global_per_minute: u32,
}

impl Default for SmsLimits {
    fn default() -> Self {
        SmsLimits {
            resend_cooldown_secs: 30,
            per_user_hour: 5,
            per_user_day: 10,
            per_number_hour: 5,
            per_number_day: 10,
            global_per_minute: 60,
        }
    }
}

#[derive(Debug, clap::Parser)]
#[command(
    name = "padlock-auth",
    version,
    about = "padlock's auth service: sign-in, second factors, signing keys"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub checkpoints: padlock_runtime::checkpoint::CheckpointArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// The `iss` of every access token.
    #[arg(
        long,
        env = "PADLOCK_ISSUER",
        default_value = "padlock-auth",
        global = true
    )]
    pub issuer: String,
    /// The `aud` of every access token: the deploy service.
    #[arg(
        long,
        env = "PADLOCK_AUDIENCE",
        default_value = "padlock-deploy",
        global = true
    )]
    pub audience: String,
    /// Access-token lifetime in seconds.
    #[arg(long, env = "PADLOCK_ACCESS_TOKEN_TTL", default_value_t = DEFAULT_ACCESS_TOKEN_TTL_SECS, global = true)]
    pub access_token_ttl: u64,
    /// Session lifetime in seconds.
    #[arg(long, env = "PADLOCK_SESSION_TTL", default_value_t = DEFAULT_SESSION_TTL_SECS, global = true)]
    pub session_ttl: u64,
    /// How long a verified second factor counts, in seconds (reported to clients).
    #[arg(long, env = "PADLOCK_MFA_MAX_AGE", default_value_t = DEFAULT_MFA_MAX_AGE_SECS, global = true)]
    pub mfa_max_age: u64,
    /// PKCS#8 PEM Ed25519 signing key; default: `<data-dir>/keys/current.pem`, generated on first start.
    #[arg(long, env = "PADLOCK_SIGNING_KEY_FILE", global = true)]
    pub signing_key_file: Option<PathBuf>,
    /// The previous signing key, still published in the JWKS after a rotation.
    #[arg(long, env = "PADLOCK_PREVIOUS_SIGNING_KEY_FILE", global = true)]
    pub previous_signing_key_file: Option<PathBuf>,
    /// Data-encryption keys for secrets at rest, `id:base64key[,id:base64key]`, the first
    /// one current; default: `<data-dir>/data-keys`, generated on first start (development only).
    #[arg(long, env = "PADLOCK_DATA_KEYS", hide_env_values = true, global = true)]
    pub data_keys: Option<Secret<String>>,
    /// A file holding the data keys spec, kept outside the data directory; read again on SIGHUP.
    #[arg(
        long,
        env = "PADLOCK_DATA_KEYS_FILE",
        conflicts_with = "data_keys",
        global = true
    )]
    pub data_keys_file: Option<PathBuf>,
    /// Addresses and CIDR ranges of the proxies (the gateway) whose
    /// `padlock-client-ip` metadata names the client for sign-in throttling;
    /// comma-separated. None by default: the connection's peer counts.
    #[arg(
        long,
        env = "PADLOCK_TRUSTED_PROXIES",
        default_value = "",
        global = true
    )]
    pub trusted_proxies: String,
    /// argon2id hashes that run at once (sign-in, new passwords). Each holds
    /// 19 MiB while it runs: 1 keeps auth under 64 MB resident through
    /// sign-in bursts (BENCHMARKS.md); 2 doubles sign-ins per second on
    /// two cores, at 19 MiB more.
    #[arg(
        long,
        env = "PADLOCK_PASSWORD_HASHES_AT_ONCE",
        default_value_t = DEFAULT_PASSWORD_HASHES_AT_ONCE,
        global = true
    )]
    pub password_hashes_at_once: usize,
    #[command(flatten)]
    pub sms: SmsArgs,
}

/// How SMS codes are sent: Twilio, or (development only) the log.
#[derive(Debug, Clone, clap::Args)]
pub struct SmsArgs {
    /// Twilio account SID (AC...). With it, codes go out through Twilio.
    #[arg(long, env = "PADLOCK_TWILIO_ACCOUNT_SID", global = true)]
    pub twilio_account_sid: Option<String>,
    /// Twilio auth token.
    #[arg(
        long,
        env = "PADLOCK_TWILIO_AUTH_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub twilio_auth_token: Option<Secret<String>>,
    /// The sending number (E.164) ...
    #[arg(long, env = "PADLOCK_TWILIO_FROM", global = true)]
    pub twilio_from: Option<String>,
    /// ... or a messaging service SID (MG...).
    #[arg(long, env = "PADLOCK_TWILIO_MESSAGING_SERVICE_SID", global = true)]
    pub twilio_messaging_service_sid: Option<String>,
    /// Twilio's API base URL (tests point it at a fake).
    #[arg(
        long,
        env = "PADLOCK_TWILIO_BASE_URL",
        default_value = "https://api.twilio.com",
        global = true
    )]
    pub twilio_base_url: String,
    /// Development only: write SMS codes to the log instead of sending them.
    #[arg(long, env = "PADLOCK_SMS_DEV_LOG", global = true)]
    pub sms_dev_log: bool,
    /// Most SMS codes sent per minute by the whole service.
    #[arg(
        long,
        env = "PADLOCK_SMS_GLOBAL_PER_MINUTE",
        default_value_t = 60,
        global = true
    )]
    pub sms_global_per_minute: u32,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply pending database migrations and exit (run once before rolling
    /// out replicas; serving also migrates, idempotently).
    Migrate,
    /// Provision users (there is no self sign-up).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage the data keys that seal secrets at rest.
    #[command(subcommand)]
    DataKeys(DataKeysCommand),
    /// Check the audit trail's hash chain.
    #[command(subcommand)]
    Audit(padlock_runtime::audit::AuditCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Adds a user; the password is read from the first line of standard input.
    Add {
        #[arg(long)]
        username: String,
        /// A role such as `support` or `operator`; repeat for several.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Imports users (hashes, roles, TOTP seeds) from JSON lines; all or nothing.
    #[command(long_about = crate::import::LONG_ABOUT)]
    Import(crate::import::ImportArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Makes a new current signing key in `<data-dir>/keys`, keeping the old
    /// one as previous; send SIGHUP to running services to load it.
    Rotate,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataKeysCommand {
    /// How many secrets, live SMS codes and signing key files each data key
    /// protects: an older key can go when it protects nothing.
    Status,
    /// Puts a fresh key first in the data keys file (`--data-keys-file` or
    /// the generated one), keeping the others; send SIGHUP to running
    /// services to load it, then run `reseal`.
    Rotate {
        /// The new key's id; default: the next free `kN`.
        #[arg(long)]
        id: Option<String>,
    },
    /// Re-encrypts every sealed secret and signing key file under the
    /// current data key, while the service runs; idempotent.
    Reseal {
        /// Rows per batch.
        #[arg(long, default_value_t = crate::data_keys::DEFAULT_BATCH)]
        batch: u64,
    },
}

/// Token and factor settings, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sms_limits: SmsLimits,
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: i64,
    pub session_ttl: i64,
    pub mfa_max_age: i64,
    pub trusted_proxies: TrustedProxies,
    pub password_hashes_at_once: usize,
}

impl Settings {
    pub fn from_args(args: &AuthArgs) -> Result<Self, String> {
        let secs = |v: u64, flag: &str| {
            i64::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("--{flag} must be a positive number of seconds"))
        };
        let settings = Settings {
            sms_limits: SmsLimits {
                global_per_minute: args.sms.sms_global_per_minute.max(1),
                ..SmsLimits::default()
            },
            issuer: args.issuer.trim().to_owned(),
            audience: args.audience.trim().to_owned(),
            access_token_ttl: secs(args.access_token_ttl, "access-token-ttl")?,
            session_ttl: secs(args.session_ttl, "session-ttl")?,
            mfa_max_age: secs(args.mfa_max_age, "mfa-max-age")?,
            trusted_proxies: TrustedProxies::parse(&args.trusted_proxies)
                .map_err(|e| format!("--trusted-proxies: {e}"))?,
            password_hashes_at_once: match args.password_hashes_at_once {
                0 => return Err("--password-hashes-at-once must be at least 1".into()),
                n => n,
            },
        };
        if settings.issuer.is_empty() {
            return Err("--issuer must not be empty".into());
        }
        if settings.audience.is_empty() {
            return Err("--audience must not be empty".into());
        }
        if settings.access_token_ttl > settings.session_ttl {
            return Err("--access-token-ttl must not exceed --session-ttl".into());
        }
        Ok(settings)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sms_limits: SmsLimits::default(),
            issuer: "padlock-auth".into(),
            audience: "padlock-deploy".into(),
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL_SECS as i64,
            session_ttl: DEFAULT_SESSION_TTL_SECS as i64,
            mfa_max_age: DEFAULT_MFA_MAX_AGE_SECS as i64,
            trusted_proxies: TrustedProxies::default(),
            password_hashes_at_once: DEFAULT_PASSWORD_HASHES_AT_ONCE,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn settings(args: &[&str]) -> Result<Settings, String> {
        let cli = Cli::try_parse_from(std::iter::once("padlock-auth").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Settings::from_args(&cli.auth)
    }

    #[test]
    fn one_password_hash_at_a_time_unless_configured() {
        assert_eq!(settings(&[]).unwrap().password_hashes_at_once, 1);
        let two = settings(&["--password-hashes-at-once", "2"]).unwrap();
        assert_eq!(two.password_hashes_at_once, 2);
        let zero = settings(&["--password-hashes-at-once", "0"]).unwrap_err();
        assert!(zero.contains("--password-hashes-at-once"), "{zero}");
    }
}
