//! The baseline judge on simulated traffic: how often it rolls back identical versions (per
//! rollout, not per check), and how many checks it needs to catch a real regression, beside the
//! fixed-threshold judge on the same data. Prints figures; asserts nothing.
//!
//!   cargo bench -p steerer-server --bench baseline_judge [-- ROLLOUTS]
//!
//! Each simulated rollout has 10 checks over 60 s windows; each side (canary, baseline) serves
//! RATE requests per second, each failing with probability p and lasting a log-normal time
//! (median 50 ms, σ = 0.5 on the log scale), counted into Istio's default latency buckets.
//! Settings are the judge's defaults: confidence 0.99, +0.5 points of errors and +20% of latency
//! tolerated, 200 requests per side and check. The baseline fails 0.5% of its requests. The
//! fixed-threshold judge is the server's default success-rate threshold (99%) and a p99 ceiling
//! 50% above the baseline's true p99, applied to the canary's window alone.
//!
//! The baseline judge is run two ways: on each check's window alone, and on everything since the
//! analysis started (the counts and buckets of every window so far added up), which is what the
//! engine does.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use steerer_server::stats::baseline::{self, Settings, Side, Verdict};
use steerer_server::stats::ranks::Histogram;

const CHECKS: u32 = 10;
const WINDOW_SECS: f64 = 60.0;
const MEDIAN_MS: f64 = 50.0;
const SIGMA: f64 = 0.5;
/// Istio's default request-duration buckets, in milliseconds.
const BUCKETS: [f64; 19] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// One version's behaviour.
#[derive(Clone, Copy)]
struct Version {
    error_rate: f64,
    /// Every request's duration multiplied by this.
    slowdown: f64,
    /// The log-scale spread multiplied by this.
    spread: f64,
}

const SAME: Version = Version {
    error_rate: 0.005,
    slowdown: 1.0,
    spread: 1.0,
};

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// What one side serves in one window, and its observed p99 (for the fixed judge).
fn serve(rng: &mut StdRng, rate: f64, v: Version) -> (Side, f64) {
    let requests = (rate * WINDOW_SECS) as u64;
    let mut failures = 0;
    let mut counts = [0u64; BUCKETS.len() + 1];
    let mut durations = Vec::with_capacity(requests as usize);
    for _ in 0..requests {
        if rng.random::<f64>() < v.error_rate {
            failures += 1;
        }
        let ms = MEDIAN_MS * v.slowdown * (SIGMA * v.spread * normal(rng)).exp();
        durations.push(ms);
        let bucket = BUCKETS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BUCKETS.len());
        counts[bucket] += 1;
    }
    durations.sort_by(f64::total_cmp);
    let p99 = durations
        .get((durations.len() as f64 * 0.99) as usize)
        .copied()
        .unwrap_or(0.0);
    let mut cumulative = 0.0;
    let buckets = BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(counts)
        .map(|(le, c)| {
            cumulative += c as f64;
            (le, cumulative)
        })
        .collect();
    let latency = Histogram::from_cumulative(buckets).ok();
    (
        Side {
            requests,
            failures,
            latency,
        },
        p99,
    )
}

/// The first check (1-based) at which a judge failed a rollout, if any.
#[derive(Default)]
struct Firsts {
    windowed: Option<u32>,
    cumulative: Option<u32>,
    fixed: Option<u32>,
}

/// A side's windows so far, added up.
fn accumulate(total: &mut Option<Side>, window: &Side) {
    *total = Some(match total.take() {
        None => window.clone(),
        Some(t) => Side {
            requests: t.requests + window.requests,
            failures: t.failures + window.failures,
            latency: t
                .latency
                .zip(window.latency.as_ref())
                .and_then(|(a, b)| a.add(b)),
        },
    });
}

/// One look of the baseline judge, counted only when it had data.
fn look(first: &mut Option<u32>, looks: &mut u32, check: u32, canary: &Side, baseline: &Side) {
    if first.is_some() {
        return;
    }
    if let Verdict::Judged { failed, .. } =
        baseline::judge(canary, baseline, &Settings::default(), *looks + 1)
    {
        *looks += 1;
        if failed {
            *first = Some(check);
        }
    }
}

fn rollout(rng: &mut StdRng, rate: f64, canary: Version) -> Firsts {
    let true_p99 = MEDIAN_MS * (SIGMA * 2.326_347_874).exp();
    let mut firsts = Firsts::default();
    let (mut windowed_looks, mut cumulative_looks) = (0, 0);
    let (mut canary_total, mut baseline_total) = (None, None);
    for check in 1..=CHECKS {
        let (c, c_p99) = serve(rng, rate, canary);
        let (b, _) = serve(rng, rate, SAME);
        if firsts.fixed.is_none() {
            let success = 100.0 * (1.0 - c.failures as f64 / c.requests.max(1) as f64);
            if success < 99.0 || c_p99 > true_p99 * 1.5 {
                firsts.fixed = Some(check);
            }
        }
        look(&mut firsts.windowed, &mut windowed_looks, check, &c, &b);
        accumulate(&mut canary_total, &c);
        accumulate(&mut baseline_total, &b);
        if let (Some(c), Some(b)) = (&canary_total, &baseline_total) {
            look(&mut firsts.cumulative, &mut cumulative_looks, check, c, b);
        }
    }
    firsts
}

/// Share of rollouts failed, and the median first failing check of those failed.
fn summary(firsts: &[Option<u32>]) -> String {
    let mut failed: Vec<u32> = firsts.iter().flatten().copied().collect();
    failed.sort_unstable();
    let share = failed.len() as f64 / firsts.len() as f64;
    match failed.get(failed.len() / 2) {
        Some(median) => format!(
            "{:6.2}% rolled back, median at check {median}",
            share * 100.0
        ),
        None => format!("{:6.2}% rolled back", share * 100.0),
    }
}

fn run(label: &str, rollouts: usize, rate: f64, canary: Version, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let all: Vec<Firsts> = (0..rollouts)
        .map(|_| rollout(&mut rng, rate, canary))
        .collect();
    let column =
        |pick: fn(&Firsts) -> Option<u32>| summary(&all.iter().map(pick).collect::<Vec<_>>());
    println!("{label} at {rate} req/s per side");
    println!(
        "    baseline judge, since the start: {}",
        column(|f| f.cumulative)
    );
    println!(
        "    baseline judge, each window:     {}",
        column(|f| f.windowed)
    );
    println!(
        "    fixed thresholds:                {}",
        column(|f| f.fixed)
    );
}

fn main() {
    let rollouts: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    println!(
        "{rollouts} rollouts of {CHECKS} checks each, {WINDOW_SECS} s windows, confidence 0.99"
    );
    println!("identical versions (0.5% errors both; target: at most 1.00% rolled back)");
    for (i, rate) in [5.0, 50.0, 500.0].into_iter().enumerate() {
        run("same version", rollouts, rate, SAME, 1 + i as u64);
    }
    println!("regressions at 50 req/s");
    let cases = [
        (
            "  errors +1 point (1.5% vs 0.5%)",
            Version {
                error_rate: 0.015,
                ..SAME
            },
        ),
        (
            "  errors +2 points (2.5% vs 0.5%)",
            Version {
                error_rate: 0.025,
                ..SAME
            },
        ),
        (
            "latency +20% (the margin)",
            Version {
                slowdown: 1.2,
                ..SAME
            },
        ),
        (
            "latency +50%",
            Version {
                slowdown: 1.5,
                ..SAME
            },
        ),
        (
            "latency spread x2, same median",
            Version {
                spread: 2.0,
                ..SAME
            },
        ),
    ];
    for (i, (label, canary)) in cases.into_iter().enumerate() {
        run(label, rollouts, 50.0, canary, 100 + i as u64);
    }
}
