//! The database health watcher every service runs beside its gRPC server.
//! A service is stateless apart from its database (docs/design.md "Data"), so
//! when the database does not answer the service cannot serve: every
//! `interval` the watcher pings it, reports `NOT_SERVING` for the service's
//! names and for `""` (the whole server) in `grpc.health.v1.Health` while
//! the ping fails, and `SERVING` again as soon as it answers. Load balancers
//! and Kubernetes probes then route around a replica that lost its database,
//! and it comes back without a restart.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Overrides the ping interval in milliseconds (tests use a short one).
pub const INTERVAL_ENV: &str = "PADLOCK_HEALTH_INTERVAL_MS";

/// How often the database is pinged unless [`INTERVAL_ENV`] says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// A ping that has not answered after this long counts as failed, so a
/// database that hangs (rather than refuses) is noticed too.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The interval [`INTERVAL_ENV`] asks for, or [`DEFAULT_INTERVAL`] when it
/// is unset or not a positive number of milliseconds.
pub fn interval_from_env() -> Duration {
    let value = std::env::var(INTERVAL_ENV).ok();
    let interval = parse_interval(value.as_deref());
    if value.is_some() && interval == DEFAULT_INTERVAL {
        tracing::warn!(
            "{INTERVAL_ENV} is not a positive number of milliseconds; using {} ms",
            DEFAULT_INTERVAL.as_millis()
        );
    }
    interval
}

fn parse_interval(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map_or(DEFAULT_INTERVAL, Duration::from_millis)
}

/// The running watcher; dropping it stops it.
#[derive(Debug)]
pub struct DatabaseWatcher(JoinHandle<()>);

impl Drop for DatabaseWatcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts pinging the database with `ping` (true when it answers) every
/// `interval`, reporting the outcome for each of `services` and for `""`.
/// The first ping runs at once; statuses change only when the outcome does.
pub fn watch_database<P, F>(
    reporter: HealthReporter,
    services: Vec<&'static str>,
    interval: Duration,
    ping: P,
) -> DatabaseWatcher
where
    P: Fn() -> F + Send + 'static,
    F: Future<Output = bool> + Send,
{
    spawn_watcher(reporter, services, interval, PING_TIMEOUT, ping)
}

fn spawn_watcher<P, F>(
    reporter: HealthReporter,
    services: Vec<&'static str>,
    interval: Duration,
    ping_timeout: Duration,
    ping: P,
) -> DatabaseWatcher
where
    P: Fn() -> F + Send + 'static,
    F: Future<Output = bool> + Send,
{
    DatabaseWatcher(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        // A slow ping (a database that refuses takes the pool's acquire
        // timeout to fail) delays the next one instead of bunching them up.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last: Option<bool> = None;
        loop {
            ticks.tick().await;
            let up = tokio::time::timeout(ping_timeout, ping())
                .await
                .unwrap_or(false);
            if last == Some(up) {
                continue;
            }
            match (last, up) {
                (_, false) => {
                    tracing::warn!("the database does not answer: reporting NOT_SERVING");
                }
                (Some(false), true) => {
                    tracing::info!("the database answers again: reporting SERVING");
                }
                (_, true) => {}
            }
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for name in services.iter().copied().chain([""]) {
                reporter.set_service_status(name, status).await;
            }
            last = Some(up);
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_server::Health;
    use tonic_health::server::HealthService;

    use super::*;

    #[test]
    fn interval_parses_positive_milliseconds_and_falls_back_otherwise() {
        assert_eq!(parse_interval(Some("250")), Duration::from_millis(250));
        assert_eq!(parse_interval(Some(" 40 ")), Duration::from_millis(40));
        assert_eq!(parse_interval(None), DEFAULT_INTERVAL);
        assert_eq!(parse_interval(Some("0")), DEFAULT_INTERVAL);
        assert_eq!(parse_interval(Some("-5")), DEFAULT_INTERVAL);
        assert_eq!(parse_interval(Some("1s")), DEFAULT_INTERVAL);
    }

    async fn status(health: &HealthService, name: &str) -> Wire {
        let response = health
            .check(tonic::Request::new(HealthCheckRequest {
                service: name.to_owned(),
            }))
            .await
            .expect("a known service name");
        Wire::try_from(response.into_inner().status).expect("a known status")
    }

    /// Polls until every name reports `want`, for at most five seconds.
    async fn wait_for(health: &HealthService, names: &[&str], want: Wire) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut all = true;
            for name in names {
                all &= status(health, name).await == want;
            }
            if all {
                return;
            }
            assert!(Instant::now() < deadline, "health never became {want:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn reports_the_database_state_for_every_name_and_the_server() {
        let (reporter, _server) = tonic_health::server::health_reporter();
        let health = HealthService::from_health_reporter(reporter.clone());
        let names = ["padlock.test.v1.One", "padlock.test.v1.Two"];
        for name in names {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let all = ["padlock.test.v1.One", "padlock.test.v1.Two", ""];
        let up = Arc::new(AtomicBool::new(true));
        let pinged = up.clone();
        let watcher = watch_database(
            reporter.clone(),
            names.to_vec(),
            Duration::from_millis(10),
            move || {
                let up = pinged.load(Ordering::SeqCst);
                async move { up }
            },
        );
        wait_for(&health, &all, Wire::Serving).await;

        up.store(false, Ordering::SeqCst);
        wait_for(&health, &all, Wire::NotServing).await;

        up.store(true, Ordering::SeqCst);
        wait_for(&health, &all, Wire::Serving).await;

        // Stopped with its owner: later pings change nothing.
        drop(watcher);
        up.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        for name in all {
            assert_eq!(status(&health, name).await, Wire::Serving);
        }
    }

    #[tokio::test]
    async fn a_ping_that_hangs_counts_as_down() {
        let (reporter, _server) = tonic_health::server::health_reporter();
        let health = HealthService::from_health_reporter(reporter.clone());
        let _watcher = spawn_watcher(
            reporter,
            vec![],
            Duration::from_millis(10),
            Duration::from_millis(20),
            std::future::pending::<bool>,
        );
        wait_for(&health, &[""], Wire::NotServing).await;
    }
}
