//! Group commit on SQLite: writes that wait together commit together, and a write that fails
//! fails alone.

use super::tests::{count, created, lapsed_never, sample};
use super::*;
use std::sync::Arc;

fn group(store: &SqlStore) -> &super::group_commit::GroupCommit {
    match &store.writer {
        Writer::Sqlite(group) => group,
        Writer::Postgres => panic!("a SQLite store"),
    }
}

#[tokio::test]
async fn writes_waiting_together_commit_once_and_a_failing_one_fails_only_its_caller() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    let taken = sample("t-group", "ref-taken", "sub-taken");
    store
        .insert(&taken, &created(&taken), lapsed_never())
        .await
        .unwrap();

    // A write that holds the writer thread until released, so that the next ones queue.
    let (holding, held) = std::sync::mpsc::channel::<()>();
    let (started, running) = std::sync::mpsc::channel::<()>();
    let holder = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .write(move |_tx| {
                    started.send(()).unwrap();
                    let _ = held.recv();
                    Box::pin(async { Ok(()) })
                })
                .await
        }
    });
    tokio::task::spawn_blocking(move || running.recv().unwrap())
        .await
        .unwrap();
    let commits_before = group(&store).commits();

    // Seven creates, and one whose id is already taken under another reference: its first
    // statement fails on the primary key.
    let mut rows: Vec<StoredVerification> = (0..7)
        .map(|i| sample("t-group", &format!("ref-{i}"), &format!("sub-{i}")))
        .collect();
    let mut clash = sample("t-group", "ref-clash", "sub-clash");
    clash.verification.id = taken.verification.id.clone();
    rows.insert(3, clash);
    let inserts: Vec<_> = rows
        .iter()
        .cloned()
        .map(|row| {
            let store = store.clone();
            tokio::spawn(async move { store.insert(&row, &created(&row), lapsed_never()).await })
        })
        .collect();
    while group(&store).queued() < rows.len() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    holding.send(()).unwrap();
    holder.await.unwrap().unwrap();

    let mut answers = Vec::new();
    for insert in inserts {
        answers.push(insert.await.unwrap());
    }
    for (row, answer) in rows.iter().zip(&answers) {
        let stored = store
            .find_by_reference("t-group", &row.verification.reference)
            .await
            .unwrap();
        if row.verification.reference == "ref-clash" {
            let error = answer.as_ref().expect_err("the clashing insert fails");
            assert!(error.is_unique_violation(), "{error}");
            assert_eq!(stored, None, "nothing of the failed write is kept");
        } else {
            assert!(matches!(answer, Ok(Inserted::Created)), "{answer:?}");
            assert_eq!(stored.as_ref(), Some(row));
            assert_eq!(
                count(&store, "status_changes", &row.verification.id).await,
                1
            );
        }
    }
    // The holder's transaction, then one for the eight.
    assert_eq!(group(&store).commits() - commits_before, 2);
    // The row whose id was taken is untouched.
    assert_eq!(
        store.get("t-group", &taken.verification.id).await.unwrap(),
        Some(taken)
    );
}
