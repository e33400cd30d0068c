//! The store suite, run on SQLite and PostgreSQL.

//! One suite, run against a SQLite file and against PostgreSQL. The PostgreSQL run is
//! `#[ignore]`d (plain `cargo test` lists it as ignored); `.ci/run` includes it and sets
//! `KYC_TEST_POSTGRES_URL`, and without that variable it fails rather than pass unrun.

use super::*;
use kyc_core::{Decision, Reason};

pub(super) fn sample(tenant: &str, reference: &str, subject: &str) -> StoredVerification {
    let t = now();
    StoredVerification {
        tenant: tenant.into(),
        request_hash: format!("hash-{reference}"),
        country: Some("CL".into()),
        verification: Verification {
            id: format!("ver_{}", ulid::Ulid::generate()),
            reference: reference.into(),
            subject_id: subject.into(),
            provider: "p1".into(),
            provider_reference: format!("pref-{tenant}-{reference}"),
            status: Status::Pending,
            reason: None,
            verification_url: Some("https://example.test/v".into()),
            expires_at: Some(t),
            decision: None,
            metadata: None,
            routing: None,
            created_at: t,
            updated_at: t,
            completed_at: None,
        },
    }
}

/// A lapse time before any approval: the verification is no re-verification.
pub(super) fn lapsed_never() -> DateTime<Utc> {
    DateTime::<Utc>::MIN_UTC
}

pub(super) fn created(row: &StoredVerification) -> NewChange {
    change(row, None, row.verification.status, Source::Create)
}

fn change(row: &StoredVerification, from: Option<Status>, to: Status, source: Source) -> NewChange {
    NewChange {
        tenant: row.tenant.clone(),
        verification_id: row.verification.id.clone(),
        change: StatusChange {
            from,
            to,
            source,
            actor: None,
            note: None,
            at: now(),
        },
    }
}

/// `row` moved to `status`, with a reason and a decision.
fn moved(row: &StoredVerification, status: Status) -> Verification {
    Verification {
        status,
        reason: Some(Reason {
            code: "c".into(),
            provider_code: Some("pc".into()),
            message: None,
        }),
        decision: Some(Decision::default()),
        updated_at: now(),
        completed_at: status.is_final().then(now),
        ..row.verification.clone()
    }
}

pub(super) async fn count(store: &SqlStore, table: &str, verification_id: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE verification_id = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(verification_id)
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

async fn suite(store: &SqlStore) {
    let tenant = format!("t_{}", ulid::Ulid::generate());
    let other = format!("o_{}", ulid::Ulid::generate());
    let a = sample(&tenant, "ref-a", "sub-1");
    let inserted = store
        .insert(&a, &created(&a), lapsed_never())
        .await
        .unwrap();
    assert!(matches!(inserted, Inserted::Created));
    // The same reference again returns the first row, not a second one, and no history.
    let dup = sample(&tenant, "ref-a", "sub-1");
    match store
        .insert(&dup, &created(&dup), lapsed_never())
        .await
        .unwrap()
    {
        Inserted::Exists(existing) => assert_eq!(*existing, a),
        Inserted::Created => panic!("a second row for one reference"),
    }
    assert_eq!(
        count(store, "status_changes", &dup.verification.id).await,
        0
    );
    // Tenants are separate.
    assert_eq!(
        store.get(&tenant, &a.verification.id).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.get(&other, &a.verification.id).await.unwrap(), None);
    let found = store
        .find_by_provider_reference("p1", &a.verification.provider_reference)
        .await
        .unwrap();
    assert_eq!(found, Some(a.clone()));

    // A change is written compare-and-set on the status read, with its history and event.
    let next = moved(&a, Status::InProgress);
    let event = NewEvent {
        id: format!("evt_{}", ulid::Ulid::generate()),
        tenant: tenant.clone(),
        verification_id: a.verification.id.clone(),
        event_type: "verification.updated",
        payload: "{}".into(),
        created_at: now(),
        due_at: now(),
    };
    let step = change(
        &a,
        Some(Status::Pending),
        Status::InProgress,
        Source::Webhook,
    );
    let saved = store
        .save_change(&tenant, Status::Pending, &next, Some(&step), Some(&event))
        .await
        .unwrap();
    assert!(saved);
    // Another writer that read `pending` too loses, and writes nothing.
    let stale = moved(&a, Status::Approved);
    let lost = store
        .save_change(&tenant, Status::Pending, &stale, Some(&step), Some(&event))
        .await
        .unwrap();
    assert!(!lost);
    // Another tenant cannot write it at all.
    let foreign = store
        .save_change(&other, Status::InProgress, &stale, None, None)
        .await
        .unwrap();
    assert!(!foreign);
    let back = store
        .get(&tenant, &a.verification.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.verification, next);
    assert_eq!(count(store, "events", &a.verification.id).await, 1);
    let history = store.history(&tenant, &a.verification.id).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|c| (c.from, c.to, c.source))
            .collect::<Vec<_>>(),
        [
            (None, Status::Pending, Source::Create),
            (Some(Status::Pending), Status::InProgress, Source::Webhook)
        ]
    );
    assert!(
        store
            .history(&other, &a.verification.id)
            .await
            .unwrap()
            .is_empty()
    );
    let done = moved(&a, Status::Approved);
    let approve = change(
        &a,
        Some(Status::InProgress),
        Status::Approved,
        Source::Refresh,
    );
    let later = NewEvent {
        id: format!("evt_{}", ulid::Ulid::generate()),
        created_at: now(),
        due_at: now(),
        ..event.clone()
    };
    assert!(
        store
            .save_change(
                &tenant,
                Status::InProgress,
                &done,
                Some(&approve),
                Some(&later)
            )
            .await
            .unwrap()
    );

    // The outbox: events of one verification go in order, each claimed by one sender.
    let due_ids = |due: Vec<DueEvent>| -> Vec<String> {
        due.into_iter()
            .map(|d| d.id)
            .filter(|id| *id == event.id || *id == later.id)
            .collect()
    };
    let soon = now() + chrono::Duration::seconds(1);
    assert_eq!(
        due_ids(store.due_events(soon, 10_000).await.unwrap()),
        std::slice::from_ref(&event.id)
    );
    let lease = soon + chrono::Duration::seconds(60);
    let due = store
        .due_events(soon, 10_000)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.id == event.id)
        .unwrap();
    assert!(store.claim_event(&due, "a", soon, lease).await.unwrap());
    assert!(!store.claim_event(&due, "b", soon, lease).await.unwrap());
    assert!(due_ids(store.due_events(soon, 10_000).await.unwrap()).is_empty());
    let attempt = Attempt {
        at: soon,
        status_code: Some(204),
        latency_ms: 3,
        error: None,
    };
    assert!(
        store
            .record_attempt(
                &due,
                "a",
                "https://receiver.test/hook",
                &attempt,
                AttemptOutcome::Delivered
            )
            .await
            .unwrap()
            .stood
    );
    assert_eq!(
        due_ids(store.due_events(soon, 10_000).await.unwrap()),
        std::slice::from_ref(&later.id)
    );
    let logged = store.get_event(&tenant, &event.id).await.unwrap().unwrap();
    assert_eq!(
        (logged.state, logged.attempts),
        (EventState::Delivered, vec![attempt])
    );
    assert!(store.get_event(&other, &event.id).await.unwrap().is_none());

    // Listing, filtering, paging, standing.
    for i in 0..3 {
        let row = sample(&tenant, &format!("ref-{i}"), "sub-2");
        store
            .insert(&row, &created(&row), lapsed_never())
            .await
            .unwrap();
    }
    let filter = ListFilter {
        subject_id: Some("sub-2".into()),
        limit: 2,
        ..Default::default()
    };
    let first = store.list(&tenant, &filter).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = store
        .list(
            &tenant,
            &ListFilter {
                before_id: Some(first[1].verification.id.clone()),
                ..filter.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    let approved = ListFilter {
        status: Some(Status::Approved),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list(&tenant, &approved).await.unwrap().len(), 1);
    let (latest, ok) = store.subject_history(&tenant, "sub-1").await.unwrap();
    assert_eq!(latest.unwrap().id, a.verification.id);
    assert_eq!(ok.unwrap().status, Status::Approved);
    // The reconciler's backlog: this tenant's three pending ones, claimed in pages, in id
    // order; claimed, they are not due again until the claim's end.
    let at = now();
    let until = at + chrono::Duration::seconds(60);
    let mine = &tenant;
    let claim_all = |at, until| async move {
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let page = store
                .claim_unfinished("p1", &after, at, until, 2)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            assert!(last.verification.id > after);
            after = last.verification.id.clone();
            assert!(page.iter().all(|s| !s.verification.status.is_final()));
            assert!(page.is_sorted_by_key(|s| s.verification.id.clone()));
            seen.extend(page.into_iter().filter(|s| s.tenant == *mine));
        }
        seen
    };
    assert_eq!(claim_all(at, until).await.len(), 3);
    assert!(claim_all(at, until).await.is_empty(), "claimed, not due");
    let later = until + chrono::Duration::seconds(1);
    let claimed = claim_all(later, later).await;
    assert_eq!(claimed.len(), 3, "due again");
    // A read schedules the next one: the one read last is due later than the others.
    let much_later = later + chrono::Duration::hours(6);
    let next: Vec<(String, DateTime<Utc>)> = claimed
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let at = if i == 0 { much_later } else { later };
            (s.verification.id.clone(), at)
        })
        .collect();
    store.schedule_reads(&next).await.unwrap();
    assert_eq!(claim_all(later, later).await.len(), 2, "two due again");
    assert_eq!(claim_all(much_later, much_later).await.len(), 3);
    assert!(
        store
            .claim_unfinished("p2", "", later, later, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.unfinished_count("p1").await.unwrap() >= 3);
    claims_are_disjoint(store).await;

    // Subject refs: first one wins.
    store
        .remember_subject_ref(&tenant, "p1", "sub-1", "ent-1")
        .await
        .unwrap();
    store
        .remember_subject_ref(&tenant, "p1", "sub-1", "ent-2")
        .await
        .unwrap();
    let remembered = store.subject_ref(&tenant, "p1", "sub-1").await.unwrap();
    assert_eq!(remembered.as_deref(), Some("ent-1"));
    assert_eq!(
        store.subject_ref(&other, "p1", "sub-1").await.unwrap(),
        None
    );
    store.ping().await.unwrap();
}

/// Two claimers at once (two replicas' rounds) share one instance's backlog: every row goes
/// to exactly one of them.
async fn claims_are_disjoint(store: &SqlStore) {
    let tenant = format!("t_{}", ulid::Ulid::generate());
    let provider = format!("p_{}", ulid::Ulid::generate());
    let mut ids = Vec::new();
    for i in 0..40 {
        let mut row = sample(&tenant, &format!("ref-c{i}"), "sub-c");
        row.verification.provider = provider.clone();
        store
            .insert(&row, &created(&row), lapsed_never())
            .await
            .unwrap();
        ids.push(row.verification.id);
    }
    let at = now();
    let until = at + chrono::Duration::seconds(60);
    let claimer = || async {
        let mut mine = Vec::new();
        let mut after = String::new();
        loop {
            let page = store
                .claim_unfinished(&provider, &after, at, until, 3)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = last.verification.id.clone();
            mine.extend(page.into_iter().map(|s| s.verification.id));
        }
        mine
    };
    let (a, b) = tokio::join!(claimer(), claimer());
    let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
    all.sort();
    ids.sort();
    assert_eq!(all, ids, "each row claimed once: {a:?} {b:?}");
}

/// What adaptive routing reads: one instance's verifications of some countries created in a
/// period, each as it stood at the horizon, and its failed calls on those days.
async fn instance_outcomes_at_the_horizon(store: &SqlStore) {
    let tenant = format!("o_{}", ulid::Ulid::generate());
    let row = |n: usize, provider: &str, country: &str, status: Status, ago: i64, after: i64| {
        let mut row = sample(&tenant, &format!("o{n}"), &format!("subject-o{n}"));
        let created_at = now() - chrono::Duration::hours(ago);
        let v = &mut row.verification;
        v.id = format!(
            "ver_{}",
            ulid::Ulid::from_parts(created_at.timestamp_millis() as u64, n as u128)
        );
        v.provider = provider.into();
        v.status = status;
        v.created_at = created_at;
        v.updated_at = created_at;
        v.completed_at = status
            .is_final()
            .then(|| created_at + chrono::Duration::hours(after));
        row.country = Some(country.into());
        row
    };
    let rows = [
        row(1, "o-p1", "CL", Status::Approved, 72, 1),
        // Approved after the 48-hour horizon: not approved then.
        row(2, "o-p1", "CL", Status::Approved, 72, 50),
        row(3, "o-p1", "CL", Status::Cancelled, 72, 1),
        row(4, "o-p1", "CL", Status::Rejected, 72, 1),
        // Younger than the horizon, another country, another instance.
        row(5, "o-p1", "CL", Status::Approved, 1, 0),
        row(6, "o-p1", "AR", Status::Approved, 72, 1),
        row(7, "o-p2", "CL", Status::Approved, 72, 1),
    ];
    for row in &rows {
        store
            .insert(row, &created(row), lapsed_never())
            .await
            .unwrap();
    }
    let three_days_ago = now() - chrono::Duration::days(3);
    for country in ["CL", "CL", "AR"] {
        store
            .count_provider_error(&tenant, "o-p1", country, three_days_ago)
            .await
            .unwrap();
    }
    let horizon = Duration::from_secs(48 * 3600);
    let (since, until) = (
        now() - chrono::Duration::days(30),
        now() - chrono::Duration::hours(48),
    );
    let outcomes = |countries: Vec<String>| {
        let (store, tenant) = (&store, &tenant);
        async move {
            store
                .instance_outcomes(tenant, "o-p1", &countries, since, until, horizon)
                .await
                .unwrap()
        }
    };
    let chile = outcomes(vec!["CL".into()]).await;
    let expected = InstanceOutcomes {
        started: 4,
        approved: 1,
        cancelled: 1,
        provider_errors: 2,
    };
    assert_eq!(chile, expected);
    let everywhere = outcomes(Vec::new()).await;
    let expected = InstanceOutcomes {
        started: 5,
        approved: 2,
        cancelled: 1,
        provider_errors: 3,
    };
    assert_eq!(everywhere, expected);
    let both = outcomes(vec!["AR".into(), "CL".into()]).await;
    assert_eq!(both, everywhere);
}

/// `stats_daily` counts each verification once, on its creation day, by how it ended. Its
/// instances are its own: the suite counts `p1`'s and `p2`'s rows in a shared database.
/// What experiments, replays and the provider figures read and write: arms counted by
/// status, a stop written once, the routing inputs of a period, errors and circuit openings.
async fn experiments_replays_and_provider_failures(store: &SqlStore) {
    let tenant = format!("x_{}", ulid::Ulid::generate());
    let experiment = format!("exp-{tenant}");
    // Final rows, and an instance of their own, so the other tests' counts stay as they are.
    let row = |reference: &str, status: Status| {
        let mut row = sample(&tenant, reference, &format!("subject-{reference}"));
        row.verification.provider = "x-p1".into();
        row.verification.status = status;
        row
    };
    let in_arm = |reference: &str, arm: kyc_core::Arm, status: Status| {
        let mut row = row(reference, status);
        row.verification.routing = Some(kyc_core::RoutingRecord {
            reason: kyc_core::RoutingReason::Experiment,
            tried: Vec::new(),
            experiment: Some(experiment.clone()),
            arm: Some(arm),
            shares: None,
        });
        row
    };
    // Made three days ago and decided an hour later, or fifty hours later (after a 48-hour
    // horizon), or not yet; or made an hour ago (younger than the horizon).
    let at = |row: StoredVerification, created_ago: i64, decided_after: Option<i64>| {
        let mut row = row;
        let created_at = now() - chrono::Duration::hours(created_ago);
        row.verification.created_at = created_at;
        row.verification.updated_at = created_at;
        row.verification.completed_at =
            decided_after.map(|h| created_at + chrono::Duration::hours(h));
        row
    };
    let (champion, challenger) = (kyc_core::Arm::Champion, kyc_core::Arm::Challenger);
    let rows = [
        at(in_arm("e1", champion, Status::Approved), 72, Some(1)),
        at(in_arm("e2", champion, Status::Approved), 72, Some(50)),
        at(in_arm("e3", champion, Status::Pending), 72, None),
        at(in_arm("e4", challenger, Status::Rejected), 1, Some(0)),
        row("plain", Status::Rejected),
    ];
    for row in &rows {
        store
            .insert(row, &created(row), lapsed_never())
            .await
            .unwrap();
    }
    let counts = |horizon_hours: u64| {
        let horizon = Duration::from_secs(horizon_hours * 3600);
        let (store, tenant, experiment) = (&store, &tenant, &experiment);
        async move {
            let mut counts = store
                .experiment_counts(tenant, experiment, horizon, now())
                .await
                .unwrap();
            counts.sort_by_key(|c| (c.arm.as_str(), c.status.as_str()));
            counts
                .into_iter()
                .map(|c| (c.arm, c.status, c.count, c.maturing, c.final_by_horizon))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        counts(48).await,
        [
            (challenger, Status::Rejected, 1, 1, 0),
            (champion, Status::Approved, 2, 0, 1),
            (champion, Status::Pending, 1, 0, 0),
        ]
    );
    // A 96-hour horizon: all still maturing. A two-hour one: e2's decision came after it.
    assert_eq!(
        counts(96).await,
        [
            (challenger, Status::Rejected, 1, 1, 0),
            (champion, Status::Approved, 2, 2, 0),
            (champion, Status::Pending, 1, 1, 0),
        ]
    );
    assert_eq!(
        counts(2).await,
        [
            (challenger, Status::Rejected, 1, 1, 0),
            (champion, Status::Approved, 2, 0, 1),
            (champion, Status::Pending, 1, 0, 0),
        ]
    );
    let horizon = Duration::from_secs(3600);
    let other = store.experiment_counts(&tenant, "other", horizon, now());
    assert_eq!(other.await.unwrap(), []);

    // A stop is written once, with its event; the second writer learns it was first.
    let at = now();
    let event = new_event(
        &tenant,
        &format!("experiment:{experiment}"),
        "experiment.stopped",
        at,
    );
    assert!(
        store
            .stop_experiment(&tenant, &experiment, at, Some(&event))
            .await
            .unwrap()
    );
    assert!(
        !store
            .stop_experiment(&tenant, &experiment, at, None)
            .await
            .unwrap()
    );
    let stopped = store.stopped_experiments().await.unwrap();
    assert!(stopped.contains(&(tenant.clone(), experiment.clone(), at)));
    let filter = EventFilter {
        verification_id: Some(format!("experiment:{experiment}")),
        limit: 10,
        ..EventFilter::default()
    };
    assert_eq!(store.list_events(&tenant, &filter).await.unwrap().len(), 1);

    // The routing inputs of a period: every row of the tenant created in it, and no other.
    let first = rows[0].verification.created_at;
    let until = now() + chrono::Duration::seconds(1);
    let mut routed = store
        .routed_page(&tenant, first, until, "", 3)
        .await
        .unwrap();
    // Pages of 3: the next page starts after the last id.
    assert_eq!(routed.len(), 3);
    let after = routed[2].id.clone();
    let rest = store
        .routed_page(&tenant, first, until, &after, 3)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest[0].id > after);
    routed.extend(rest);
    routed.sort_by(|a, b| a.subject_id.cmp(&b.subject_id));
    assert_eq!(routed.len(), 5);
    assert_eq!(routed[0].subject_id, "subject-e1");
    assert_eq!(routed[0].country.as_deref(), Some("CL"));
    assert_eq!(routed[0].reason, Some(kyc_core::RoutingReason::Experiment));
    assert_eq!(routed[4].reason, None);
    let later = now() + chrono::Duration::seconds(1);
    assert_eq!(
        store
            .routed_page(&tenant, later, later + chrono::Duration::days(1), "", 10)
            .await
            .unwrap(),
        []
    );

    // Provider errors count on their own day; circuit openings are found by overlap.
    let day = at.date_naive().to_string();
    for _ in 0..2 {
        store
            .count_provider_error(&tenant, "p-errors", "AR", at)
            .await
            .unwrap();
    }
    let errors: Vec<(String, u64)> = store
        .stats(&tenant, &day, &day)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.provider, r.provider_errors))
        .collect();
    assert_eq!(
        errors,
        [("p-errors".to_string(), 2), ("x-p1".to_string(), 0)]
    );
    let provider = format!("circuit-{tenant}");
    let opened = at - chrono::Duration::seconds(30);
    store
        .record_circuit_opening(&provider, opened, at)
        .await
        .unwrap();
    let provider = &provider;
    let overlapping = |start, end| async move {
        store
            .circuit_openings(start, end)
            .await
            .unwrap()
            .into_iter()
            .filter(|(p, _, _)| p == provider)
            .count()
    };
    assert_eq!(overlapping(at - chrono::Duration::seconds(10), at).await, 1);
    assert_eq!(overlapping(at, at + chrono::Duration::seconds(10)).await, 0);
}

async fn stats_count_what_was_started_and_how_it_ended(store: &SqlStore) {
    let tenant = format!("s_{}", ulid::Ulid::generate());
    let row = |reference: &str, provider: &str, country: &str, status: Status| {
        let mut row = sample(&tenant, reference, reference);
        row.verification.provider = provider.into();
        row.verification.status = status;
        row.country = Some(country.into());
        row
    };
    let a = row("a", "stats-p1", "CL", Status::Pending);
    let b = row("b", "stats-p1", "AR", Status::Approved);
    let mut c = row("c", "stats-p2", "CL", Status::Pending);
    c.verification.routing = Some(kyc_core::RoutingRecord {
        reason: kyc_core::RoutingReason::Fallback,
        tried: vec!["stats-p1".into()],
        experiment: None,
        arm: None,
        shares: None,
    });
    for r in [&a, &b, &c] {
        store.insert(r, &created(r), lapsed_never()).await.unwrap();
    }
    // A replayed reference is not a second start.
    let again = row("a", "stats-p1", "CL", Status::Pending);
    store
        .insert(&again, &created(&again), lapsed_never())
        .await
        .unwrap();
    // a ends approved (counted once, however often the change is tried); c only moves on.
    let approved = moved(&a, Status::Approved);
    for _ in 0..2 {
        store
            .save_change(&tenant, Status::Pending, &approved, None, None)
            .await
            .unwrap();
    }
    store
        .save_change(
            &tenant,
            Status::Pending,
            &moved(&c, Status::InProgress),
            None,
            None,
        )
        .await
        .unwrap();

    let today = a.verification.created_at.date_naive().to_string();
    let expect = |provider: &str, country: &str, counts: [u64; 3]| StatsRow {
        provider: provider.into(),
        country: country.into(),
        started: counts[0],
        fallbacks: counts[1],
        approved: counts[2],
        first_day: Some(today.clone()),
        ..StatsRow::default()
    };
    assert_eq!(
        store.stats(&tenant, &today, &today).await.unwrap(),
        [
            expect("stats-p1", "AR", [1, 0, 1]),
            expect("stats-p1", "CL", [1, 0, 1]),
            expect("stats-p2", "CL", [1, 1, 0])
        ]
    );
    // b decided at once; a when its change was saved, in the bucket of its time.
    let took = approved.completed_at.unwrap() - a.verification.created_at;
    let bucket = decision_bucket(took.num_milliseconds());
    let decided = |country: &str, bucket| DecisionCount {
        provider: "stats-p1".into(),
        country: country.into(),
        bucket,
        decided: 1,
    };
    assert_eq!(
        store.decision_times(&tenant, &today, &today).await.unwrap(),
        [decided("AR", 0), decided("CL", bucket)]
    );
    // Other days, and other tenants, see none of it.
    assert_eq!(
        store
            .stats(&tenant, "2000-01-01", "2000-12-31")
            .await
            .unwrap(),
        []
    );
    assert_eq!(store.stats("nobody", &today, &today).await.unwrap(), []);
    assert_eq!(
        store
            .decision_times("nobody", &today, &today)
            .await
            .unwrap(),
        []
    );
}

#[test]
fn decision_times_merge_into_one_pair_per_bucket() {
    assert_eq!(with_decision_time("", 12), "12:1");
    assert_eq!(with_decision_time("12:1", 12), "12:2");
    // Out of order or repeated pairs are merged; a pair that does not read is dropped.
    assert_eq!(with_decision_time("30:2,4:1,x:y,4:3", 7), "4:4,7:1,30:2");
    assert_eq!(decision_times_of("").count(), 0);
}

/// A pending event of `line`, written and due at `at`.
fn new_event(tenant: &str, line: &str, event_type: &'static str, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        id: format!("evt_{}", ulid::Ulid::generate()),
        tenant: tenant.to_string(),
        verification_id: line.to_string(),
        event_type,
        payload: "{}".into(),
        created_at: at,
        due_at: at,
    }
}

/// Claims are fenced: an attempt that outlived its lease cannot undo what the next claim's
/// attempt or a redeliver did, and attempt numbers never collide.
async fn outbox_fencing(store: &SqlStore) {
    let tenant = format!("f_{}", ulid::Ulid::generate());
    let mut row = sample(&tenant, "ref-f", "sub-f");
    // An instance of its own, so the suite's counts of p1 stay as they were.
    row.verification.provider = "p-fenced".into();
    store
        .insert(&row, &created(&row), lapsed_never())
        .await
        .unwrap();
    let at = now();
    let event = new_event(&tenant, &row.verification.id, "verification.updated", at);
    let next = moved(&row, Status::InProgress);
    let change = change(
        &row,
        Some(Status::Pending),
        Status::InProgress,
        Source::Webhook,
    );
    assert!(
        store
            .save_change(&tenant, Status::Pending, &next, Some(&change), Some(&event))
            .await
            .unwrap()
    );
    let due_at = |t| {
        let id = event.id.clone();
        async move {
            store
                .due_events(t, 100_000)
                .await
                .unwrap()
                .into_iter()
                .find(|d| d.id == id)
        }
    };
    let attempt = |code| Attempt {
        at: now(),
        status_code: Some(code),
        latency_ms: 1,
        error: None,
    };
    // A claims with a short lease; B claims once it has run out.
    let t0 = now() + chrono::Duration::seconds(1);
    let for_a = due_at(t0).await.unwrap();
    let short = t0 + chrono::Duration::milliseconds(10);
    assert!(store.claim_event(&for_a, "A", t0, short).await.unwrap());
    let t1 = t0 + chrono::Duration::seconds(1);
    let for_b = due_at(t1).await.expect("due again once A's lease ran out");
    assert!(
        store
            .claim_event(&for_b, "B", t1, t1 + chrono::Duration::seconds(60))
            .await
            .unwrap()
    );
    // A delivered: that stands. B's failure, recorded after, does not undo it.
    assert!(
        store
            .record_attempt(
                &for_a,
                "A",
                "https://receiver.test/hook",
                &attempt(204),
                AttemptOutcome::Delivered
            )
            .await
            .unwrap()
            .stood
    );
    let retry = AttemptOutcome::RetryAt(t1 + chrono::Duration::seconds(5));
    assert!(
        !store
            .record_attempt(
                &for_b,
                "B",
                "https://receiver.test/hook",
                &attempt(500),
                retry
            )
            .await
            .unwrap()
            .stood,
        "B's write lost the claim"
    );
    let logged = store.get_event(&tenant, &event.id).await.unwrap().unwrap();
    assert_eq!(logged.state, EventState::Delivered);
    assert_eq!(
        logged.attempts.len(),
        2,
        "both attempts are in the log, numbered apart"
    );
    assert!(due_at(t1 + chrono::Duration::seconds(60)).await.is_none());

    // A redeliver while an attempt is in flight stands: the attempt's late outcome, a
    // delivery or a failure, changes nothing.
    assert!(store.redeliver(&tenant, &event.id, t1).await.unwrap());
    let t2 = t1 + chrono::Duration::seconds(1);
    let for_c = due_at(t2).await.unwrap();
    assert!(
        store
            .claim_event(&for_c, "C", t2, t2 + chrono::Duration::seconds(60))
            .await
            .unwrap()
    );
    assert!(store.redeliver(&tenant, &event.id, t2).await.unwrap());
    for outcome in [AttemptOutcome::Delivered, AttemptOutcome::Failed] {
        assert!(
            !store
                .record_attempt(
                    &for_c,
                    "C",
                    "https://receiver.test/hook",
                    &attempt(204),
                    outcome
                )
                .await
                .unwrap()
                .stood
        );
    }
    let logged = store.get_event(&tenant, &event.id).await.unwrap().unwrap();
    assert_eq!(logged.state, EventState::Pending, "the redeliver stands");
    assert!(due_at(t2).await.is_some());
}

/// The due scan reads heads only: an event behind an earlier pending one of its line is not
/// due until that one is done; a parked event is not due until resumed; a redelivered event
/// earlier in its line takes the head's place.
async fn outbox_heads(store: &SqlStore) {
    let tenant = format!("h_{}", ulid::Ulid::generate());
    let mut row = sample(&tenant, "ref-h", "sub-h");
    row.verification.provider = "p-heads".into();
    store
        .insert(&row, &created(&row), lapsed_never())
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut current = row.verification.clone();
    for to in [Status::InProgress, Status::InReview, Status::Approved] {
        let at = now();
        let event = new_event(&tenant, &row.verification.id, "verification.updated", at);
        let next = Verification {
            status: to,
            updated_at: at,
            completed_at: to.is_final().then_some(at),
            ..current.clone()
        };
        let stored = StoredVerification {
            verification: current.clone(),
            ..row.clone()
        };
        let change = change(&stored, Some(current.status), to, Source::Webhook);
        assert!(
            store
                .save_change(&tenant, current.status, &next, Some(&change), Some(&event))
                .await
                .unwrap()
        );
        current = next;
        events.push(event.id);
    }
    let soon = now() + chrono::Duration::seconds(1);
    let due = || async {
        store
            .due_events(soon, 100_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|d| events.contains(&d.id))
            .collect::<Vec<_>>()
    };
    let deliver = |event: DueEvent, token: &'static str| async move {
        assert!(store.claim_event(&event, token, soon, soon).await.unwrap());
        let attempt = Attempt {
            at: soon,
            status_code: Some(204),
            latency_ms: 1,
            error: None,
        };
        assert!(
            store
                .record_attempt(
                    &event,
                    token,
                    "https://receiver.test/hook",
                    &attempt,
                    AttemptOutcome::Delivered
                )
                .await
                .unwrap()
                .stood
        );
    };
    let ids = |due: &[DueEvent]| due.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    let first = due().await;
    assert_eq!(ids(&first), [events[0].clone()], "only the head is due");
    deliver(first[0].clone(), "one").await;
    let second = due().await;
    assert_eq!(ids(&second), [events[1].clone()]);
    // The tenant's endpoint does not work: the head is parked, and nothing of the line is due.
    assert!(
        store
            .claim_event(&second[0], "two", soon, soon)
            .await
            .unwrap()
    );
    store.park_event(&events[1], "two").await.unwrap();
    assert!(due().await.is_empty());
    assert_eq!(store.resume_parked(&tenant).await.unwrap(), 1);
    assert_eq!(ids(&due().await), [events[1].clone()]);
    // Redelivering the first takes the head's place from the second.
    assert!(store.redeliver(&tenant, &events[0], soon).await.unwrap());
    let again = due().await;
    assert_eq!(ids(&again), [events[0].clone()]);
    deliver(again[0].clone(), "three").await;
    assert_eq!(ids(&due().await), [events[1].clone()]);
}

/// Tenant-level events are lines of their tenant: one tenant's experiment event waiting on a
/// failing receiver never holds back another tenant's event of an experiment of the same
/// name.
async fn tenant_lines(store: &SqlStore) {
    let run = ulid::Ulid::generate().to_string();
    let (a, b) = (format!("la_{run}"), format!("lb_{run}"));
    let at = now();
    let stopped =
        |tenant: &str| new_event(tenant, "experiment:same-name", "experiment.stopped", at);
    let (for_a, for_b) = (stopped(&a), stopped(&b));
    assert!(
        store
            .stop_experiment(&a, "same-name", at, Some(&for_a))
            .await
            .unwrap()
    );
    // A's event is tried and its receiver fails: it waits for a retry in an hour.
    let t0 = at + chrono::Duration::seconds(1);
    let due = store.due_events(t0, 100_000).await.unwrap();
    let a_due = due.iter().find(|d| d.id == for_a.id).unwrap().clone();
    assert!(
        store
            .claim_event(&a_due, "A", t0, t0 + chrono::Duration::seconds(60))
            .await
            .unwrap()
    );
    let failed = Attempt {
        at: t0,
        status_code: Some(500),
        latency_ms: 1,
        error: None,
    };
    let in_an_hour = AttemptOutcome::RetryAt(t0 + chrono::Duration::hours(1));
    assert!(
        store
            .record_attempt(
                &a_due,
                "A",
                "https://receiver.test/hook",
                &failed,
                in_an_hour
            )
            .await
            .unwrap()
            .stood
    );
    // B's experiment of the same name stops later: its event is due at once.
    let later = NewEvent {
        created_at: t0,
        due_at: t0,
        ..for_b
    };
    assert!(
        store
            .stop_experiment(&b, "same-name", t0, Some(&later))
            .await
            .unwrap()
    );
    let due = store
        .due_events(t0 + chrono::Duration::seconds(1), 100_000)
        .await
        .unwrap();
    assert!(
        due.iter().any(|d| d.id == later.id),
        "B is not held behind A"
    );
    assert!(!due.iter().any(|d| d.id == for_a.id));
}

/// A create's reservation: unique per (tenant, reference), every change compare-and-set on
/// its beat, and gone with the verification's insert.
async fn create_reservations(store: &SqlStore) {
    let tenant = format!("r_{}", ulid::Ulid::generate());
    let at = now();
    let attempt = CreateAttempt {
        tenant: tenant.clone(),
        reference: "ref-r".into(),
        request_hash: "hash-ref-r".into(),
        state: AttemptState::Calling,
        provider: "p1".into(),
        routing: kyc_core::RoutingRecord {
            reason: kyc_core::RoutingReason::Default,
            tried: Vec::new(),
            experiment: None,
            arm: None,
            shares: None,
        },
        beat: 0,
        subject_id: "sub-r".into(),
        country: "CL".into(),
        metadata: serde_json::json!({"order": "1"}).as_object().cloned(),
        ambiguous_at: None,
        created_at: at,
        updated_at: at,
    };
    assert!(matches!(
        store.reserve(&attempt).await.unwrap(),
        Reserved::Fresh
    ));
    let other_body = CreateAttempt {
        request_hash: "another body".into(),
        ..attempt.clone()
    };
    match store.reserve(&other_body).await.unwrap() {
        Reserved::Existing(existing) => assert_eq!(*existing, attempt),
        other => panic!("{other:?}"),
    }
    // A write on a stale beat changes nothing; on the current one it bumps the beat.
    let ambiguous = CreateAttempt {
        state: AttemptState::Ambiguous,
        ambiguous_at: Some(now()),
        updated_at: now(),
        ..attempt.clone()
    };
    assert!(!store.update_attempt(&ambiguous, 7).await.unwrap());
    assert!(store.update_attempt(&ambiguous, 0).await.unwrap());
    assert!(!store.update_attempt(&ambiguous, 0).await.unwrap());
    let read = store.attempt(&tenant, "ref-r").await.unwrap().unwrap();
    assert_eq!(
        read,
        CreateAttempt {
            beat: 1,
            ..ambiguous.clone()
        }
    );
    let unsettled = store.unsettled_attempts(10_000).await.unwrap();
    assert!(unsettled.iter().any(|a| a.tenant == tenant));
    let open = CreateAttempt {
        state: AttemptState::Open,
        ambiguous_at: None,
        ..read.clone()
    };
    assert!(store.update_attempt(&open, 1).await.unwrap());
    let unsettled = store.unsettled_attempts(10_000).await.unwrap();
    assert!(
        !unsettled.iter().any(|a| a.tenant == tenant),
        "open is settled"
    );
    // The verification's insert removes it.
    let mut row = sample(&tenant, "ref-r", "sub-r");
    // An instance of its own, so the suite's counts of p1 stay as they were.
    row.verification.provider = "p-reserved".into();
    store
        .insert(&row, &created(&row), lapsed_never())
        .await
        .unwrap();
    assert_eq!(store.attempt(&tenant, "ref-r").await.unwrap(), None);
    assert!(matches!(
        store.reserve(&attempt).await.unwrap(),
        Reserved::Fresh
    ));
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    suite(&store).await;
    create_reservations(&store).await;
    outbox_fencing(&store).await;
    outbox_heads(&store).await;
    tenant_lines(&store).await;
    stats_count_what_was_started_and_how_it_ended(&store).await;
    experiments_replays_and_provider_failures(&store).await;
    instance_outcomes_at_the_horizon(&store).await;
    // Reopening runs the migrations again harmlessly and keeps the data.
    drop(store);
    let again = SqlStore::connect(&url).await.unwrap();
    assert_eq!(again.unfinished_count("p1").await.unwrap(), 3);
    // An upgrade from before decision times were kept in the day's row moves the bucket
    // counts there.
    sqlx::raw_sql(
        "DELETE FROM _sqlx_migrations WHERE version = 11; \
         ALTER TABLE stats_daily DROP COLUMN decided_at_once; \
         ALTER TABLE stats_daily DROP COLUMN decision_times; \
         CREATE TABLE stats_decisions (tenant TEXT NOT NULL, day TEXT NOT NULL, \
         provider TEXT NOT NULL, country TEXT NOT NULL, bucket BIGINT NOT NULL, \
         decided BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (tenant, day, provider, country, bucket)); \
         INSERT INTO stats_decisions SELECT tenant, day, provider, country, 9, 1 FROM stats_daily; \
         INSERT INTO stats_decisions SELECT tenant, day, provider, country, 7, 2 FROM stats_daily",
    )
    .execute(&again.pool)
    .await
    .unwrap();
    drop(again);
    let again = SqlStore::connect(&url).await.unwrap();
    let moved: Vec<String> = sqlx::query("SELECT decision_times FROM stats_daily")
        .fetch_all(&again.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get(0).unwrap())
        .collect();
    assert!(!moved.is_empty());
    for times in &moved {
        let mut pairs: Vec<(u32, u64)> = decision_times_of(times).collect();
        pairs.sort_unstable();
        assert_eq!(pairs, [(7, 2), (9, 1)], "{times}");
    }
    // An upgrade from before the daily counts counts what is already stored, country unknown.
    sqlx::raw_sql(
        "DELETE FROM _sqlx_migrations WHERE version = 7; DROP TABLE stats_daily; \
         ALTER TABLE verifications DROP COLUMN country",
    )
    .execute(&again.pool)
    .await
    .unwrap();
    drop(again);
    let upgraded = SqlStore::connect(&url).await.unwrap();
    let pool = &upgraded.pool;
    let one = |sql: &'static str| async move {
        let n: i64 = sqlx::query(sql)
            .fetch_one(pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        n
    };
    let stored = one("SELECT COUNT(*) FROM verifications").await;
    assert!(stored > 0);
    assert_eq!(
        one("SELECT CAST(SUM(started) AS BIGINT) FROM stats_daily").await,
        stored
    );
    assert_eq!(
        one("SELECT COUNT(*) FROM stats_daily WHERE country <> ''").await,
        0
    );
    assert_eq!(
        one("SELECT CAST(SUM(approved) AS BIGINT) FROM stats_daily").await,
        one("SELECT COUNT(*) FROM verifications WHERE status = 'approved'").await
    );
}

/// A PostgreSQL database to test against: `KYC_TEST_POSTGRES_URL`, which `.ci/run` sets.
pub(super) fn postgres_url() -> String {
    std::env::var("KYC_TEST_POSTGRES_URL")
        .expect("this test needs PostgreSQL: set KYC_TEST_POSTGRES_URL=postgres://user@host/db")
}

/// A schema of its own on the test database, named `{prefix}_<ulid>`: the rows a test makes
/// there meet no other test's, and go with [`PgSchema::drop`].
pub(super) struct PgSchema {
    admin: sqlx::AnyPool,
    name: String,
    /// The database URL with the schema as its search path.
    pub url: String,
}

impl PgSchema {
    pub(super) async fn create(prefix: &str) -> PgSchema {
        let base = postgres_url();
        let name = format!(
            "{prefix}_{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(&base).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        PgSchema { admin, name, url }
    }

    pub(super) async fn drop(self) {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.name)))
            .execute(&self.admin)
            .await
            .unwrap();
        self.admin.close().await;
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn postgres_store() {
    let store = SqlStore::connect(&postgres_url()).await.unwrap();
    suite(&store).await;
    create_reservations(&store).await;
    outbox_fencing(&store).await;
    outbox_heads(&store).await;
    tenant_lines(&store).await;
    stats_count_what_was_started_and_how_it_ended(&store).await;
    experiments_replays_and_provider_failures(&store).await;
    instance_outcomes_at_the_horizon(&store).await;
}
