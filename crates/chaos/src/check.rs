//! The invariants, checked after a run from the simulators' own records, the store and the
//! receiver's log:
//!
//! - `reference`: each reference is bound to at most one verification, whose subject is one
//!   that a create of it sent to a gateway (a request refused at connect, its process down,
//!   reached none), and no create of it with the other subject was ever answered with a
//!   verification: the first body to reach a gateway binds the reference.
//! - `provider_object`: each verification is bound to one provider object (a BeTrust transaction,
//!   a gu1 validation, a Didit session), made for its request: the national id the simulator was
//!   sent is the reference's (BeTrust's `metadata.nin`, the `taxId` of gu1's entity, the
//!   `expected_details.identification_number` of Didit's session, whose `metadata` also names the
//!   tenant and the reference, and every create Didit got with the session's `vendor_data` was
//!   for that same person); no provider object is left without a verification (an orphan).
//! - `history`: each verification's history (its status changes) is one chain from its creation,
//!   never going back to an earlier stage, never changing after a final status, ending at the
//!   stored status, which is the one its provider holds (gu1's status, or what BeTrust's state or
//!   Didit's status stands for by the adapter's mapping); a manual decision's own row (who and
//!   why) names a status that a change of that chain reached, and no other kind of row is there
//!   (nothing is erased). While the run goes on, the store is sampled every 250 ms: a status seen
//!   never goes back or leaves a final one, and a reference seen bound stays bound to that
//!   verification.
//! - `events`: every stored event was delivered, with a valid signature, and each verification's
//!   events reached the receiver in the order of their sequence; every change after the creation
//!   has its event; nothing was delivered that the store does not hold; a delivered event holds
//!   no claim and no due time, and has its 2xx attempt recorded (a late attempt of an expired
//!   claim changed nothing).
//! - `stats`: the day counts equal a recount of the verifications.
//! - `answers`: every request was answered within [`crate::DEADLINE`], never with a 500 (a 502
//!   or 503 naming the provider or the store is an answer), and no forged provider webhook was
//!   accepted.
//! - `drained`: once the faults are lifted and creates retried, no reservation and no pending
//!   event is left.
//! - `store`: the store could be read at all (a failed read is a violation, never an empty
//!   result that the other checks would pass over).

use crate::plan::{self, Op, Plan};
use crate::world::{Delivery, Record, World};
use serde::Serialize;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One invariant that did not hold.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// Which invariant (see the module docs).
    pub invariant: &'static str,
    /// What was found.
    pub detail: String,
}

struct Stored {
    id: String,
    reference: String,
    subject: String,
    provider: String,
    provider_reference: String,
    status: String,
}

/// The stage of a status: a change never goes to a lower one, and nothing follows a final one.
pub(crate) fn stage(status: &str) -> u8 {
    match status {
        "pending" => 0,
        "in_progress" => 1,
        "in_review" => 2,
        _ => 3,
    }
}

/// Checks every invariant; answers how many checks were made and what failed.
pub async fn all(world: &World, plan: &Plan, history: &[Record]) -> (usize, Vec<Violation>) {
    let mut checks = Checks::default();
    let pool = match world.pool().await {
        Ok(pool) => pool,
        Err(error) => {
            checks.fail("store", format!("the store cannot be read: {error}"));
            return (checks.made, checks.found);
        }
    };
    let fetch = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query(sql).fetch_all(&pool).await }
    };
    let read = tokio::try_join!(
        fetch(
            "SELECT id, reference, subject_id, provider, provider_reference, status \
             FROM verifications WHERE tenant = 'alpha'"
        ),
        fetch(
            "SELECT verification_id, from_status, to_status, kind FROM status_changes \
             WHERE tenant = 'alpha' ORDER BY verification_id, id"
        ),
        fetch("SELECT id, verification_id, seq, state, payload FROM events WHERE tenant = 'alpha'"),
        fetch(
            "SELECT provider, CAST(SUM(started) AS BIGINT), CAST(SUM(approved) AS BIGINT), \
             CAST(SUM(rejected) AS BIGINT), CAST(SUM(expired) AS BIGINT), \
             CAST(SUM(abandoned) AS BIGINT), CAST(SUM(cancelled) AS BIGINT) \
             FROM stats_daily WHERE tenant = 'alpha' GROUP BY provider"
        ),
        fetch("SELECT COUNT(*) FROM create_attempts"),
        fetch(
            "SELECT e.id, CASE WHEN e.claim IS NULL AND e.due_at IS NULL \
             AND e.next_attempt_at IS NULL THEN 'with no 2xx attempt recorded' \
             ELSE 'still claimed or due' END \
             FROM events e WHERE e.tenant = 'alpha' AND e.state = 'delivered' \
             AND (e.claim IS NOT NULL OR e.due_at IS NOT NULL OR e.next_attempt_at IS NOT NULL \
             OR NOT EXISTS (SELECT 1 FROM event_attempts a WHERE a.event_id = e.id \
             AND a.status_code BETWEEN 200 AND 299))"
        ),
    );
    let (verifications, change_rows, event_rows, count_rows, left, unsettled) = match read {
        Ok(read) => read,
        Err(error) => {
            checks.fail("store", format!("the store cannot be read: {error}"));
            pool.close().await;
            return (checks.made, checks.found);
        }
    };
    pool.close().await;
    let stored: Vec<Stored> = verifications
        .iter()
        .map(|r| Stored {
            id: r.get(0),
            reference: r.get(1),
            subject: r.get(2),
            provider: r.get(3),
            provider_reference: r.get(4),
            status: r.get(5),
        })
        .collect();
    let seed = world.shared.seed;
    references(&mut checks, seed, plan, &stored, history);
    provider_objects(&mut checks, world, seed, &stored);
    let mut changes: BTreeMap<String, Vec<(Option<String>, String)>> = BTreeMap::new();
    let mut decisions = Vec::new();
    for row in change_rows {
        let (id, from, to, kind): (String, Option<String>, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        match kind.as_str() {
            "change" => changes.entry(id).or_default().push((from, to)),
            // Who made a manual decision and why: a row of its own beside the change it caused
            // (which may be recorded first from the provider's webhook), not a change.
            "decision" => decisions.push((id, from, to)),
            // Erasure's rows: the campaign erases nothing.
            _ => checks.fail(
                "history",
                format!("{id} has a history row of kind {kind}, though nothing was erased"),
            ),
        }
    }
    chains(&mut checks, world, &stored, &changes);
    for (id, from, to) in decisions {
        let chain = changes.get(&id).map(Vec::as_slice).unwrap_or_default();
        checks.expect(
            from.as_deref() == Some(to.as_str())
                && chain.iter().any(|(f, t)| f.is_some() && *t == to),
            "history",
            || format!("{id} records a decision to {to} (from {from:?}) that no change made"),
        );
    }
    let mut events: Vec<(String, String, i64, String, String)> = event_rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    events.sort_by(|a, b| (&a.1, a.2).cmp(&(&b.1, b.2)));
    let deliveries = world.shared.deliveries.lock().unwrap().clone();
    delivered(&mut checks, &events, &deliveries, &changes);
    let counts: Vec<(String, [i64; 6])> = count_rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                [r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)],
            )
        })
        .collect();
    stats(&mut checks, &stored, &counts);
    answers(&mut checks, history);
    for row in unsettled {
        let (id, why): (String, String) = (row.get(0), row.get(1));
        checks.fail("events", format!("{id} is delivered, {why}"));
    }
    checks.made += 1;
    let left: i64 = left.first().map_or(0, |r| r.get(0));
    checks.expect(left == 0, "drained", || {
        format!("{left} create reservations left")
    });
    (checks.made, checks.found)
}

/// Samples the store every 250 ms until `stop` says so: a status seen never goes to an
/// earlier stage or leaves a final one, and a reference seen bound stays bound to the
/// verification first seen. Answers how many checks were made and what failed.
pub(crate) async fn watch(
    pool: sqlx::AnyPool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (usize, Vec<Violation>) {
    let mut checks = Checks::default();
    let mut statuses: HashMap<String, String> = HashMap::new();
    let mut bound: HashMap<String, String> = HashMap::new();
    let (mut samples, mut unread) = (0usize, 0usize);
    while !*stop.borrow() {
        let rows =
            sqlx::query("SELECT id, reference, status FROM verifications WHERE tenant = 'alpha'")
                .fetch_all(&pool)
                .await;
        samples += 1;
        match rows {
            // A SQLite file recovering after a kill -9 can refuse a read for a moment.
            Err(_) => unread += 1,
            Ok(rows) => {
                for row in rows {
                    let (id, reference, status): (String, String, String) =
                        (row.get(0), row.get(1), row.get(2));
                    let first = bound.entry(reference.clone()).or_insert_with(|| id.clone());
                    checks.expect(*first == id, "reference", || {
                        format!("{reference} was seen bound to {first}, later to {id}")
                    });
                    if let Some(before) = statuses.get(&id) {
                        checks.expect(
                            *before == status
                                || (stage(before) < 3 && stage(&status) >= stage(before)),
                            "history",
                            || format!("{id} was seen {before}, later {status}"),
                        );
                    }
                    statuses.insert(id, status);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            _ = stop.changed() => {}
        }
    }
    checks.expect(unread * 2 <= samples, "store", || {
        format!("{unread} of {samples} samples of the store could not be read")
    });
    pool.close().await;
    (checks.made, checks.found)
}

#[derive(Default)]
struct Checks {
    made: usize,
    found: Vec<Violation>,
}

impl Checks {
    fn expect(&mut self, holds: bool, invariant: &'static str, detail: impl FnOnce() -> String) {
        self.made += 1;
        if !holds {
            self.fail(invariant, detail());
        }
    }

    fn fail(&mut self, invariant: &'static str, detail: String) {
        self.found.push(Violation { invariant, detail });
    }
}

/// Reference `r` of the campaign's `reference` text.
fn index_of(seed: u64, reference: &str) -> Option<usize> {
    reference
        .strip_prefix(&format!("chaos-{seed}-"))?
        .parse()
        .ok()
}

/// Which bodies of a reference reached a gateway, and which were answered with a verification:
/// (the reference's own body, the other body).
#[derive(Default, Clone, Copy)]
struct Sent {
    reached: (bool, bool),
    bound: (bool, bool),
}

fn references(checks: &mut Checks, seed: u64, plan: &Plan, stored: &[Stored], history: &[Record]) {
    let mut sent: HashMap<usize, Sent> = HashMap::new();
    for record in history {
        let (r, other) = match record.op {
            Op::Create { r, .. } | Op::Twins { r } => (r, false),
            Op::Conflict { r, .. } => (r, true),
            _ => continue,
        };
        let entry = sent.entry(r).or_default();
        for answer in &record.answers {
            let reached = answer.error.as_deref() != Some(crate::world::NOT_SENT);
            let bound = matches!(answer.status, Some(200 | 201));
            if other {
                entry.reached.1 |= reached;
                entry.bound.1 |= bound;
            } else {
                entry.reached.0 |= reached;
                entry.bound.0 |= bound;
            }
        }
    }
    let mut seen = HashSet::new();
    for v in stored {
        checks.expect(seen.insert(&v.reference), "reference", || {
            format!("{} is bound to two verifications", v.reference)
        });
        let Some(r) = index_of(seed, &v.reference).filter(|r| *r < plan.references) else {
            checks.fail("reference", format!("{} was never sent", v.reference));
            continue;
        };
        let (_, subject, _, _) = plan::reference(seed, r);
        let s = sent.get(&r).copied().unwrap_or_default();
        // Bound to a body that reached a gateway, and never answered for the other one.
        let (reached, answered_other) = if v.subject == subject {
            (s.reached.0, s.bound.1)
        } else {
            (s.reached.1, s.bound.0)
        };
        checks.expect(reached, "reference", || {
            format!(
                "{} ({}) is bound to subject {}, which no request sent",
                v.reference, v.id, v.subject
            )
        });
        checks.expect(!answered_other, "reference", || {
            format!(
                "{} ({}) is bound to subject {}, but a create with the other subject was \
                 answered with a verification too",
                v.reference, v.id, v.subject
            )
        });
    }
}

/// What a create sent to Didit was for: the national id and the reference.
type DiditCreate<'a> = (Option<&'a str>, Option<&'a str>);

fn provider_objects(checks: &mut Checks, world: &World, seed: u64, stored: &[Stored]) {
    let by_object: HashMap<(&str, &str), &Stored> = stored
        .iter()
        .map(|v| ((v.provider.as_str(), v.provider_reference.as_str()), v))
        .collect();
    checks.expect(by_object.len() == stored.len(), "provider_object", || {
        "two verifications share one provider object".into()
    });
    // The national id sent with the subject the verification is bound to.
    let nin_of = |v: &Stored| {
        let (_, subject, _, nin) = plan::reference(seed, index_of(seed, &v.reference)?);
        Some(if v.subject == subject {
            nin
        } else {
            format!("{nin}-other")
        })
    };
    let betrust = &world.shared.betrust;
    for uuid in betrust.transaction_uuids() {
        let sent = betrust.transaction(&uuid).unwrap_or_default();
        match by_object.get(&("betrust-cl", uuid.as_str())) {
            None => checks.fail(
                "provider_object",
                format!("BeTrust transaction {uuid} belongs to no verification (an orphan)"),
            ),
            Some(v) => {
                let nin = sent["metadata"]["nin"].as_str().map(str::to_string);
                checks.expect(nin == nin_of(v), "provider_object", || {
                    format!(
                        "{} is bound to BeTrust transaction {uuid}, made for another person",
                        v.id
                    )
                });
            }
        }
    }
    let gu1 = &world.shared.gu1;
    for id in gu1.validation_ids() {
        let validation = gu1.validation(&id).unwrap_or_default();
        let entity = validation["entityId"]
            .as_str()
            .and_then(|e| gu1.entity(e))
            .unwrap_or_default();
        match by_object.get(&("gu1", id.as_str())) {
            None => checks.fail(
                "provider_object",
                format!("gu1 validation {id} belongs to no verification (an orphan)"),
            ),
            Some(v) => {
                let nin = entity["taxId"].as_str().map(str::to_string);
                checks.expect(nin == nin_of(v), "provider_object", || {
                    format!(
                        "{} is bound to gu1 validation {id}, of another person's entity",
                        v.id
                    )
                });
            }
        }
    }
    let didit = &world.shared.didit;
    // Every create Didit got, by `vendor_data` (the gateway's key for one request): the
    // national ids and references they were for.
    let mut creates: HashMap<&str, Vec<DiditCreate>> = HashMap::new();
    let bodies = didit.create_bodies();
    for body in &bodies {
        if let Some(key) = body["vendor_data"].as_str() {
            creates.entry(key).or_default().push((
                body["expected_details"]["identification_number"].as_str(),
                body["metadata"]["reference"].as_str(),
            ));
        }
    }
    for id in didit.session_ids() {
        // Never deleted here (the instance does not cancel by deleting): a session gone is
        // reported below, with the verification bound to it.
        let Some(session) = didit.session(&id) else {
            continue;
        };
        let Some(v) = by_object.get(&("didit", id.as_str())) else {
            checks.fail(
                "provider_object",
                format!("Didit session {id} belongs to no verification (an orphan)"),
            );
            continue;
        };
        let nin = session["expected_details"]["identification_number"]
            .as_str()
            .map(str::to_string);
        checks.expect(nin == nin_of(v), "provider_object", || {
            format!(
                "{} is bound to Didit session {id}, made for another person ({nin:?})",
                v.id
            )
        });
        let (tenant, reference) = (
            session["metadata"]["tenant"].as_str(),
            session["metadata"]["reference"].as_str(),
        );
        checks.expect(
            tenant == Some("alpha") && reference == Some(v.reference.as_str()),
            "provider_object",
            || {
                format!(
                    "{} ({}) is bound to Didit session {id}, made for {tenant:?}'s {reference:?}",
                    v.id, v.reference
                )
            },
        );
        let key = session["vendor_data"].as_str().unwrap_or_default();
        let sent = creates.get(key).map(Vec::as_slice).unwrap_or_default();
        checks.expect(
            !sent.is_empty()
                && sent.iter().all(|(n, r)| {
                    n.map(str::to_string) == nin_of(v) && *r == Some(v.reference.as_str())
                }),
            "provider_object",
            || {
                format!(
                    "{} is bound to Didit session {id}, whose vendor_data {key:?} Didit got in \
                     creates for {sent:?}",
                    v.id
                )
            },
        );
    }
    for v in stored {
        let exists = match v.provider.as_str() {
            "gu1" => gu1.validation(&v.provider_reference).is_some(),
            "didit" => didit.session(&v.provider_reference).is_some(),
            _ => betrust.transaction(&v.provider_reference).is_some(),
        };
        checks.expect(exists, "provider_object", || {
            format!("{} is bound to an object its provider does not hold", v.id)
        });
    }
}

fn chains(
    checks: &mut Checks,
    world: &World,
    stored: &[Stored],
    changes: &BTreeMap<String, Vec<(Option<String>, String)>>,
) {
    for v in stored {
        let chain = changes.get(&v.id).map(Vec::as_slice).unwrap_or_default();
        checks.expect(
            chain.first().is_some_and(|(from, _)| from.is_none()),
            "history",
            || format!("{} has no creation in its history", v.id),
        );
        for pair in chain.windows(2) {
            let ((_, before), (from, after)) = (&pair[0], &pair[1]);
            checks.expect(from.as_deref() == Some(before), "history", || {
                format!("{}: a change from {from:?} follows one to {before}", v.id)
            });
            checks.expect(
                stage(before) < 3 && stage(after) >= stage(before),
                "history",
                || format!("{}: {before} became {after}", v.id),
            );
        }
        checks.expect(
            chain.last().is_some_and(|(_, to)| *to == v.status),
            "history",
            || format!("{}: stored as {}, history ends elsewhere", v.id, v.status),
        );
        let theirs = world
            .shared
            .provider_status(&v.provider, &v.provider_reference);
        if let Some(theirs) = theirs {
            checks.expect(theirs == v.status, "history", || {
                format!(
                    "{}: stored as {}, {} holds {theirs}",
                    v.id, v.status, v.provider
                )
            });
        }
    }
}

/// The status a BeTrust transaction's state stands for, by the adapter's documented mapping
/// (its booleans, then its step). Written from the table in the adapter's docs rather than by
/// calling its code, so that a mapping bug there shows as a difference here.
pub(crate) fn betrust_status(held: &serde_json::Value) -> &'static str {
    let flag = |key: &str| held[key].as_bool().unwrap_or(false);
    let step = held["step"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if flag("failed") {
        "rejected"
    } else if flag("complete") {
        "approved"
    } else if flag("active") {
        match step.as_str() {
            "" | "session_start" => "pending",
            "manual_review" => "in_review",
            _ => "in_progress",
        }
    } else {
        match step.as_str() {
            "abandoned" => "abandoned",
            "cancelled" => "cancelled",
            _ => "expired",
        }
    }
}

/// The status a Didit session's `status` stands for, by the adapter's documented mapping (the
/// table in its crate docs; Didit's strings are exact and case-sensitive); `None` for one the
/// table does not hold. Written from the table rather than by calling the adapter, so that a
/// mapping bug there shows as a difference here.
pub(crate) fn didit_status(theirs: &str) -> Option<&'static str> {
    Some(match theirs {
        "Not Started" => "pending",
        "In Progress" | "Awaiting User" | "Resubmitted" => "in_progress",
        "In Review" => "in_review",
        "Approved" => "approved",
        "Declined" => "rejected",
        "Expired" | "Kyc Expired" => "expired",
        "Abandoned" => "abandoned",
        _ => return None,
    })
}

fn delivered(
    checks: &mut Checks,
    events: &[(String, String, i64, String, String)],
    deliveries: &[Delivery],
    changes: &BTreeMap<String, Vec<(Option<String>, String)>>,
) {
    let stored: HashSet<&str> = events.iter().map(|e| e.0.as_str()).collect();
    let mut first_arrival: HashMap<&str, usize> = HashMap::new();
    for (i, d) in deliveries.iter().enumerate() {
        checks.expect(stored.contains(d.id.as_str()), "events", || {
            format!("delivered {} for a change the store does not hold", d.id)
        });
        checks.expect(d.verified, "events", || {
            format!("{} arrived with a signature that does not verify", d.id)
        });
        if d.accepted {
            first_arrival.entry(d.id.as_str()).or_insert(i);
        }
    }
    let mut lines: BTreeMap<&str, Vec<(i64, &str, String)>> = BTreeMap::new();
    for (id, verification, seq, state, payload) in events {
        checks.expect(state == "delivered", "events", || {
            format!("{id} ({verification}) is {state}, never delivered")
        });
        checks.expect(first_arrival.contains_key(id.as_str()), "events", || {
            format!("{id} ({verification}) never reached the receiver")
        });
        let status = serde_json::from_str::<serde_json::Value>(payload)
            .ok()
            .and_then(|p| p["data"]["status"].as_str().map(str::to_string))
            .unwrap_or_default();
        lines
            .entry(verification.as_str())
            .or_default()
            .push((*seq, id.as_str(), status));
    }
    for (verification, line) in &lines {
        let arrivals: Vec<usize> = line
            .iter()
            .filter_map(|(_, id, _)| first_arrival.get(id).copied())
            .collect();
        checks.expect(arrivals.is_sorted(), "events", || {
            format!("{verification}'s events arrived out of order")
        });
    }
    for (verification, chain) in changes {
        let changed: Vec<&str> = chain
            .iter()
            .filter(|(from, _)| from.is_some())
            .map(|(_, to)| to.as_str())
            .collect();
        let told: Vec<&str> = lines
            .get(verification.as_str())
            .map(|l| l.iter().map(|(_, _, s)| s.as_str()).collect())
            .unwrap_or_default();
        checks.expect(changed == told, "events", || {
            format!("{verification} changed {changed:?} but its events say {told:?}")
        });
    }
}

fn stats(checks: &mut Checks, stored: &[Stored], counts: &[(String, [i64; 6])]) {
    let mut recount: BTreeMap<&str, [i64; 6]> = BTreeMap::new();
    for v in stored {
        let row = recount.entry(v.provider.as_str()).or_default();
        row[0] += 1;
        let column = match v.status.as_str() {
            "approved" => 1,
            "rejected" => 2,
            "expired" => 3,
            "abandoned" => 4,
            "cancelled" => 5,
            _ => continue,
        };
        row[column] += 1;
    }
    let counted: BTreeMap<&str, [i64; 6]> = counts.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    checks.expect(counted == recount, "stats", || {
        format!("day counts {counted:?}, a recount says {recount:?}")
    });
}

fn answers(checks: &mut Checks, history: &[Record]) {
    for record in history {
        for answer in &record.answers {
            let step = record.step;
            checks.expect(answer.status != Some(500), "answers", || {
                format!(
                    "step {step} ({:?}) was answered {:?}",
                    record.op, answer.status
                )
            });
            if matches!(record.op, Op::Forge { .. }) {
                checks.expect(
                    !answer.status.is_some_and(|s| (200..300).contains(&s)),
                    "answers",
                    || format!("step {step}: a forged provider webhook was accepted"),
                );
            }
            checks.expect(
                answer.error.as_deref() != Some("timed out")
                    && answer.took_ms <= crate::DEADLINE.as_millis() as u64,
                "answers",
                || format!("step {step} ({:?}) got no answer in time", record.op),
            );
        }
    }
}
