//! The load engine: `concurrency` workers, each with one request in flight,
//! spread over a few HTTP/2 connections, for a fixed time; optionally paced
//! to a fixed rate of request starts. Latencies go into
//! an HdrHistogram per worker (microseconds, three significant digits),
//! merged at the end; failures are counted by gRPC status and reason.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::transport::Channel;

/// The largest latency a histogram holds: an hour, in microseconds.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;
/// HdrHistogram precision: three significant digits (0.1 %).
const SIGNIFICANT_DIGITS: u8 = 3;

/// What one attempt of a workload did.
#[derive(Debug)]
pub enum Attempt {
    /// A request went out and got this answer; `Err` is the failure's key
    /// (e.g. `UNAUTHENTICATED/MFA_REQUIRED`, or `unexpected: ...`).
    Done(Result<(), String>),
    /// No request could be made now (e.g. no unused TOTP code left); wait
    /// this long. Not counted as a request.
    Wait(Duration),
}

/// One kind of request, made over and over.
pub trait Workload: Send + Sync + 'static {
    /// What a worker keeps between requests (a generated gRPC client).
    type Client: Send + 'static;

    fn client(&self, channel: Channel) -> Self::Client;

    fn call(&self, client: &mut Self::Client) -> impl Future<Output = Attempt> + Send;
}

/// How hard and how long to push.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    pub concurrency: usize,
    /// Requests started in this time after the start are not counted.
    pub warmup: Duration,
    pub duration: Duration,
    /// Requests started per second across all workers; `None`: no pause
    /// between one answer and the next request.
    pub rate: Option<u32>,
}

/// Hands out evenly spaced start times, one per request, across workers.
/// A worker that falls behind sends at once: the rate is a ceiling the
/// concurrency may keep the run under.
struct Pacer {
    start: Instant,
    rate: f64,
    issued: std::sync::atomic::AtomicU64,
}

impl Pacer {
    fn next_start(&self) -> Instant {
        let n = self
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.start + Duration::from_secs_f64(n as f64 / self.rate)
    }
}

/// What a measured phase saw.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Requests that started in the measured window and got an answer the
    /// workload accepted.
    pub ok: u64,
    /// Failed requests by key.
    pub errors: BTreeMap<String, u64>,
    /// Latency of every counted request (ok or failed), in microseconds.
    pub latency: Histogram<u64>,
    /// The measured window.
    pub elapsed: Duration,
    /// Total time workers spent waiting because the workload had nothing to
    /// send (see [`Attempt::Wait`]).
    pub waited: Duration,
}

impl Measurement {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful requests per second of the measured window.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }
}

fn histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 *
    // low, digits <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, SIGNIFICANT_DIGITS)
        .unwrap_or_else(|_| unreachable!())
}

struct WorkerResult {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    waited: Duration,
}

/// Runs `workload` with `shape.concurrency` workers over `channels` (worker
/// `i` uses channel `i % channels.len()`) for the warm-up plus the duration.
pub async fn run<W: Workload>(
    workload: Arc<W>,
    channels: &[Channel],
    shape: LoadShape,
) -> anyhow::Result<Measurement> {
    anyhow::ensure!(!channels.is_empty(), "no connection to send on");
    let start = Instant::now();
    let measure_from = start + shape.warmup;
    let end = measure_from + shape.duration;
    let pacer = shape.rate.map(|rate| {
        Arc::new(Pacer {
            start,
            rate: f64::from(rate),
            issued: 0.into(),
        })
    });
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..shape.concurrency.max(1) {
        let workload = workload.clone();
        let channel = channels[i % channels.len()].clone();
        let pacer = pacer.clone();
        workers.spawn(async move {
            let mut client = workload.client(channel);
            let mut result = WorkerResult {
                ok: 0,
                errors: BTreeMap::new(),
                latency: histogram(),
                waited: Duration::ZERO,
            };
            loop {
                if let Some(pacer) = &pacer {
                    let at = pacer.next_start();
                    if at >= end {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                match workload.call(&mut client).await {
                    Attempt::Wait(pause) => {
                        let pause = pause.min(end.saturating_duration_since(Instant::now()));
                        tokio::time::sleep(pause).await;
                        result.waited += pause;
                    }
                    Attempt::Done(outcome) => {
                        if sent < measure_from {
                            continue;
                        }
                        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        result.latency.saturating_record(micros.max(1));
                        match outcome {
                            Ok(()) => result.ok += 1,
                            Err(key) => *result.errors.entry(key).or_default() += 1,
                        }
                    }
                }
            }
            result
        });
    }
    let mut total = Measurement {
        ok: 0,
        errors: BTreeMap::new(),
        latency: histogram(),
        elapsed: shape.duration,
        waited: Duration::ZERO,
    };
    while let Some(worker) = workers.join_next().await {
        let worker = worker?;
        total.ok += worker.ok;
        for (key, n) in worker.errors {
            *total.errors.entry(key).or_default() += n;
        }
        total
            .latency
            .add(&worker.latency)
            .map_err(|e| anyhow::anyhow!("merging latency histograms: {e:?}"))?;
        total.waited += worker.waited;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Fails every third call, answers after a millisecond.
    #[derive(Default)]
    struct Every3rdFails(AtomicU64);

    impl Workload for Every3rdFails {
        type Client = ();
        fn client(&self, _channel: Channel) {}
        async fn call(&self, _client: &mut ()) -> Attempt {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            Attempt::Done(if n % 3 == 2 {
                Err("UNAVAILABLE".into())
            } else {
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn counts_successes_failures_and_latencies_in_the_window() {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let shape = LoadShape {
            concurrency: 4,
            warmup: Duration::from_millis(20),
            duration: Duration::from_millis(200),
            rate: None,
        };
        let m = run(Arc::new(Every3rdFails::default()), &[channel], shape)
            .await
            .unwrap();
        let failed = m.errors.get("UNAVAILABLE").copied().unwrap_or(0);
        assert!(m.ok > 10, "{m:?}");
        assert!(failed > 5 && failed < m.ok, "{m:?}");
        assert_eq!(m.latency.len(), m.ok + failed);
        assert!(m.latency.value_at_quantile(0.5) >= 1000, "at least 1 ms");
        assert_eq!(m.elapsed, shape.duration);
        assert!(m.throughput() > 0.0);
    }

    /// Always succeeds at once.
    struct Instant0;

    impl Workload for Instant0 {
        type Client = ();
        fn client(&self, _channel: Channel) {}
        async fn call(&self, _client: &mut ()) -> Attempt {
            Attempt::Done(Ok(()))
        }
    }

    #[test]
    fn the_pacer_spaces_start_times_evenly() {
        let start = Instant::now();
        let pacer = Pacer {
            start,
            rate: 50.0,
            issued: 0.into(),
        };
        let offsets: Vec<Duration> = (0..4).map(|_| pacer.next_start() - start).collect();
        let ms = Duration::from_millis;
        assert_eq!(offsets, [ms(0), ms(20), ms(40), ms(60)]);
    }

    #[tokio::test]
    async fn a_rate_caps_the_requests_started_whatever_the_concurrency() {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let shape = LoadShape {
            concurrency: 8,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(200),
            rate: Some(50),
        };
        let m = run(Arc::new(Instant0), &[channel], shape).await.unwrap();
        // Unpaced, eight workers answering at once would make thousands.
        assert!(m.ok <= 10, "{m:?}");
    }
}
