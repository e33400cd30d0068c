//! The statistics behind an experiment's verdict: two proportions (the champion's and the
//! challenger's approval rate, say), each from a count of successes in a sample.
//!
//! - Each arm's 95 % interval is Wilson's score interval (Wilson 1927), which stays inside 0..1
//!   and keeps its coverage for small samples and rates near 0 or 1, where the textbook
//!   `p ± 1.96·√(p(1−p)/n)` does not.
//! - The difference (challenger − champion) has Newcombe's hybrid score interval (Newcombe 1998,
//!   method 10), built from the two Wilson intervals.
//! - Whether the arms differ is the two-sided two-proportion z-test with the pooled proportion
//!   (the same as Pearson's chi-square test of the 2×2 table without continuity correction):
//!   `z = (p₂ − p₁) / √(p̂(1−p̂)(1/n₁ + 1/n₂))`, `p = 2·(1 − Φ(|z|))`, significant below 0.05.
//!
//! - Those three are fixed-horizon methods: each is right once, at a sample size chosen in
//!   advance. An experiment is looked at again and again as its sample grows, and a test
//!   repeated at every look declares a difference far more often than 5 % of the time when there
//!   is none (the `monitoring_tests` simulation measures it). The verdict and the guardrail use
//!   [`sequential`] instead: the mixture sequential probability ratio test (mSPRT; Robbins 1970,
//!   as applied to A/B tests by Johari, Koomen, Pekelis and Walsh, "Always valid inference",
//!   2017, and in Optimizely's Stats Engine). Its p-value and its confidence sequence hold at
//!   every look at once: the chance that they ever show a difference that is not there stays
//!   below 5 %, however often and for however long the experiment is looked at.
//!
//! The normal distribution's CDF comes from `libm`'s `erfc`; the 97.5 % quantile is a constant.

/// The 97.5 % quantile of the standard normal distribution: a two-sided 95 % interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// The significance level of the test.
pub const ALPHA: f64 = 0.05;

/// A closed interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// Successes in a sample: one arm's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Proportion {
    /// How many succeeded (e.g. were approved).
    pub successes: u64,
    /// Out of how many.
    pub sample: u64,
}

impl Proportion {
    /// successes / sample; `None` for an empty sample.
    pub fn value(self) -> Option<f64> {
        (self.sample > 0).then(|| self.successes as f64 / self.sample as f64)
    }

    /// Wilson's 95 % score interval; `None` for an empty sample.
    pub fn wilson(self) -> Option<Interval> {
        let p = self.value()?;
        let n = self.sample as f64;
        let z2 = Z_95 * Z_95;
        let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
        let half = Z_95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
        Some(Interval {
            low: (centre - half).max(0.0),
            high: (centre + half).min(1.0),
        })
    }
}

/// The standard normal distribution's CDF, Φ(x).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// The comparison of a challenger with a champion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// challenger − champion.
    pub difference: f64,
    /// Newcombe's 95 % interval of the difference.
    pub interval: Interval,
    /// The pooled z statistic (positive when the challenger is higher).
    pub z: f64,
    /// The two-sided p-value.
    pub p_value: f64,
}

impl Comparison {
    /// Whether the difference is significant at [`ALPHA`].
    pub fn significant(&self) -> bool {
        self.p_value < ALPHA
    }
}

/// Compares two arms; `None` while either sample is empty.
pub fn compare(champion: Proportion, challenger: Proportion) -> Option<Comparison> {
    let (p1, p2) = (champion.value()?, challenger.value()?);
    let (w1, w2) = (champion.wilson()?, challenger.wilson()?);
    let difference = p2 - p1;
    let interval = Interval {
        low: difference - ((p2 - w2.low).powi(2) + (w1.high - p1).powi(2)).sqrt(),
        high: difference + ((w2.high - p2).powi(2) + (p1 - w1.low).powi(2)).sqrt(),
    };
    let (n1, n2) = (champion.sample as f64, challenger.sample as f64);
    let pooled = (champion.successes + challenger.successes) as f64 / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    // Both arms all successes or all failures: nothing tells them apart.
    let (z, p_value) = if se > 0.0 {
        let z = difference / se;
        (z, (2.0 * (1.0 - normal_cdf(z.abs()))).clamp(0.0, 1.0))
    } else {
        (0.0, 1.0)
    };
    Some(Comparison {
        difference,
        interval,
        z,
        p_value,
    })
}

/// The mSPRT's mixing distribution over the difference is normal around 0 with this standard
/// deviation: 10 percentage points. The test is most sensitive to differences of about this
/// size (the kind a provider switch is worth making for) and still finds larger ones sooner and
/// smaller ones later.
pub const MIXING_SD: f64 = 0.1;

/// The always-valid comparison of a challenger with a champion (the mSPRT).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sequential {
    /// challenger − champion.
    pub difference: f64,
    /// The always-valid p-value: the inverse of the mixture likelihood ratio, at most 1.
    pub p_value: f64,
    /// The difference's 95 % confidence sequence: every value the test does not reject at 5 %.
    pub interval: Interval,
}

impl Sequential {
    /// Whether the arms differ at [`ALPHA`], valid whenever it is looked at.
    pub fn significant(&self) -> bool {
        self.p_value < ALPHA
    }
}

/// The mSPRT of the difference between two arms; `None` while either sample is empty.
///
/// The estimate `d = p₂ − p₁` is taken as normal with variance `V = p̃₁(1−p̃₁)/n₁ +
/// p̃₂(1−p̃₂)/n₂`, where `p̃ = (successes + ½)/(sample + 1)` keeps `V` above 0 when an arm is all
/// successes or all failures. Mixed over a difference `θ ~ N(0, τ²)` ([`MIXING_SD`] = τ), the
/// likelihood ratio of "the arms differ" against "they do not" is
/// `Λ = √(V/(V+τ²)) · exp(d²τ² / (2V(V+τ²)))`; the p-value is `min(1, 1/Λ)`, and the confidence
/// sequence is `d ± √(V(V+τ²)/τ² · (2·ln(1/α) + ln((V+τ²)/V)))`, the values of `θ` whose own
/// ratio stays below `1/α`.
pub fn sequential(champion: Proportion, challenger: Proportion) -> Option<Sequential> {
    let difference = challenger.value()? - champion.value()?;
    let variance = champion.smoothed_variance() + challenger.smoothed_variance();
    let tau2 = MIXING_SD * MIXING_SD;
    let wider = variance + tau2;
    let log_ratio =
        0.5 * (variance / wider).ln() + difference * difference * tau2 / (2.0 * variance * wider);
    let half =
        (variance * wider / tau2 * (2.0 * (1.0 / ALPHA).ln() + (wider / variance).ln())).sqrt();
    Some(Sequential {
        difference,
        p_value: (-log_ratio).exp().min(1.0),
        interval: Interval {
            low: (difference - half).max(-1.0),
            high: (difference + half).min(1.0),
        },
    })
}

impl Proportion {
    /// The variance of the sample's proportion, with half a success added to it (see
    /// [`sequential`]); the sample must not be empty.
    fn smoothed_variance(self) -> f64 {
        let n = self.sample as f64;
        let p = (self.successes as f64 + 0.5) / (n + 1.0);
        p * (1.0 - p) / n
    }
}

#[cfg(test)]
mod tests {
    //! Reference values computed elsewhere: Newcombe's published examples, and Python's
    //! `statistics.NormalDist` (an implementation independent of `libm`).
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} is not within {tolerance} of {expected}"
        );
    }

    fn arm(successes: u64, sample: u64) -> Proportion {
        Proportion { successes, sample }
    }

    #[test]
    fn the_normal_cdf_and_quantile_match_reference_values() {
        close(normal_cdf(0.0), 0.5, 1e-15);
        close(normal_cdf(Z_95), 0.975, 1e-12);
        // NormalDist().cdf(-1) and cdf(3).
        close(normal_cdf(-1.0), 0.158_655_253_931_457_05, 1e-12);
        close(normal_cdf(3.0), 0.998_650_101_968_369_9, 1e-12);
    }

    #[test]
    fn wilson_matches_newcombes_published_example() {
        // Newcombe (1998), "Two-sided confidence intervals for the single proportion", 81/263:
        // 0.2553 to 0.3662.
        let w = arm(81, 263).wilson().unwrap();
        close(w.low, 0.2553, 5e-5);
        close(w.high, 0.3662, 5e-5);
        // All successes: the interval stops at 1, and is not a point.
        let w = arm(10, 10).wilson().unwrap();
        close(w.high, 1.0, 1e-12);
        close(w.low, 0.722_467_200_137_110_9, 1e-9);
        assert_eq!(arm(0, 0).wilson(), None);
    }

    #[test]
    fn the_difference_interval_matches_newcombes_published_example() {
        // Newcombe (1998), "Interval estimation for the difference between independent
        // proportions", 56/70 − 48/80, method 10: 0.0524 to 0.3339. Here the first is the
        // challenger.
        let c = compare(arm(48, 80), arm(56, 70)).unwrap();
        close(c.difference, 0.2, 1e-12);
        close(c.interval.low, 0.0524, 5e-5);
        close(c.interval.high, 0.3339, 5e-5);
        // Python: z = 2.6501719512585336, p = 0.008045081368196705.
        close(c.z, 2.650_171_951_258_533_6, 1e-9);
        close(c.p_value, 0.008_045_081_368_196_705, 1e-9);
        assert!(c.significant());
    }

    #[test]
    fn the_two_proportion_test_matches_reference_values() {
        // 120/200 against 140/200. Python: z = 2.0965696734438364, p = 0.036031686218233716
        // (R's prop.test(c(140, 120), c(200, 200), correct = FALSE): X² = 4.3956, p = 0.03603).
        let c = compare(arm(120, 200), arm(140, 200)).unwrap();
        close(c.z, 2.096_569_673_443_836_4, 1e-9);
        close(c.p_value, 0.036_031_686_218_233_716, 1e-9);
        assert!(c.significant());
        // The other way round: the same p, the opposite sign.
        let c = compare(arm(140, 200), arm(120, 200)).unwrap();
        close(c.z, -2.096_569_673_443_836_4, 1e-9);
        // 100/200 against 104/200: p = 0.6890975768174321, not significant.
        let c = compare(arm(100, 200), arm(104, 200)).unwrap();
        close(c.p_value, 0.689_097_576_817_432_1, 1e-9);
        assert!(!c.significant());
    }

    #[test]
    fn the_sequential_test_matches_an_independent_computation() {
        // The formulas of `sequential`, computed in Python (math.log, math.exp, math.sqrt).
        let s = sequential(arm(300, 600), arm(390, 600)).unwrap();
        close(s.difference, 0.15, 1e-12);
        close(s.p_value, 7.593_907_908_905_278e-6, 1e-12);
        close(s.interval.low, 0.064_040_131_888_212_9, 1e-9);
        close(s.interval.high, 0.235_959_868_111_787_15, 1e-9);
        assert!(s.significant());
        // 120/200 against 140/200: the fixed-horizon test's p is 0.036, this one's 0.38.
        let s = sequential(arm(120, 200), arm(140, 200)).unwrap();
        close(s.p_value, 0.381_042_043_348_021_3, 1e-9);
        close(s.interval.low, -0.045_636_121_001_977_5, 1e-9);
        assert!(!s.significant());
        // No evidence of a difference: the ratio is below 1, the p-value 1.
        assert_eq!(
            sequential(arm(100, 200), arm(104, 200)).unwrap().p_value,
            1.0
        );
        // All against nothing: no division by zero, and the sequence stays within -1..1.
        let s = sequential(arm(20, 20), arm(0, 20)).unwrap();
        close(s.p_value, 3.592_960_401_075_374e-76, 1e-80);
        close(s.interval.low, -1.0, 0.0);
        close(s.interval.high, -0.851_875_446_438_742_9, 1e-9);
        assert_eq!(sequential(arm(0, 0), arm(3, 4)), None);
    }

    #[test]
    fn identical_all_or_nothing_arms_do_not_differ() {
        let c = compare(arm(50, 50), arm(30, 30)).unwrap();
        assert_eq!((c.z, c.p_value), (0.0, 1.0));
        assert_eq!(compare(arm(0, 0), arm(3, 4)), None);
    }
}
