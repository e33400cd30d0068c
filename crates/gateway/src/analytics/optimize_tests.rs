//! Adaptive routing's statistics: the bounds, the posterior probabilities, and a seeded
//! simulation of subjects routed by the shares while their outcomes arrive late.

use super::*;

fn evidence(approved: u64, not_approved: u64, price: f64) -> Evidence {
    Evidence {
        approved,
        not_approved,
        price,
    }
}

fn close(actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{actual} is not within {tolerance} of {expected}"
    );
}

#[test]
fn bounds_hold_and_keep_proportions_where_they_can() {
    // Within bounds already: unchanged.
    let shares = bounded(&[0.3, 0.7], 0.1, 0.9);
    close(shares[0], 0.3, 1e-6);
    close(shares[1], 0.7, 1e-6);
    // One takes everything: held at the most, the others share the rest.
    let shares = bounded(&[1.0, 0.0, 0.0], 0.1, 0.8);
    close(shares[0], 0.8, 1e-6);
    close(shares[1], 0.1, 1e-6);
    close(shares[2], 0.1, 1e-6);
    // Raised to the least: the rest keep their proportion.
    let shares = bounded(&[0.02, 0.49, 0.49], 0.2, 1.0);
    close(shares[0], 0.2, 1e-6);
    close(shares[1], 0.4, 1e-6);
    // No draws for any: even.
    let shares = bounded(&[0.0, 0.0], 0.0, 1.0);
    close(shares[0], 0.5, 1e-6);
    // Tight bounds: exactly them.
    let shares = bounded(&[0.9, 0.1], 0.5, 0.5);
    close(shares[0], 0.5, 1e-6);
    for case in [[0.5, 0.25, 0.25], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]] {
        let shares = bounded(&case, 0.05, 0.9);
        close(shares.iter().sum(), 1.0, 1e-9);
        assert!(
            shares
                .iter()
                .all(|s| (0.05 - 1e-9..=0.9 + 1e-9).contains(s))
        );
    }
}

#[test]
fn the_best_by_approvals_per_cost_wins_the_draws_once_the_evidence_says_so() {
    // No evidence, same price: a coin toss.
    let p = best_probabilities(&[evidence(0, 0, 1.0), evidence(0, 0, 1.0)], 20_000, 1);
    close(p[0], 0.5, 0.02);
    // 70 % at 1.00 against 40 % at 1.50, on 500 each: the first is clearly better.
    let p = best_probabilities(
        &[evidence(350, 150, 1.0), evidence(200, 300, 1.5)],
        20_000,
        1,
    );
    assert!(p[0] > 0.999, "{p:?}");
    // Approving more is not enough when it costs more per approval: 80 % at 2.00 (0.40 per
    // unit) loses to 60 % at 1.00 (0.60 per unit).
    let p = best_probabilities(
        &[evidence(800, 200, 2.0), evidence(600, 400, 1.0)],
        20_000,
        1,
    );
    assert!(p[1] > 0.999, "{p:?}");
    // Ten each cannot tell 60 % from 50 %: both keep a large share.
    let p = best_probabilities(&[evidence(6, 4, 1.0), evidence(5, 5, 1.0)], 20_000, 1);
    assert!(p[0] > 0.5 && p[1] > 0.25, "{p:?}");
    // The same evidence gives the same answer (every replica agrees).
    let e = [evidence(30, 20, 1.0), evidence(25, 25, 1.2)];
    assert_eq!(
        best_probabilities(&e, 5_000, 9),
        best_probabilities(&e, 5_000, 9)
    );
}

/// Approvals per unit of money of an allocation of subjects among instances.
fn ratio(shares: &[f64], rates: &[f64], prices: &[f64]) -> f64 {
    let approvals: f64 = shares.iter().zip(rates).map(|(s, r)| s * r).sum();
    let cost: f64 = shares.iter().zip(prices).map(|(s, c)| s * c).sum();
    approvals / cost
}

/// The best approvals per cost any allocation within the bounds gets, on a grid of 1 %.
fn best_bounded(rates: &[f64], prices: &[f64], min: f64, max: f64) -> f64 {
    let steps: Vec<f64> = (0..=100).map(|i| f64::from(i) / 100.0).collect();
    let allowed = |s: f64| s >= min - 1e-9 && s <= max + 1e-9;
    let mut best: f64 = 0.0;
    match rates.len() {
        2 => {
            for &a in steps.iter().filter(|a| allowed(**a) && allowed(1.0 - **a)) {
                best = best.max(ratio(&[a, 1.0 - a], rates, prices));
            }
        }
        _ => {
            for &a in steps.iter().filter(|a| allowed(**a)) {
                for &b in steps
                    .iter()
                    .filter(|b| allowed(**b) && allowed(1.0 - a - **b))
                {
                    best = best.max(ratio(&[a, b, 1.0 - a - b], rates, prices));
                }
            }
        }
    }
    best
}

/// Routes 10,000 subjects, 40 a period, by the shares, each approved with its instance's true
/// rate; an outcome is seen 5 periods later, and the shares are recomputed every period from
/// what has been seen, each checked against the bounds. Answers the approvals per unit of money
/// of all of them, and the share of the subjects each instance got.
fn simulate(rates: &[f64], prices: &[f64], min: f64, max: f64, seed: u64) -> (f64, Vec<f64>) {
    let (periods, per_period, delay) = (250, 40, 5);
    let mut rng = fastrand::Rng::with_seed(seed);
    let n = rates.len();
    let mut shares = vec![1.0 / n as f64; n];
    // Per period: what each instance got and approved, seen `delay` periods later.
    let mut routed: Vec<Vec<(u64, u64)>> = Vec::new();
    let (mut approvals, mut cost) = (0.0, 0.0);
    for period in 0..periods {
        let mut this = vec![(0u64, 0u64); n];
        for _ in 0..per_period {
            let point = rng.f64();
            let mut below = 0.0;
            let mut chosen = n - 1;
            for (i, s) in shares.iter().enumerate() {
                below += s;
                if point < below {
                    chosen = i;
                    break;
                }
            }
            let approved = rng.f64() < rates[chosen];
            this[chosen].0 += 1;
            this[chosen].1 += u64::from(approved);
            cost += prices[chosen];
            approvals += f64::from(u8::from(approved));
        }
        routed.push(this);
        let seen = routed.len().saturating_sub(delay);
        let evidence: Vec<Evidence> = (0..n)
            .map(|i| {
                let (started, approved) = routed[..seen]
                    .iter()
                    .fold((0, 0), |(s, a), p| (s + p[i].0, a + p[i].1));
                evidence(approved, started - approved, prices[i])
            })
            .collect();
        let wanted = best_probabilities(&evidence, 1_000, seed ^ period as u64);
        shares = bounded(&wanted, min, max);
        assert!(
            shares.iter().all(|s| *s >= min - 1e-9 && *s <= max + 1e-9),
            "{shares:?} outside {min}..{max}"
        );
    }
    let subjects = (periods * per_period) as f64;
    let got = (0..n)
        .map(|i| routed.iter().map(|p| p[i].0).sum::<u64>() as f64 / subjects)
        .collect();
    (approvals / cost, got)
}

#[test]
fn a_simulation_with_late_outcomes_earns_near_the_best_bounded_allocation() {
    let cases: [(&[f64], &[f64], f64, f64); 3] = [
        // 70 % at 1.00 against 40 % at 1.50.
        (&[0.7, 0.4], &[1.0, 1.5], 0.1, 0.9),
        // The dearer one is the better buy: 80 % at 1.20 against 45 % at 1.00.
        (&[0.45, 0.8], &[1.0, 1.2], 0.1, 0.9),
        // Three, one cheap and poor.
        (&[0.55, 0.75, 0.2], &[1.0, 1.1, 0.4], 0.05, 0.9),
    ];
    for (rates, prices, min, max) in cases {
        let best = best_bounded(rates, prices, min, max);
        let even = ratio(&vec![1.0 / rates.len() as f64; rates.len()], rates, prices);
        for seed in 1..=5 {
            let (earned, got) = simulate(rates, prices, min, max, seed);
            println!(
                "rates {rates:?} prices {prices:?}, 10,000 subjects: earned {earned:.4} approvals \
                 per unit, best bounded allocation {best:.4}, 50/50 (even) {even:.4}; shares of \
                 subjects {got:.3?} (seed {seed})"
            );
            assert!(earned >= 0.9 * best, "{earned} against the best {best}");
            assert!(earned > 1.05 * even, "{earned} against even shares' {even}");
            // Each instance kept at least its least share of the subjects (less the draws' luck).
            assert!(got.iter().all(|g| *g >= 0.8 * min), "{got:?}");
        }
    }
}

#[test]
fn only_the_instances_own_doing_counts_against_it() {
    let outcomes = InstanceOutcomes {
        started: 10,
        approved: 4,
        cancelled: 2,
        provider_errors: 3,
    };
    // Cancelled by the tenant: left out. Failed calls: not approved.
    assert_eq!(Evidence::from_outcomes(&outcomes, 1.5), evidence(4, 7, 1.5));
}
