//! What a run found, as a table for people and as JSON for files.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::load::Measurement;

/// One whole run of a subcommand.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub scenario: String,
    /// Unix seconds when the run started.
    pub started_at: u64,
    /// Logical CPUs this tool saw (it shares them with the services when
    /// they run on the same machine).
    pub cpus: usize,
    pub concurrency: usize,
    pub connections: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Users the setup provisioned, and how long that took (argon2id bound).
    pub setup_users: usize,
    pub setup_s: f64,
    pub phases: Vec<Phase>,
    pub notes: Vec<String>,
}

/// One measured phase: a workload against one server.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub server: String,
    /// `grpc.health.v1.Health/Check` for the floor.
    pub rpc: String,
    pub floor: bool,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub requests_per_s: f64,
    pub latency_ms: Latency,
    /// This phase's requests/s over the floor's on the same server in the
    /// same run.
    pub ratio_to_floor: Option<f64>,
    /// Time workers spent with nothing to send (e.g. out of unused codes).
    pub waited_s: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Phase {
    pub fn new(name: &str, server: &str, rpc: &str, floor: bool, m: &Measurement) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let h = &m.latency;
        let latency = if h.is_empty() {
            Latency {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                max: 0.0,
                mean: 0.0,
            }
        } else {
            Latency {
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                max: ms(h.max()),
                mean: h.mean() / 1000.0,
            }
        };
        Self {
            name: name.to_owned(),
            server: server.to_owned(),
            rpc: rpc.to_owned(),
            floor,
            ok: m.ok,
            errors: m.errors.clone(),
            requests_per_s: m.throughput(),
            latency_ms: latency,
            ratio_to_floor: None,
            waited_s: m.waited.as_secs_f64(),
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl Report {
    /// Fills in each phase's ratio to the floor measured on its server.
    pub fn compute_ratios(&mut self) {
        let floors: BTreeMap<String, f64> = self
            .phases
            .iter()
            .filter(|p| p.floor)
            .map(|p| (p.server.clone(), p.requests_per_s))
            .collect();
        for phase in &mut self.phases {
            phase.ratio_to_floor = floors
                .get(&phase.server)
                .filter(|f| **f > 0.0)
                .map(|f| phase.requests_per_s / f);
        }
    }

    /// Whether every phase answered something and nothing failed.
    pub fn clean(&self) -> bool {
        self.phases.iter().all(|p| p.ok > 0 && p.error_count() == 0)
    }

    /// The table: one line per phase, then failures, setup time and notes.
    pub fn write_table(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "{} {}: {} concurrent over {} connection(s), {:.1} s measured after {:.1} s warm-up, {} CPUs",
            self.tool,
            self.scenario,
            self.concurrency,
            self.connections,
            self.duration_s,
            self.warmup_s,
            self.cpus
        )?;
        if self.setup_users > 0 || self.setup_s > 0.0 {
            writeln!(
                out,
                "setup: {} users in {:.1} s (not measured below)",
                self.setup_users, self.setup_s
            )?;
        }
        let width = self
            .phases
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            out,
            "{:<width$}  {:>10}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
            "phase", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "ok", "errors", "vs floor"
        )?;
        for p in &self.phases {
            let ratio = p
                .ratio_to_floor
                .map_or_else(|| "-".to_owned(), |r| format!("{:.2}", r));
            writeln!(
                out,
                "{:<width$}  {:>10.1}  {:>8.2}  {:>8.2}  {:>8.2}  {:>8.2}  {:>8}  {:>8}  {:>8}",
                p.name,
                p.requests_per_s,
                p.latency_ms.p50,
                p.latency_ms.p90,
                p.latency_ms.p99,
                p.latency_ms.max,
                p.ok,
                p.error_count(),
                ratio
            )?;
        }
        for p in self.phases.iter().filter(|p| !p.errors.is_empty()) {
            for (key, n) in &p.errors {
                writeln!(out, "  {}: {n} x {key}", p.name)?;
            }
        }
        for note in &self.notes {
            writeln!(out, "note: {note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn measurement(ok: u64, errors: &[(&str, u64)]) -> Measurement {
        let mut latency = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for i in 1..=100u64 {
            latency.record(i * 100).unwrap();
        }
        Measurement {
            ok,
            errors: errors.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
            latency,
            elapsed: Duration::from_secs(2),
            waited: Duration::ZERO,
        }
    }

    fn report(phases: Vec<Phase>) -> Report {
        Report {
            tool: "padlock-bench".into(),
            scenario: "check-access".into(),
            started_at: 0,
            cpus: 2,
            concurrency: 64,
            connections: 4,
            warmup_s: 1.0,
            duration_s: 2.0,
            setup_users: 1000,
            setup_s: 12.5,
            phases,
            notes: vec!["a note".into()],
        }
    }

    #[test]
    fn ratios_are_to_the_floor_on_the_same_server() {
        let mut r = report(vec![
            Phase::new("floor", "a:1", "health", true, &measurement(1000, &[])),
            Phase::new("check", "a:1", "check", false, &measurement(600, &[])),
            Phase::new("elsewhere", "b:2", "check", false, &measurement(10, &[])),
        ]);
        r.compute_ratios();
        assert_eq!(r.phases[0].ratio_to_floor, Some(1.0));
        assert_eq!(r.phases[1].ratio_to_floor, Some(0.6));
        assert_eq!(r.phases[2].ratio_to_floor, None);
        assert_eq!(r.phases[1].requests_per_s, 300.0);
        // HdrHistogram keeps three significant digits.
        assert!((r.phases[1].latency_ms.p50 - 5.0).abs() < 0.01);
        assert!((r.phases[1].latency_ms.max - 10.0).abs() < 0.01);
        assert!(r.clean());
    }

    #[test]
    fn errors_or_an_empty_phase_make_the_run_unclean_and_show_in_the_table() {
        let r = report(vec![
            Phase::new("floor", "a:1", "health", true, &measurement(1000, &[])),
            Phase::new(
                "check",
                "a:1",
                "check",
                false,
                &measurement(5, &[("UNAUTHENTICATED/TOKEN_INVALID", 3)]),
            ),
        ]);
        assert!(!r.clean());
        let mut out = Vec::new();
        r.write_table(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("check: 3 x UNAUTHENTICATED/TOKEN_INVALID"),
            "{text}"
        );
        assert!(text.contains("setup: 1000 users in 12.5 s"), "{text}");
        assert!(text.contains("note: a note"), "{text}");
        let empty = report(vec![Phase::new(
            "floor",
            "a:1",
            "h",
            true,
            &measurement(0, &[]),
        )]);
        assert!(!empty.clean());
    }

    #[test]
    fn json_has_the_figures() {
        let r = report(vec![Phase::new(
            "floor",
            "a:1",
            "h",
            true,
            &measurement(10, &[]),
        )]);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["phases"][0]["ok"], 10);
        let p99 = json["phases"][0]["latency_ms"]["p99"].as_f64().unwrap();
        assert!((p99 - 9.9).abs() < 0.01, "{p99}");
        assert_eq!(json["setup_users"], 1000);
    }
}
