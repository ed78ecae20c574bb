//! `padlock-auth`: serve gRPC, or run an operator command.

use std::io::BufRead;
use std::sync::Arc;

use clap::Parser;
use padlock_auth::config::{Cli, Command, DataKeysCommand, KeysCommand, Settings, UsersCommand};
use padlock_auth::sealing::DataKeySource;
use padlock_auth::{KeySource, Options};
use padlock_runtime::{SystemClock, server, telemetry};

const SERVICE: &str = "padlock-auth";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let telemetry = match telemetry::start(SERVICE, cli.common.log_format) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{SERVICE}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = run(cli).await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{SERVICE}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::from_args(&cli.auth).map_err(anyhow::Error::msg)?;
    let signing_keys = cli
        .auth
        .signing_key_file
        .clone()
        .map(|current| KeySource::Files {
            current,
            previous: cli.auth.previous_signing_key_file.clone(),
        });
    let options = Options {
        data_dir: cli.common.data_dir.clone(),
        database_url: cli.common.database_url.clone(),
        settings,
        signing_keys,
        data_keys: data_key_source(&cli.auth),
        sms: sms_sender(&cli.auth.sms)?,
    };
    let checkpoints = padlock_auth::checkpoint_config(&options, &cli.checkpoints);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            serve(
                cli.common.listen_or(default_listen()),
                options,
                cli.common.clock(),
                cli.common.limits(),
                checkpoints,
            )
            .await
        }
        Command::Users(UsersCommand::Add { username, roles }) => {
            add_user(options, username, roles).await
        }
        Command::Users(UsersCommand::Import(args)) => {
            padlock_auth::import::run(&options, args, cli.common.clock()).await
        }
        Command::Keys(KeysCommand::Rotate) => rotate_keys(&options),
        Command::DataKeys(command) => data_keys(&options, command).await,
        Command::Migrate => padlock_auth::migrate(&options).await,
        Command::Audit(command) => padlock_auth::audit(&options, &checkpoints, command).await,
    }
}

/// The SMS sender the flags ask for: Twilio, the development log (only when
/// explicitly enabled), or none (SMS enrollment then refuses).
fn sms_sender(
    args: &padlock_auth::config::SmsArgs,
) -> anyhow::Result<Option<Arc<dyn padlock_auth::sms::SmsSender>>> {
    if args.sms_dev_log {
        if args.twilio_account_sid.is_some() {
            anyhow::bail!("--sms-dev-log and --twilio-account-sid exclude each other");
        }
        tracing::warn!("SMS codes go to the log (--sms-dev-log): development only");
        return Ok(Some(Arc::new(padlock_auth::sms::log::LogSender)));
    }
    let Some(sid) = &args.twilio_account_sid else {
        tracing::info!(
            "no SMS sender configured (--twilio-account-sid): SMS enrollment is refused"
        );
        return Ok(None);
    };
    use padlock_auth::sms::twilio::{Sender, TwilioConfig, TwilioSender};
    let token = args.twilio_auth_token.clone().ok_or_else(|| {
        anyhow::anyhow!("--twilio-auth-token is required with --twilio-account-sid")
    })?;
    let from = match (&args.twilio_from, &args.twilio_messaging_service_sid) {
        (Some(from), None) => Sender::From(from.clone()),
        (None, Some(service)) => Sender::MessagingService(service.clone()),
        _ => anyhow::bail!("give exactly one of --twilio-from and --twilio-messaging-service-sid"),
    };
    let mut config = TwilioConfig::new(sid.clone(), token, from);
    config.base_url = args.twilio_base_url.clone();
    let sender =
        TwilioSender::new(config).map_err(|e| anyhow::anyhow!("Twilio configuration: {e}"))?;
    Ok(Some(Arc::new(sender)))
}

fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 50051))
}

async fn serve(
    listen: std::net::SocketAddr,
    options: Options,
    clock: padlock_runtime::SharedClock,
    limits: server::Limits,
    checkpoints: padlock_runtime::checkpoint::CheckpointConfig,
) -> anyhow::Result<()> {
    let app = padlock_auth::open(options.clone(), clock.clone()).await?;
    let checkpointing =
        padlock_auth::start_audit_checkpoints(&options, &checkpoints, clock).await?;
    let listener = server::bind(listen).await?;
    let addr = listener.local_addr()?;
    spawn_key_reloader(app.clone(), checkpoints)?;
    let shutdown = server::shutdown_signal();
    server::announce(SERVICE, addr);
    let served = padlock_auth::serve(app, listener, &limits, shutdown).await;
    // After the drain, so it sees every record the requests appended.
    let _ = checkpointing.finish().await;
    served
}

/// SIGHUP re-reads the data keys and the signing keys, so a rotation of
/// either needs no restart, and seals the audit checkpoint key under the
/// current data key. The handler is installed before the service says it
/// is ready.
fn spawn_key_reloader(
    app: padlock_auth::App,
    checkpoints: padlock_runtime::checkpoint::CheckpointConfig,
) -> anyhow::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if let Err(e) = app.reload_keys() {
                tracing::error!(error = %e, "reloading keys failed; keeping the old ones");
            } else if let Err(e) = padlock_runtime::checkpoint::reseal_key(&checkpoints) {
                tracing::error!(error = %e, "sealing the audit checkpoint key again failed");
            }
        }
    });
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn add_user(options: Options, username: String, roles: Vec<String>) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    let app = padlock_auth::open(options, Arc::new(SystemClock)).await?;
    let user = padlock_auth::grpc::support::create_user(
        app.store(),
        app.hasher(),
        app.now(),
        None,
        None,
        &username,
        password,
        roles,
    )
    .await
    .map_err(|e| match e {
        padlock_auth::error::AuthError::Invalid(fields) => anyhow::anyhow!(
            "invalid: {}",
            fields
                .iter()
                .map(|(f, d)| format!("{f}: {d}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => anyhow::anyhow!("{other}"),
    })?;
    println!(
        "created user {} (id {}, roles: {})",
        user.username,
        user.id,
        user.roles.join(",")
    );
    Ok(())
}

#[allow(clippy::print_stdout)]
fn rotate_keys(options: &Options) -> anyhow::Result<()> {
    let dir = options.data_dir.join("keys");
    let data_keys = options.data_key_source().load()?;
    let format = padlock_auth::key_files::SealedKeyFiles::new(
        &data_keys,
        padlock_auth::key_files::Upgrade::Clear,
    );
    let ring = padlock_token::KeyRing::rotate(&dir, &format)?;
    println!(
        "new signing key {} in {}; send SIGHUP to running padlock-auth processes to load it",
        ring.current.kid(),
        dir.display()
    );
    Ok(())
}

/// `--data-keys`, else `--data-keys-file`, else the generated default.
fn data_key_source(args: &padlock_auth::config::AuthArgs) -> Option<DataKeySource> {
    match (&args.data_keys, &args.data_keys_file) {
        (Some(spec), _) => Some(DataKeySource::Spec(spec.clone())),
        (None, Some(path)) => Some(DataKeySource::File(path.clone())),
        (None, None) => None,
    }
}

#[allow(clippy::print_stdout)]
async fn data_keys(options: &Options, command: DataKeysCommand) -> anyhow::Result<()> {
    match command {
        DataKeysCommand::Status => {
            let now = padlock_runtime::Clock::unix(&SystemClock);
            print!("{}", padlock_auth::data_keys::status(options, now).await?);
        }
        DataKeysCommand::Rotate { id } => {
            let keys = options.data_key_source().add_key(id.as_deref())?;
            println!(
                "new current data key {} (then {}); send SIGHUP to running padlock-auth \
                 processes to load it, then run `padlock-auth data-keys reseal`",
                keys.current_key_id(),
                keys.key_ids().skip(1).collect::<Vec<_>>().join(", ")
            );
        }
        DataKeysCommand::Reseal { batch } => {
            let report = padlock_auth::data_keys::reseal(options, batch).await?;
            print!("{report}");
            if !report.is_complete() {
                anyhow::bail!("some secrets or key files could not be resealed (see above)");
            }
        }
    }
    Ok(())
}
