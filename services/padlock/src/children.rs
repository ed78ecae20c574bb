//! The service processes: start one and wait for its ready line on standard
//! output, notice when one exits, and stop them with a forwarded signal.
//! Their standard error (the logs) is passed straight through.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a service may take to print its ready line. docs/design.md aims for
/// 0.3 s on SQLite; a first start on a slow disk or a cold cache takes longer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a service may drain in-flight requests after the stop signal
/// before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// One running service.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
}

impl Service {
    /// Runs `binary args...` and waits until it prints
    /// `<name>: listening on ADDR`; the address is the one it really bound
    /// (port 0 is resolved).
    pub async fn start(
        name: &'static str,
        binary: &Path,
        args: &[OsString],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args(args)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Only a safety net for early returns; a normal stop signals and waits.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, ready_line(name, &mut lines)).await;
        let addr = match ready {
            Ok(Ok(Some(addr))) => addr,
            Ok(Ok(None)) => {
                let status = child.wait().await?;
                anyhow::bail!("{name} exited ({status}) before it was ready; its log is above");
            }
            Ok(Err(e)) => {
                return Err(anyhow::Error::new(e).context(format!("reading {name}'s output")));
            }
            Err(_) => anyhow::bail!(
                "{name} did not say it was ready within {} s",
                READY_TIMEOUT.as_secs()
            ),
        };
        // Keep reading, so the service never blocks on a full pipe.
        tokio::spawn(forward_rest(lines));
        Ok(Self { name, addr, child })
    }

    fn signal(&self, sig: Signal) {
        // `id()` is None once the child was reaped, so a reused pid is never hit.
        let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) else {
            return;
        };
        if let Err(e) = kill(Pid::from_raw(pid), sig) {
            eprintln!("padlock: sending {sig} to {}: {e}", self.name);
        }
    }

    /// Sends `sig` and waits; kills the service if it does not stop in time.
    async fn stop(&mut self, sig: Signal) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.signal(sig);
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                eprintln!(
                    "padlock: {} did not stop within {} s; killing it",
                    self.name,
                    STOP_TIMEOUT.as_secs()
                );
                self.child.kill().await?;
                self.child.wait().await
            }
        }
    }
}

/// Reads lines until the ready line; others go to standard error.
async fn ready_line(
    name: &str,
    lines: &mut Lines<BufReader<ChildStdout>>,
) -> std::io::Result<Option<SocketAddr>> {
    let prefix = format!("{name}: listening on ");
    while let Some(line) = lines.next_line().await? {
        if let Some(addr) = line
            .strip_prefix(&prefix)
            .and_then(|a| a.trim().parse().ok())
        {
            return Ok(Some(addr));
        }
        eprintln!("{line}");
    }
    Ok(None)
}

async fn forward_rest(mut lines: Lines<BufReader<ChildStdout>>) {
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{line}");
    }
}

/// The services in start order.
#[derive(Debug, Default)]
pub struct Services(Vec<Service>);

impl Services {
    pub fn push(&mut self, service: Service) {
        self.0.push(service);
    }

    /// Resolves when the first service exits, with its name and status.
    pub async fn first_exit(&mut self) -> (&'static str, String) {
        let waits: Vec<_> = self
            .0
            .iter_mut()
            .map(|s| {
                Box::pin(async move {
                    let status = match s.child.wait().await {
                        Ok(status) => status.to_string(),
                        Err(e) => format!("wait failed: {e}"),
                    };
                    (s.name, status)
                })
            })
            .collect();
        if waits.is_empty() {
            return std::future::pending().await;
        }
        futures::future::select_all(waits).await.0
    }

    /// Stops every service, last started first (deploy before the auth it
    /// calls), and says how that went as an exit code.
    pub async fn stop_all(&mut self, sig: Signal) -> ExitCode {
        let mut clean = true;
        for service in self.0.iter_mut().rev() {
            match service.stop(sig).await {
                Ok(status) if status.success() => {}
                Ok(status) => {
                    eprintln!("padlock: {} stopped with {status}", service.name);
                    clean = false;
                }
                Err(e) => {
                    eprintln!("padlock: waiting for {}: {e}", service.name);
                    clean = false;
                }
            }
        }
        if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}
