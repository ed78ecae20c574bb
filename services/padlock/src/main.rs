//! `padlock`: the one command that runs the whole system on its embedded
//! default (SQLite). `padlock up` starts `padlock-auth`, `padlock-deploy` and
//! `padlock-gateway` (the web UI) from beside its own executable, seeds a
//! demo on first start, prints one banner, forwards SIGTERM/SIGINT and stops
//! them all when any one dies. It links no service code: it runs their
//! binaries and speaks gRPC to them.

mod banner;
mod children;
mod seed;
mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};

use crate::children::{Service, Services};
use crate::state::DataDir;

#[derive(Debug, Parser)]
#[command(
    name = "padlock",
    version,
    about = "Runs padlock's services and web UI together on SQLite"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Start padlock-auth, padlock-deploy and padlock-gateway; seed a demo on first start.
    Up(UpArgs),
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Everything lives here: `auth/`, `deploy/`, the demo credentials.
    #[arg(long, env = "PADLOCK_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Where padlock-auth listens (port 0 picks a free one).
    #[arg(long, env = "PADLOCK_AUTH_LISTEN", default_value = "127.0.0.1:50051")]
    auth_listen: SocketAddr,
    /// Where padlock-deploy listens (port 0 picks a free one).
    #[arg(long, env = "PADLOCK_DEPLOY_LISTEN", default_value = "127.0.0.1:50052")]
    deploy_listen: SocketAddr,
    /// Where padlock-gateway serves the web UI and its HTTP API (port 0 picks a free one).
    #[arg(long, env = "PADLOCK_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    gateway_listen: SocketAddr,
    /// Do not seed the demo users, app and package.
    #[arg(long)]
    no_seed: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("padlock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A stop request from the outside.
async fn stop_requested(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> Signal {
    tokio::select! {
        _ = term.recv() => Signal::SIGTERM,
        _ = int.recv() => Signal::SIGINT,
    }
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let bin_dir = own_dir()?;
    let auth_bin = sibling(&bin_dir, "padlock-auth")?;
    let deploy_bin = sibling(&bin_dir, "padlock-deploy")?;
    let gateway_bin = sibling(&bin_dir, "padlock-gateway")?;
    let bins = Binaries {
        auth: &auth_bin,
        deploy: &deploy_bin,
        gateway: &gateway_bin,
    };
    let data = DataDir::create(&args.data_dir)?;
    let seeded = data.seeded()?;
    if seeded.is_none() && !args.no_seed && data.has_credentials() {
        anyhow::bail!(
            "an earlier seed of {dir} stopped part-way ({creds} exists, {marker} does not); \
             remove {dir} to seed afresh, or start with --no-seed",
            dir = data.root().display(),
            creds = data.credentials_path().display(),
            marker = data.marker_path().display(),
        );
    }

    // Installed before any child starts, so a stop request is never lost.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let mut services = Services::default();
    let started = tokio::select! {
        r = start_all(&mut services, &bins, &data, &args) => r,
        sig = stop_requested(&mut term, &mut int) => {
            eprintln!("padlock: {sig} received while starting; stopping");
            return Ok(services.stop_all(sig).await);
        }
    };
    let addrs = match started {
        Ok(addrs) => addrs,
        Err(e) => {
            services.stop_all(Signal::SIGTERM).await;
            return Err(e);
        }
    };

    let demo = match seeded {
        Some(demo) => Some(demo),
        None if args.no_seed => None,
        None => {
            eprintln!("padlock: first start: seeding the demo (users ops, tina, dev; app Shop)");
            let tools = seed::Tools {
                auth: &auth_bin,
                deploy: &deploy_bin,
            };
            let seeding = seed::seed(tools, &data, addrs.auth, addrs.deploy);
            let outcome = tokio::select! {
                r = seeding => r,
                sig = stop_requested(&mut term, &mut int) => {
                    eprintln!("padlock: {sig} received while seeding; stopping");
                    return Ok(services.stop_all(sig).await);
                }
                (name, status) = services.first_exit() => {
                    Err(anyhow::anyhow!("{name} exited ({status}) while the demo was seeded"))
                }
            };
            match outcome {
                Ok(demo) => Some(demo),
                Err(e) => {
                    services.stop_all(Signal::SIGTERM).await;
                    return Err(e.context(format!(
                        "the demo in {} is incomplete: remove the directory and start again",
                        data.root().display()
                    )));
                }
            }
        }
    };

    let credentials = match demo {
        Some(_) => data.read_credentials().unwrap_or_else(|e| {
            eprintln!("padlock: {e:#}");
            Vec::new()
        }),
        None => Vec::new(),
    };
    banner::print(&banner::Banner {
        data_dir: data.root(),
        auth_bin: &auth_bin,
        deploy_bin: &deploy_bin,
        auth: addrs.auth,
        deploy: addrs.deploy,
        gateway: addrs.gateway,
        demo: demo.as_ref(),
        credentials: &credentials,
        credentials_path: &data.credentials_path(),
    });

    tokio::select! {
        // A Ctrl-C reaches the services too (one process group): look at
        // the signal first, so their prompt exit is not taken for a crash.
        biased;
        sig = stop_requested(&mut term, &mut int) => {
            eprintln!("padlock: {sig} received; stopping padlock-gateway, padlock-deploy and padlock-auth");
            Ok(services.stop_all(sig).await)
        }
        (name, status) = services.first_exit() => {
            eprintln!("padlock: {name} exited unexpectedly ({status}); stopping the other services");
            services.stop_all(Signal::SIGTERM).await;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The service binaries, found beside `padlock`.
#[derive(Debug)]
struct Binaries<'a> {
    auth: &'a Path,
    deploy: &'a Path,
    gateway: &'a Path,
}

/// Where the services really listen (port 0 resolved).
#[derive(Debug, Clone, Copy)]
struct Addrs {
    auth: SocketAddr,
    deploy: SocketAddr,
    gateway: SocketAddr,
}

/// Auth first: deploy needs its address for the JWKS; the gateway last, as
/// it calls both. Returns the addresses they really listen on.
async fn start_all(
    services: &mut Services,
    bins: &Binaries<'_>,
    data: &DataDir,
    args: &UpArgs,
) -> anyhow::Result<Addrs> {
    let auth = Service::start(
        "padlock-auth",
        bins.auth,
        &[
            "--data-dir".into(),
            data.auth_dir().into_os_string(),
            "--listen".into(),
            args.auth_listen.to_string().into(),
            // The gateway, on this machine, names each browser's address for
            // sign-in throttling; without this every sign-in would count as
            // the gateway's own.
            "--trusted-proxies".into(),
            "127.0.0.1,::1".into(),
        ],
    )
    .await?;
    let auth_addr = auth.addr;
    services.push(auth);
    let deploy = Service::start(
        "padlock-deploy",
        bins.deploy,
        &[
            "--data-dir".into(),
            data.deploy_dir().into_os_string(),
            "--listen".into(),
            args.deploy_listen.to_string().into(),
            "--auth-url".into(),
            format!("http://{auth_addr}").into(),
        ],
    )
    .await?;
    let deploy_addr = deploy.addr;
    services.push(deploy);
    // The gateway keeps no state, so it gets no data directory.
    let gateway = Service::start(
        "padlock-gateway",
        bins.gateway,
        &[
            "--listen".into(),
            args.gateway_listen.to_string().into(),
            "--auth-url".into(),
            format!("http://{auth_addr}").into(),
            "--deploy-url".into(),
            format!("http://{deploy_addr}").into(),
        ],
    )
    .await?;
    let gateway_addr = gateway.addr;
    services.push(gateway);
    Ok(Addrs {
        auth: auth_addr,
        deploy: deploy_addr,
        gateway: gateway_addr,
    })
}

/// The directory `padlock` runs from; the services are built next to it.
fn own_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding padlock's own executable")?;
    exe.parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no parent directory", exe.display()))
}

fn sibling(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        anyhow::bail!(
            "{name} not found next to padlock in {}: build them with cargo build --bins",
            dir.display()
        );
    }
    Ok(path)
}
