//! The plan a seed decides: every operation and fault, and the offset it starts at, drawn before
//! anything runs so that a seed always means the same schedule.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One thing the campaign does. References are numbered: reference `r` always has the same
/// subject, country and national id (so a retry sends the same body), and `Conflict` sends
/// reference `r` with another subject.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Creates reference `r` at process `at`.
    Create {
        /// The reference, by number.
        r: usize,
        /// The process, by number.
        at: usize,
    },
    /// The same create twice at once, at both processes (or twice at the one).
    Twins {
        /// The reference, by number.
        r: usize,
    },
    /// Reference `r` with another subject: must never be bound to it.
    Conflict {
        /// The reference, by number.
        r: usize,
        /// The process, by number.
        at: usize,
    },
    /// The provider ends reference `r`'s verification so (its webhook follows).
    Finish {
        /// The reference, by number.
        r: usize,
        /// The outcome, an index into [`OUTCOMES`].
        outcome: u8,
    },
    /// A caller's refresh of reference `r`'s verification.
    Refresh {
        /// The reference, by number.
        r: usize,
        /// The process, by number.
        at: usize,
    },
    /// A caller's cancel of reference `r`'s verification (Didit has no cancel: the gateway
    /// answers 409 `not_supported` there).
    Cancel {
        /// The reference, by number.
        r: usize,
        /// The process, by number.
        at: usize,
    },
    /// A person's manual decision on reference `r`'s verification (gu1 and Didit take them when
    /// it is in review; BeTrust refuses them).
    Decide {
        /// The reference, by number.
        r: usize,
        /// The process, by number.
        at: usize,
        /// Approve rather than reject.
        approve: bool,
    },
    /// A forged provider webhook for reference `r`'s verification (a guessed URL token, no
    /// valid signature) claiming it was approved: it must change nothing.
    Forge {
        /// The reference, by number.
        r: usize,
        /// The process, by number.
        at: usize,
    },
    /// The policy is edited under the running processes: 0 as it started, 1 moves the default
    /// route to gu1, 2 makes BeTrust's circuit open at its first failure.
    Reload {
        /// Which policy.
        variant: u8,
    },
    /// Fault: the next create at a provider (see [`PROVIDERS`]) is done, and its answer held
    /// past the timeout.
    LateCreate {
        /// The provider, by number.
        provider: u8,
    },
    /// Fault: the next create at a provider is answered 503 without doing anything.
    RefuseCreate {
        /// The provider, by number.
        provider: u8,
    },
    /// Fault: the next read of a verification at a provider is answered 500.
    FailRead {
        /// The provider, by number.
        provider: u8,
    },
    /// Fault: the next create at a provider is answered 500, before doing anything or after
    /// doing the work.
    FailCreate {
        /// The provider, by number.
        provider: u8,
        /// Whether the work is done before the 500.
        after_work: bool,
    },
    /// Fault: the next create at a provider is done, and its connection cut before the answer
    /// is whole.
    CutCreate {
        /// The provider, by number.
        provider: u8,
    },
    /// The provider sends again a webhook it sent about reference `r`'s verification: `back` 0
    /// is the latest (a duplicate), 1 the one before (arriving after a newer one).
    Redeliver {
        /// The reference, by number.
        r: usize,
        /// How far back.
        back: u8,
    },
    /// Fault: process `at` is stopped (SIGSTOP) for `ms`, then continued: a stalled replica,
    /// longer than an outbox lease, whose work in flight resumes late. If a delivery comes
    /// within 3 s, the receiver holds it (then answers 500) and the process that sent it is the
    /// one stopped, whatever `at` says.
    Pause {
        /// The process, by number.
        at: usize,
        /// How long, in milliseconds.
        ms: u64,
    },
    /// Fault: process `at` is killed with SIGKILL, and started again `back_ms` later.
    Kill {
        /// The process, by number.
        at: usize,
        /// When it is started again, milliseconds after.
        back_ms: u64,
    },
    /// Fault: the receiver answers the next delivery 410 Gone, which disables the URL until
    /// the tenant recovers its events (`POST /v1/events/recover`), 1.5 s later.
    ReceiverGone,
    /// Fault: the receiver answers the next `n` deliveries 500.
    ReceiverFails {
        /// How many.
        n: u32,
    },
}

impl Op {
    /// Whether this is a fault rather than an operation of a caller or a provider.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Op::LateCreate { .. }
                | Op::RefuseCreate { .. }
                | Op::FailRead { .. }
                | Op::FailCreate { .. }
                | Op::CutCreate { .. }
                | Op::Pause { .. }
                | Op::Kill { .. }
                | Op::ReceiverFails { .. }
                | Op::ReceiverGone
                | Op::Reload { .. }
        )
    }
}

/// One step: what, and when (milliseconds from the start).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Offset from the start of the run.
    pub at_ms: u64,
    /// What.
    pub op: Op,
}

/// A seed's schedule.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// The steps, by offset.
    pub steps: Vec<Step>,
    /// References used (`0..references`).
    pub references: usize,
}

/// The providers a fault's `provider` number names (their instances in the campaign's policy):
/// 0 BeTrust, 1 gu1, 2 Didit.
pub const PROVIDERS: [&str; 3] = ["betrust-cl", "gu1", "didit"];

/// The outcomes `Finish` draws from (the index is `Op::Finish::outcome`).
pub const OUTCOMES: [kyc_sandbox::Outcome; 5] = [
    kyc_sandbox::Outcome::InProgress,
    kyc_sandbox::Outcome::InReview,
    kyc_sandbox::Outcome::Approved,
    kyc_sandbox::Outcome::Rejected,
    kyc_sandbox::Outcome::Approved,
];

impl Plan {
    /// The plan of `seed`, `operations` long: about one step every 60 ms, a fault in six or so.
    pub fn new(seed: u64, operations: usize) -> Plan {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut steps = Vec::with_capacity(operations);
        let mut at_ms = 0;
        let mut references = 0usize;
        let mut killed_until = [0u64; 2];
        for _ in 0..operations {
            at_ms += rng.random_range(10..110);
            let process = rng.random_range(0..2);
            // Mostly references already made, so their retries, outcomes and faults meet.
            let known =
                |rng: &mut ChaCha8Rng, references: usize| rng.random_range(0..references.max(1));
            let op = match rng.random_range(0..100) {
                0..27 => {
                    references += 1;
                    Op::Create {
                        r: references - 1,
                        at: process,
                    }
                }
                27..35 => Op::Create {
                    r: known(&mut rng, references),
                    at: process,
                },
                35..39 => {
                    references += 1;
                    Op::Twins { r: references - 1 }
                }
                39..43 => Op::Conflict {
                    r: known(&mut rng, references),
                    at: process,
                },
                43..58 => Op::Finish {
                    r: known(&mut rng, references),
                    outcome: rng.random_range(0..OUTCOMES.len() as u8),
                },
                58..65 => Op::Refresh {
                    r: known(&mut rng, references),
                    at: process,
                },
                65..68 => Op::Cancel {
                    r: known(&mut rng, references),
                    at: process,
                },
                68..71 => Op::Decide {
                    r: known(&mut rng, references),
                    at: process,
                    approve: rng.random_bool(0.5),
                },
                71..73 => Op::Forge {
                    r: known(&mut rng, references),
                    at: process,
                },
                73..76 => Op::Redeliver {
                    r: known(&mut rng, references),
                    back: rng.random_range(0..2),
                },
                76..78 => Op::Reload {
                    variant: rng.random_range(0..3),
                },
                78..82 => Op::LateCreate {
                    provider: rng.random_range(0..PROVIDERS.len() as u8),
                },
                82..84 => Op::RefuseCreate {
                    provider: rng.random_range(0..PROVIDERS.len() as u8),
                },
                84..87 => Op::FailCreate {
                    provider: rng.random_range(0..PROVIDERS.len() as u8),
                    after_work: rng.random_bool(0.5),
                },
                87..89 => Op::CutCreate {
                    provider: rng.random_range(0..PROVIDERS.len() as u8),
                },
                89..91 => Op::FailRead {
                    provider: rng.random_range(0..PROVIDERS.len() as u8),
                },
                91..95 if killed_until[process] < at_ms => {
                    // Mostly killed, sometimes stalled past an outbox lease.
                    // One stalled at a time (on one process both numbers are it), so that no
                    // request waits for two stalls in a row.
                    if rng.random_range(0..4) == 0 && killed_until.iter().all(|u| *u < at_ms) {
                        let ms = rng.random_range(12_000..14_000);
                        killed_until = [at_ms + ms + 5_000; 2];
                        Op::Pause { at: process, ms }
                    } else {
                        let back_ms = rng.random_range(300..1500);
                        killed_until[process] = at_ms + back_ms + 2_000;
                        Op::Kill {
                            at: process,
                            back_ms,
                        }
                    }
                }
                91..95 => Op::Refresh {
                    r: known(&mut rng, references),
                    at: process,
                },
                95..99 => Op::ReceiverFails {
                    n: rng.random_range(1..4),
                },
                _ => Op::ReceiverGone,
            };
            steps.push(Step { at_ms, op });
        }
        Plan {
            seed,
            steps,
            references,
        }
    }

    /// Writes the plan, one step per line.
    pub fn write(&self, path: &std::path::Path) -> Result<(), String> {
        let lines: Vec<String> = self
            .steps
            .iter()
            .map(|s| serde_json::to_string(s).unwrap_or_default())
            .collect();
        std::fs::write(path, lines.join("\n") + "\n").map_err(|e| e.to_string())
    }
}

/// Reference `r`'s reference, subject, country and national id in a run of `seed`. The country
/// routes it: CL to BeTrust (the default route), MX to Didit, AR to gu1 (the campaign's rules),
/// a third of the references each.
pub fn reference(seed: u64, r: usize) -> (String, String, &'static str, String) {
    let country = match r % 3 {
        0 => "CL",
        1 => "MX",
        _ => "AR",
    };
    (
        format!("chaos-{seed}-{r}"),
        format!("sub-{seed}-{r}"),
        country,
        format!("NID{seed}X{r}K"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_means_the_same_plan() {
        let a = Plan::new(7, 300);
        let b = Plan::new(7, 300);
        let c = Plan::new(8, 300);
        assert_eq!(a.steps, b.steps);
        assert_ne!(a.steps, c.steps);
        assert!(a.steps.iter().any(|s| s.op.is_fault()));
        assert!(a.steps.iter().any(|s| matches!(s.op, Op::Kill { .. })));
        assert!(a.steps.is_sorted_by_key(|s| s.at_ms));
    }

    #[test]
    fn every_provider_gets_traffic_and_faults() {
        let plan = Plan::new(1, 250);
        let countries: std::collections::HashSet<&str> =
            (0..plan.references).map(|r| reference(1, r).2).collect();
        assert_eq!(countries.len(), 3, "{countries:?}");
        for provider in 0..PROVIDERS.len() as u8 {
            let faulted = plan.steps.iter().any(|s| match s.op {
                Op::LateCreate { provider: p }
                | Op::RefuseCreate { provider: p }
                | Op::FailRead { provider: p }
                | Op::FailCreate { provider: p, .. }
                | Op::CutCreate { provider: p } => p == provider,
                _ => false,
            });
            assert!(faulted, "no fault at {}", PROVIDERS[usize::from(provider)]);
        }
    }
}
