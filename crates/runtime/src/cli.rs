//! The flags every service binary shares (docs/design.md "Ports and command
//! lines"), each with its `PADLOCK_*` environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::TypedValueParser as _;

use crate::Secret;

#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "PADLOCK_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,

    /// Directory for the SQLite database, keys and other state.
    #[arg(long, env = "PADLOCK_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,

    /// `postgres://...` or `sqlite://...`; default: SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<Secret<String>>,

    /// Shifts this service's clock by N seconds. For drills and end-to-end
    /// tests of time windows against real binaries only; logged loudly.
    #[arg(
        long,
        env = "PADLOCK_CLOCK_OFFSET_SECS",
        default_value_t = 0,
        allow_negative_numbers = true,
        global = true
    )]
    pub clock_offset_secs: i64,

    /// Log format: `text` or `json`.
    #[arg(
        long,
        env = "PADLOCK_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: crate::telemetry::LogFormat,

    /// Requests handled at once; one more is refused at once (gRPC
    /// UNAVAILABLE / HTTP 503 `OVERLOADED`) instead of queueing.
    #[arg(
        long,
        env = "PADLOCK_MAX_CONCURRENT_REQUESTS",
        default_value_t = crate::server::DEFAULT_MAX_CONCURRENT_REQUESTS,
        value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize),
        global = true
    )]
    pub max_concurrent_requests: usize,

    /// HTTP/2 streams one client connection may have open at once (gRPC).
    #[arg(
        long,
        env = "PADLOCK_MAX_STREAMS_PER_CONNECTION",
        default_value_t = crate::server::DEFAULT_MAX_STREAMS_PER_CONNECTION,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub max_streams_per_connection: u32,

    /// Seconds a request may run, answer included, before it is abandoned
    /// with DEADLINE_EXCEEDED / 504.
    #[arg(
        long,
        env = "PADLOCK_REQUEST_TIMEOUT",
        default_value_t = crate::server::DEFAULT_REQUEST_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub request_timeout: u64,

    /// Seconds a package upload or backup download may run.
    #[arg(
        long,
        env = "PADLOCK_STREAM_TIMEOUT",
        default_value_t = crate::server::DEFAULT_STREAM_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub stream_timeout: u64,
}

impl CommonArgs {
    /// The system clock, shifted if `--clock-offset-secs` says so.
    pub fn clock(&self) -> crate::SharedClock {
        match self.clock_offset_secs {
            0 => std::sync::Arc::new(crate::SystemClock),
            offset => {
                tracing::warn!(
                    offset_secs = offset,
                    "the clock is shifted (--clock-offset-secs); for drills and tests only"
                );
                std::sync::Arc::new(crate::OffsetClock::new(offset))
            }
        }
    }

    pub fn listen_or(&self, default: SocketAddr) -> SocketAddr {
        self.listen.unwrap_or(default)
    }

    /// The resource limits the flags ask for; the service names its
    /// streaming methods.
    pub fn limits(&self) -> crate::server::Limits {
        crate::server::Limits {
            max_concurrent_requests: self.max_concurrent_requests,
            max_streams_per_connection: self.max_streams_per_connection,
            request_timeout: std::time::Duration::from_secs(self.request_timeout),
            stream_timeout: std::time::Duration::from_secs(self.stream_timeout),
            streaming_methods: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn limits_default_to_the_documented_values() {
        let cli = Cli::try_parse_from(["svc"]).expect("no flags");
        assert_eq!(cli.common.limits(), crate::server::Limits::default());
        let cli = Cli::try_parse_from([
            "svc",
            "--max-concurrent-requests",
            "8",
            "--max-streams-per-connection",
            "4",
            "--request-timeout",
            "5",
            "--stream-timeout",
            "60",
        ])
        .expect("flags");
        let limits = cli.common.limits();
        assert_eq!(limits.max_concurrent_requests, 8);
        assert_eq!(limits.max_streams_per_connection, 4);
        assert_eq!(limits.request_timeout, std::time::Duration::from_secs(5));
        assert_eq!(limits.stream_timeout, std::time::Duration::from_secs(60));
    }

    #[test]
    fn a_zero_limit_is_refused_naming_the_flag() {
        for flag in [
            "--max-concurrent-requests",
            "--max-streams-per-connection",
            "--request-timeout",
            "--stream-timeout",
        ] {
            let err = Cli::try_parse_from(["svc", flag, "0"]).expect_err(flag);
            assert!(err.to_string().contains(flag), "{err}");
        }
    }
}
