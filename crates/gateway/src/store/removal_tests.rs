//! Erasure under timing, on SQLite and PostgreSQL: a create for the subject that lands between
//! the erasure's read and its write, and an erasure that commits between the sealer's read of a
//! verification and its giving the verification a salt.

use super::tests::{PgSchema, created, lapsed_never, sample};
use super::*;

async fn erasure_races(store: &SqlStore) {
    let first = sample("t-race", "ref-race-1", "sub-race");
    store
        .insert(&first, &created(&first), lapsed_never())
        .await
        .unwrap();
    let mut finished = first.verification.clone();
    finished.status = Status::Approved;
    finished.completed_at = Some(now());
    assert!(
        store
            .save_change("t-race", Status::Pending, &finished, None, None)
            .await
            .unwrap()
    );
    let (held, _) = store.holdings("t-race", "sub-race").await.unwrap();
    let expected: Vec<String> = held.iter().map(|h| h.verification_id.clone()).collect();
    assert_eq!(expected, std::slice::from_ref(&first.verification.id));

    // The sealer read the creation row while the verification still held the subject...
    let stale = store
        .history_page("t-race", "chg_", "chg_~", 10)
        .await
        .unwrap();
    assert_eq!(stale.len(), 1);
    assert!(stale[0].audit_salt.is_none());

    // ...a create for the subject lands before the erasure writes: it writes nothing.
    let second = sample("t-race", "ref-race-2", "sub-race");
    store
        .insert(&second, &created(&second), lapsed_never())
        .await
        .unwrap();
    assert!(
        !store
            .erase_subject("t-race", "sub-race", &expected, None)
            .await
            .unwrap()
    );
    let (now_held, _) = store.holdings("t-race", "sub-race").await.unwrap();
    assert_eq!(now_held.len(), 2, "nothing erased");
    // Over what the subject holds now, with one still in flight: nothing either.
    let both: Vec<String> = now_held.iter().map(|h| h.verification_id.clone()).collect();
    assert!(
        !store
            .erase_subject("t-race", "sub-race", &both, None)
            .await
            .unwrap()
    );
    let mut cancelled = second.verification.clone();
    cancelled.status = Status::Cancelled;
    cancelled.completed_at = Some(now());
    store
        .save_change("t-race", Status::Pending, &cancelled, None, None)
        .await
        .unwrap();
    assert!(
        store
            .erase_subject("t-race", "sub-race", &both, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .holdings("t-race", "sub-race")
            .await
            .unwrap()
            .0
            .is_empty()
    );

    // The sealer, with its read from before the erasure, gives the erased verification no salt
    // (the record's digest of the old subject id stays unlinkable).
    let stale_row = stale[0].clone();
    let salt = store
        .write(move |tx| Box::pin(async move { super::audit::salt_of(tx, &stale_row).await }))
        .await
        .unwrap();
    assert_eq!(salt, None);
    let salts: Vec<Option<String>> =
        sqlx::query_scalar("SELECT audit_salt FROM verifications WHERE tenant = 't-race'")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    assert_eq!(salts, [None, None]);
    // Sealing now chains every row, erased or not, and the chain reads back whole.
    assert!(store.seal("t-race", 100).await.unwrap() >= 4);
    let chain = store.chain_page("t-race", 0, 100).await.unwrap();
    let mut prev = GENESIS.to_string();
    for row in &chain {
        let record = row.record.as_deref().unwrap();
        assert_eq!(row.prev_hash.as_deref(), Some(prev.as_str()));
        assert_eq!(
            row.hash.as_deref(),
            Some(chain_hash(&prev, record).as_str())
        );
        assert!(!record.contains("sub-race"), "{record}");
        prev = row.hash.clone().unwrap();
    }
    assert_eq!(
        store.audit_head("t-race").await.unwrap().unwrap().hash,
        prev
    );
    // Sealing the erasure's tombstones gave the erased verifications no salt either: one beside
    // a creation row sealed with the old subject's digest would make the chain read as broken.
    let salts: Vec<Option<String>> =
        sqlx::query_scalar("SELECT audit_salt FROM verifications WHERE tenant = 't-race'")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    assert_eq!(salts, [None, None]);
}

#[tokio::test]
async fn erasure_races_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    erasure_races(&SqlStore::connect(&url).await.unwrap()).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn erasure_races_on_postgresql() {
    let schema = PgSchema::create("race").await;
    erasure_races(&SqlStore::connect(&schema.url).await.unwrap()).await;
    schema.drop().await;
}
