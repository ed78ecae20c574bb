//! The flags every service binary shares (DESIGN.md "Ports and command
//! lines"), each with its `PADLOCK_*` environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;

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
}
