//! PostgreSQL reads by key on kept connections: a kept connection that broke is replaced, and
//! the read still answers.

use super::tests::{PgSchema, created, lapsed_never, postgres_url, sample};
use super::*;

#[tokio::test]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn a_read_on_a_kept_connection_that_broke_is_made_on_another() {
    let schema = PgSchema::create("held").await;
    // A name of its own, so that only this store's sessions are ended below.
    let name = format!("held_{}", ulid::Ulid::generate().to_string().to_lowercase());
    let store = SqlStore::connect(&format!("{}&application_name={name}", schema.url))
        .await
        .unwrap();
    let row = sample("t-held", "ref-held", "sub-held");
    store
        .insert(&row, &created(&row), lapsed_never())
        .await
        .unwrap();
    let id = row.verification.id.clone();
    // Reads at once, so that several connections are kept.
    let get = || store.get("t-held", &id);
    let (a, b, c) = tokio::join!(get(), get(), get());
    for read in [a, b, c] {
        assert_eq!(read.unwrap().as_ref(), Some(&row));
    }
    // The database ends every session of this store: the kept connections are now broken, and
    // nothing told the store.
    let admin = sqlx::AnyPool::connect(&postgres_url()).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&name)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(ended.len() >= 2, "{ended:?}");
    admin.close().await;
    for _ in 0..4 {
        assert_eq!(store.get("t-held", &id).await.unwrap().as_ref(), Some(&row));
    }
    schema.drop().await;
}
