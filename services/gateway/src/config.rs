//! Command line and settings for `padlock-gateway`: the common flags, where
//! auth and deploy serve gRPC, the session cookie's lifetime, the upload
//! limits and the backend call timeout. Every flag has a `PADLOCK_*`
//! environment fallback and is checked at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use padlock_runtime::cli::CommonArgs;

/// Where the gateway listens unless `--listen` says otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));
/// The session cookie's `Max-Age`: auth's default session lifetime (12 h).
pub const DEFAULT_SESSION_TTL_SECS: u64 = 43_200;
/// The largest package body the gateway buffers: deploy's default limit.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 512 * 1024 * 1024;
/// Uploads buffered at once by default. An upload is held in memory whole
/// (its size and SHA-256 go first), so this times `--max-upload-bytes`
/// bounds the memory uploads can take.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 4;
/// How long one call to auth or deploy may take by default: far above
/// any padlock RPC, below the request timeout.
pub const DEFAULT_BACKEND_TIMEOUT_SECS: u64 = 15;

#[derive(Debug, clap::Parser)]
#[command(
    name = "padlock-gateway",
    version,
    about = "padlock's HTTP/JSON gateway for the web UI: cookies, CSRF, gRPC translation"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Where padlock-auth serves gRPC.
    #[arg(
        long,
        env = "PADLOCK_AUTH_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub auth_url: String,
    /// Where padlock-deploy serves gRPC.
    #[arg(
        long,
        env = "PADLOCK_DEPLOY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub deploy_url: String,
    /// `Max-Age` of the session cookie in seconds; match auth's `--session-ttl`.
    #[arg(long, env = "PADLOCK_SESSION_TTL", default_value_t = DEFAULT_SESSION_TTL_SECS)]
    pub session_ttl: u64,
    /// Largest package upload accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "PADLOCK_MAX_UPLOAD_BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,
    /// Package uploads buffered at once; one more gets 503 `OVERLOADED`.
    #[arg(
        long,
        env = "PADLOCK_MAX_CONCURRENT_UPLOADS",
        default_value_t = DEFAULT_MAX_CONCURRENT_UPLOADS,
        value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize)
    )]
    pub max_concurrent_uploads: usize,
    /// Seconds one call to auth or deploy may take (sent as its
    /// `grpc-timeout`); then the request gets 504. Uploads get the stream
    /// timeout instead.
    #[arg(
        long,
        env = "PADLOCK_BACKEND_TIMEOUT",
        default_value_t = DEFAULT_BACKEND_TIMEOUT_SECS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub backend_timeout: u64,
}

/// What the request handlers need from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub session_ttl_secs: u64,
    pub max_upload_bytes: u64,
    pub max_concurrent_uploads: usize,
    /// The deadline of every unary call to a backend.
    pub backend_timeout: Duration,
}

impl GatewayArgs {
    /// The checked settings, or a message naming the flag that is wrong.
    pub fn settings(&self) -> Result<Settings, String> {
        if self.session_ttl == 0 {
            return Err("--session-ttl must be at least 1 second".into());
        }
        if self.max_upload_bytes == 0 {
            return Err("--max-upload-bytes must be at least 1".into());
        }
        if usize::try_from(self.max_upload_bytes).is_err() {
            return Err("--max-upload-bytes does not fit in memory on this machine".into());
        }
        for (flag, url) in [
            ("--auth-url", &self.auth_url),
            ("--deploy-url", &self.deploy_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{flag} must be an http:// or https:// URL"));
            }
        }
        Ok(Settings {
            session_ttl_secs: self.session_ttl,
            max_upload_bytes: self.max_upload_bytes,
            max_concurrent_uploads: self.max_concurrent_uploads,
            backend_timeout: Duration::from_secs(self.backend_timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let cli = Cli::try_parse_from(["padlock-gateway"]).unwrap();
        assert_eq!(
            cli.common.listen_or(DEFAULT_LISTEN).to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(cli.gateway.auth_url, "http://127.0.0.1:50051");
        assert_eq!(cli.gateway.deploy_url, "http://127.0.0.1:50052");
        let settings = cli.gateway.settings().unwrap();
        assert_eq!(settings.session_ttl_secs, 43_200);
        assert_eq!(settings.max_upload_bytes, 512 * 1024 * 1024);
        assert_eq!(settings.max_concurrent_uploads, 4);
        assert_eq!(settings.backend_timeout, Duration::from_secs(15));
    }

    #[test]
    fn bad_settings_name_their_flag() {
        let cli = Cli::try_parse_from(["padlock-gateway", "--session-ttl", "0"]).unwrap();
        assert!(
            cli.gateway
                .settings()
                .unwrap_err()
                .contains("--session-ttl")
        );
        let cli = Cli::try_parse_from(["padlock-gateway", "--deploy-url", "127.0.0.1:1"]).unwrap();
        assert!(cli.gateway.settings().unwrap_err().contains("--deploy-url"));
        for flag in ["--backend-timeout", "--max-concurrent-uploads"] {
            let err = Cli::try_parse_from(["padlock-gateway", flag, "0"]).unwrap_err();
            assert!(err.to_string().contains(flag), "{err}");
        }
    }
}
