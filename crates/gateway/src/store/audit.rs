//! The tamper-evident history: each tenant's history rows form one hash chain.
//!
//! Writers insert history rows as before, unsealed (no place in the chain yet), so a change costs
//! nothing more on its way in. The sealer ([`AuditStore::seal`], run by a job on every replica)
//! takes a tenant's unsealed rows in order, under a lock on the tenant's chain head, and gives
//! each its place (`seq`), its canonical [`AuditRecord`] and the hash chaining it to the row
//! before. A record holds salted digests of the subject id, the provider reference and a
//! reviewer's note, never the values: erasing the values and the verification's salt leaves
//! every hash checkable and the digests unlinkable.

use super::*;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use utoipa::ToSchema;

/// The hash before a chain's first row.
pub const GENESIS: &str = "";

/// Where a tenant's chain ends.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AuditHead {
    /// How many rows the chain holds (the last row's `seq`).
    pub seq: u64,
    /// The last row's hash (hex SHA-256): keep it somewhere the gateway cannot write, and
    /// `kyc-gateway audit verify` shows whether the chain still leads to it.
    pub hash: String,
    /// When the chain last grew.
    pub sealed_at: DateTime<Utc>,
}

/// One history row with what the chain needs of its verification (absent once the
/// verification is removed).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    /// Its place in the tenant's chain; none until sealed.
    pub seq: Option<i64>,
    /// `chg_` + ULID.
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The verification.
    pub verification_id: String,
    /// `change` or `decision`.
    pub kind: String,
    /// Status before (none at creation).
    pub from_status: Option<String>,
    /// Status after.
    pub to_status: String,
    /// What caused it.
    pub source: String,
    /// The API key's name behind a manual decision.
    pub actor: Option<String>,
    /// A reviewer's reason.
    pub note: Option<String>,
    /// When it was recorded, as stored.
    pub at: String,
    /// The sealed record, its previous hash and its hash.
    pub record: Option<String>,
    /// See `record`.
    pub prev_hash: Option<String>,
    /// See `record`.
    pub hash: Option<String>,
    /// The verification's provider instance.
    pub provider: Option<String>,
    /// The verification's provider reference.
    pub provider_reference: Option<String>,
    /// The verification's subject id.
    pub subject_id: Option<String>,
    /// The verification's routing, as stored (JSON).
    pub routing: Option<String>,
    /// The verification's salt.
    pub audit_salt: Option<String>,
}

impl AuditRow {
    /// Whether this row created its verification (where the routing decision is recorded).
    pub fn is_creation(&self) -> bool {
        self.kind == "change" && self.from_status.is_none()
    }

    /// Why routing chose the instance, from the stored routing.
    pub fn routing_reason(&self) -> Option<String> {
        let routing: serde_json::Value = serde_json::from_str(self.routing.as_deref()?).ok()?;
        routing["reason"].as_str().map(str::to_owned)
    }
}

/// What a chain row vouches for, encoded canonically (these fields in this order, compact
/// JSON). Version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The encoding's version.
    pub v: u32,
    /// The tenant.
    pub tenant: String,
    /// The history row's id.
    pub id: String,
    /// The verification.
    pub verification_id: String,
    /// `change` or `decision`.
    pub kind: String,
    /// Status before.
    pub from: Option<String>,
    /// Status after.
    pub to: String,
    /// What caused it.
    pub source: String,
    /// Who, for a manual decision.
    pub actor: Option<String>,
    /// Salted digest of a reviewer's note.
    pub note: Option<String>,
    /// When, as stored.
    pub at: String,
    /// At creation: the provider instance chosen.
    pub provider: Option<String>,
    /// At creation: why routing chose it.
    pub routing: Option<String>,
    /// At creation: salted digest of the subject id.
    pub subject: Option<String>,
    /// At creation: salted digest of the provider reference.
    pub provider_reference: Option<String>,
}

/// Hex SHA-256 of the parts joined by newlines.
fn sha256_hex(parts: &[&str]) -> String {
    hex::encode(Sha256::digest(parts.join("\n").as_bytes()))
}

/// A row's hash: over the hash before it and its record.
pub fn chain_hash(prev_hash: &str, record: &str) -> String {
    sha256_hex(&[prev_hash, record])
}

impl AuditRecord {
    /// The record of `row`, its digests salted with `salt` (none: the verification is gone or
    /// erased, and so are the values).
    pub fn of(row: &AuditRow, salt: Option<&str>) -> AuditRecord {
        let digest = |value: &Option<String>| Some(sha256_hex(&[salt?, value.as_deref()?]));
        let creation = row.is_creation();
        AuditRecord {
            v: 1,
            tenant: row.tenant.clone(),
            id: row.id.clone(),
            verification_id: row.verification_id.clone(),
            kind: row.kind.clone(),
            from: row.from_status.clone(),
            to: row.to_status.clone(),
            source: row.source.clone(),
            actor: row.actor.clone(),
            note: digest(&row.note),
            at: row.at.clone(),
            provider: creation.then(|| row.provider.clone()).flatten(),
            routing: creation.then(|| row.routing_reason()).flatten(),
            subject: creation.then(|| digest(&row.subject_id)).flatten(),
            provider_reference: creation.then(|| digest(&row.provider_reference)).flatten(),
        }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a record is JSON")
    }
}

/// The columns every audit read selects, `c` the history row and `v` its verification.
const AUDIT_COLUMNS: &str = "c.seq, c.id, c.tenant, c.verification_id, c.kind, c.from_status, \
     c.to_status, c.source, c.actor, c.note, c.at, c.record, c.prev_hash, c.hash, v.provider, \
     v.provider_reference, v.subject_id, v.routing, v.audit_salt";

const AUDIT_FROM: &str = "FROM status_changes c LEFT JOIN verifications v \
     ON v.id = c.verification_id AND v.tenant = c.tenant";

/// A tenant's unsealed rows in order (also read by the query-plan test).
pub(super) fn unsealed_sql(limit: u32) -> String {
    format!(
        "SELECT {AUDIT_COLUMNS} {AUDIT_FROM} WHERE c.tenant = $1 AND c.seq IS NULL \
         ORDER BY c.id LIMIT {limit}"
    )
}

/// A page of a tenant's chain after a place (also read by the query-plan test).
pub(super) fn chain_page_sql(limit: u32) -> String {
    format!(
        "SELECT {AUDIT_COLUMNS} {AUDIT_FROM} WHERE c.tenant = $1 AND c.seq IS NOT NULL \
         AND c.seq > CAST($2 AS BIGINT) ORDER BY c.seq LIMIT {limit}"
    )
}

/// A page of a tenant's history between two ids (also read by the query-plan test).
pub(super) fn history_page_sql(limit: u32) -> String {
    format!(
        "SELECT {AUDIT_COLUMNS} {AUDIT_FROM} WHERE c.tenant = $1 AND c.id > $2 AND c.id < $3 \
         ORDER BY c.id LIMIT {limit}"
    )
}

/// The tamper-evident history's reads and the sealer's write.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Seals up to `limit` of the tenant's unsealed rows into its chain; how many.
    async fn seal(&self, tenant: &str, limit: u32) -> Result<u64, StoreError>;

    /// Where the tenant's chain ends; none before its first row is sealed.
    async fn audit_head(&self, tenant: &str) -> Result<Option<AuditHead>, StoreError>;

    /// Up to `limit` rows of the tenant's chain after place `after`, in order.
    async fn chain_page(
        &self,
        tenant: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError>;

    /// Up to `limit` of the tenant's history rows with ids after `after` and before `before`,
    /// in order, sealed or not.
    async fn history_page(
        &self,
        tenant: &str,
        after: &str,
        before: &str,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError>;

    /// How many of the tenant's rows wait for the sealer.
    async fn unsealed(&self, tenant: &str) -> Result<u64, StoreError>;
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn seal(&self, tenant: &str, limit: u32) -> Result<u64, StoreError> {
        // Most seconds there is nothing to seal: a read on the partial index says so without a
        // write.
        let waiting =
            sqlx::query("SELECT 1 FROM status_changes WHERE tenant = $1 AND seq IS NULL LIMIT 1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?;
        if waiting.is_none() {
            return Ok(0);
        }
        let tenant = tenant.to_owned();
        super::retrying_conflicts(|| {
            let tenant = tenant.clone();
            self.write(move |tx| Box::pin(async move { seal_in(tx, &tenant, limit).await }))
        })
        .await
    }

    async fn audit_head(&self, tenant: &str) -> Result<Option<AuditHead>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, hash, sealed_at FROM audit_heads WHERE tenant = $1 AND seq > 0",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let seq: i64 = row.try_get(0)?;
            Ok(AuditHead {
                seq: u64::try_from(seq).unwrap_or(0),
                hash: row.try_get(1)?,
                sealed_at: parse_ts(Some(row.try_get(2)?), "sealed_at")?
                    .expect("some in, some out"),
            })
        })
        .transpose()
    }

    async fn chain_page(
        &self,
        tenant: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(chain_page_sql(limit)))
            .bind(tenant)
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_row).collect()
    }

    async fn history_page(
        &self,
        tenant: &str,
        after: &str,
        before: &str,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let binds = vec![tenant.to_owned(), after.to_owned(), before.to_owned()];
        let rows = bound(history_page_sql(limit), binds)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_row).collect()
    }

    async fn unsealed(&self, tenant: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM status_changes WHERE tenant = $1 AND seq IS NULL",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        count(&row, "n")
    }
}

/// An audit row from a read (the [`AUDIT_COLUMNS`] in order).
fn audit_row(row: &AnyRow) -> Result<AuditRow, StoreError> {
    audit_row_from(row.try_get(0)?, |i, _| {
        Ok(row.try_get::<Option<String>, _>(i)?)
    })
}

/// The same, from a row read inside a write.
fn written_row(row: &write::Row) -> Result<AuditRow, StoreError> {
    let seq = match row.0.first() {
        Some(write::Cell::Int(n)) => Some(*n),
        _ => None,
    };
    audit_row_from(seq, |i, column| row.opt_text(i, column))
}

/// An audit row from its place and `text(i, column)`, column `i` of [`AUDIT_COLUMNS`] as text.
fn audit_row_from(
    seq: Option<i64>,
    text: impl Fn(usize, &'static str) -> Result<Option<String>, StoreError>,
) -> Result<AuditRow, StoreError> {
    let required = |i: usize, column: &'static str| {
        text(i, column)?.ok_or(StoreError::Corrupt {
            table: "status_changes",
            column,
        })
    };
    Ok(AuditRow {
        seq,
        id: required(1, "id")?,
        tenant: required(2, "tenant")?,
        verification_id: required(3, "verification_id")?,
        kind: required(4, "kind")?,
        from_status: text(5, "from_status")?,
        to_status: required(6, "to_status")?,
        source: required(7, "source")?,
        actor: text(8, "actor")?,
        note: text(9, "note")?,
        at: required(10, "at")?,
        record: text(11, "record")?,
        prev_hash: text(12, "prev_hash")?,
        hash: text(13, "hash")?,
        provider: text(14, "provider")?,
        provider_reference: text(15, "provider_reference")?,
        subject_id: text(16, "subject_id")?,
        routing: text(17, "routing")?,
        audit_salt: text(18, "audit_salt")?,
    })
}

/// One seal of a tenant's rows, inside a write: the head is locked first (on PostgreSQL), so
/// two replicas sealing the same tenant take turns and the second sees the first's rows sealed.
async fn seal_in(tx: &mut dyn WriteTx, tenant: &str, limit: u32) -> Result<u64, StoreError> {
    let at = ts(now());
    tx.execute(
        "INSERT INTO audit_heads (tenant, seq, hash, sealed_at) VALUES ($1, 0, $2, $3) \
         ON CONFLICT (tenant) DO NOTHING",
        &args![tenant, GENESIS, &at],
    )
    .await?;
    let lock = if tx.postgres() { " FOR UPDATE" } else { "" };
    let head = tx
        .fetch_optional(
            &format!("SELECT seq, hash FROM audit_heads WHERE tenant = $1{lock}"),
            &args![tenant],
        )
        .await?
        .ok_or(StoreError::Interrupted)?;
    let (mut seq, mut hash) = (head.int(0, "seq")?, head.text(1, "hash")?);
    let rows = tx.fetch_all(&unsealed_sql(limit), &args![tenant]).await?;
    let mut salts: HashMap<String, Option<String>> = HashMap::new();
    for row in &rows {
        let row = written_row(row)?;
        let salt = match salts.get(&row.verification_id) {
            Some(salt) => salt.clone(),
            None => {
                let salt = salt_of(tx, &row).await?;
                salts.insert(row.verification_id.clone(), salt.clone());
                salt
            }
        };
        let record = AuditRecord::of(&row, salt.as_deref()).encode();
        let next = chain_hash(&hash, &record);
        seq += 1;
        tx.execute(
            "UPDATE status_changes SET seq = $1, record = $2, prev_hash = $3, hash = $4 \
             WHERE id = $5 AND seq IS NULL",
            &args![seq, &record, &hash, &next, &row.id],
        )
        .await?;
        hash = next;
    }
    if !rows.is_empty() {
        tx.execute(
            "UPDATE audit_heads SET seq = $1, hash = $2, sealed_at = $3 WHERE tenant = $4",
            &args![seq, &hash, &at, tenant],
        )
        .await?;
    }
    Ok(rows.len() as u64)
}

/// The salt of the row's verification, given one now if it has none (rows from before the
/// chain); none when the verification is gone. The salt is stored only while the verification
/// still holds the values the record digests (and never once erased): on PostgreSQL an erasure may commit between the
/// sealer's read and this write, and a salt stored on an erased row would make the sealed digest
/// of the old subject id checkable again. Then the record gets no digests.
pub(super) async fn salt_of(
    tx: &mut dyn WriteTx,
    row: &AuditRow,
) -> Result<Option<String>, StoreError> {
    // An erased verification never gets one again: its rows sealed before the erasure digest
    // the subject id it had.
    let erased = row.subject_id.as_deref() == Some(super::ERASED_SUBJECT);
    if row.audit_salt.is_some() || row.subject_id.is_none() || erased {
        return Ok(row.audit_salt.clone());
    }
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let salt = hex::encode(bytes);
    let stored = tx
        .execute(
            "UPDATE verifications SET audit_salt = $1 WHERE tenant = $2 AND id = $3 \
             AND audit_salt IS NULL AND subject_id = $4 AND provider_reference = $5",
            &args![
                &salt,
                &row.tenant,
                &row.verification_id,
                &row.subject_id,
                &row.provider_reference,
            ],
        )
        .await?;
    Ok((stored == 1).then_some(salt))
}
