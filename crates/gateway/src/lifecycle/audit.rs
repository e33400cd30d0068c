//! The audit trail: checking a tenant's hash chain ([`verify`]), its head, and the export of a
//! period's history as JSON Lines ([`export`]), read page by page so that memory stays flat
//! whatever the period holds.

use crate::store::{AuditHead, AuditRecord, AuditRow, GENESIS, Store, StoreError, chain_hash};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// Rows read per page.
const PAGE: u32 = 500;

/// Where a tenant's chain ends now.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"seq": 1204, "hash":
    "3e5f7a9b1c3d5e7f9a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f",
    "sealed_at": "2026-12-05T10:34:48.112233Z", "unsealed": 0}))]
pub struct ChainHead {
    /// How many rows the chain holds; 0 before the first is sealed.
    pub seq: u64,
    /// The last row's hash (hex SHA-256), `""` before the first: keep it where the gateway
    /// cannot write, and `kyc-gateway audit verify` shows whether the chain still leads to it.
    pub hash: String,
    /// When the chain last grew.
    pub sealed_at: Option<DateTime<Utc>>,
    /// History rows recorded but not yet in the chain (the sealer takes them within a second or
    /// so).
    pub unsealed: u64,
}

/// Where the tenant's chain ends.
pub async fn head(store: &dyn Store, tenant: &str) -> Result<ChainHead, StoreError> {
    let head = store.audit_head(tenant).await?;
    let unsealed = store.unsealed(tenant).await?;
    Ok(match head {
        Some(AuditHead {
            seq,
            hash,
            sealed_at,
        }) => ChainHead {
            seq,
            hash,
            sealed_at: Some(sealed_at),
            unsealed,
        },
        None => ChainHead {
            seq: 0,
            hash: GENESIS.into(),
            sealed_at: None,
            unsealed,
        },
    })
}

/// The first row that breaks a chain, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The history row (`chg_...`), or `audit_heads` when the chain ends short of its head.
    pub id: String,
    /// Its place in the chain.
    pub seq: i64,
    /// Its verification.
    pub verification_id: String,
    /// What does not hold.
    pub why: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "history row {} (seq {}, verification {}): {}",
            self.id, self.seq, self.verification_id, self.why
        )
    }
}

/// What checking a tenant's chain found.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    /// Rows checked.
    pub rows: u64,
    /// The last hash reached.
    pub hash: String,
    /// Rows not yet sealed (not checked).
    pub unsealed: u64,
    /// The first row that breaks the chain, if one does.
    pub broken: Option<Broken>,
}

/// Checks the tenant's whole chain in order: each row's place follows the one before, its
/// `prev_hash` is that row's hash, its hash is over its record, and its record says what the row
/// and its verification still say (the salted digests of the subject id, the provider reference
/// and a reviewer's note are recomputed while the verification keeps its salt). The chain must
/// end at the head.
pub async fn verify(store: &dyn Store, tenant: &str) -> Result<ChainCheck, StoreError> {
    let head = store.audit_head(tenant).await?;
    let unsealed = store.unsealed(tenant).await?;
    let mut check = ChainCheck {
        rows: 0,
        hash: GENESIS.into(),
        unsealed,
        broken: None,
    };
    let mut after = 0;
    'pages: loop {
        let page = store.chain_page(tenant, after, PAGE).await?;
        for row in &page {
            if let Some(why) = breaks(row, after + 1, &check.hash) {
                check.broken = Some(broken(row, why));
                break 'pages;
            }
            after += 1;
            check.rows += 1;
            check.hash = row.hash.clone().unwrap_or_default();
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    if check.broken.is_none()
        && let Some(head) = head
        && (head.seq != check.rows || head.hash != check.hash)
    {
        check.broken = Some(Broken {
            id: "audit_heads".into(),
            seq: i64::try_from(head.seq).unwrap_or(i64::MAX),
            verification_id: "-".into(),
            why: format!(
                "the chain ends at seq {} but its head says {}: rows were removed or changed",
                check.rows, head.seq
            ),
        });
    }
    Ok(check)
}

fn broken(row: &AuditRow, why: String) -> Broken {
    Broken {
        id: row.id.clone(),
        seq: row.seq.unwrap_or_default(),
        verification_id: row.verification_id.clone(),
        why,
    }
}

/// What is wrong with `row` as the chain's row number `seq` after `prev_hash`, if anything.
fn breaks(row: &AuditRow, seq: i64, prev_hash: &str) -> Option<String> {
    if row.seq != Some(seq) {
        return Some(format!("expected seq {seq}: a row before it is missing"));
    }
    if row.prev_hash.as_deref() != Some(prev_hash) {
        return Some("its prev_hash is not the hash of the row before it".into());
    }
    let record = row.record.as_deref().unwrap_or_default();
    if row.hash.as_deref() != Some(&chain_hash(prev_hash, record)) {
        return Some("its hash is not the hash of its record".into());
    }
    let Ok(sealed) = serde_json::from_str::<AuditRecord>(record) else {
        return Some("its record is not a record".into());
    };
    let mut now = AuditRecord::of(row, row.audit_salt.as_deref());
    if row.audit_salt.is_none() {
        // Erased or removed: the digests cannot be recomputed, and nothing is left to compare.
        now.note = sealed.note.clone();
        now.subject = sealed.subject.clone();
        now.provider_reference = sealed.provider_reference.clone();
        if row.provider.is_none() {
            now.provider = sealed.provider.clone();
            now.routing = sealed.routing.clone();
        }
    }
    differing(&sealed, &now).map(|field| format!("its {field} differs from its sealed record"))
}

/// The first field in which two records differ, named as a reader knows it.
fn differing(sealed: &AuditRecord, now: &AuditRecord) -> Option<&'static str> {
    let fields: [(&str, bool); 15] = [
        ("version", sealed.v == now.v),
        ("tenant", sealed.tenant == now.tenant),
        ("id", sealed.id == now.id),
        (
            "verification id",
            sealed.verification_id == now.verification_id,
        ),
        ("kind", sealed.kind == now.kind),
        ("from status", sealed.from == now.from),
        ("to status", sealed.to == now.to),
        ("source", sealed.source == now.source),
        ("actor", sealed.actor == now.actor),
        ("note", sealed.note == now.note),
        ("time", sealed.at == now.at),
        ("verification's provider", sealed.provider == now.provider),
        ("verification's routing", sealed.routing == now.routing),
        ("verification's subject id", sealed.subject == now.subject),
        (
            "verification's provider reference",
            sealed.provider_reference == now.provider_reference,
        ),
    ];
    fields.iter().find(|(_, same)| !same).map(|(name, _)| *name)
}

/// One line of the export.
#[derive(Debug, Serialize)]
struct ExportLine<'a> {
    seq: Option<i64>,
    id: &'a str,
    verification_id: &'a str,
    kind: &'a str,
    from: Option<&'a str>,
    to: &'a str,
    source: &'a str,
    actor: Option<&'a str>,
    note: Option<&'a str>,
    at: &'a str,
    subject_id: Option<&'a str>,
    provider: Option<&'a str>,
    provider_reference: Option<&'a str>,
    routing: Option<String>,
    record: Option<&'a str>,
    prev_hash: Option<&'a str>,
    hash: Option<&'a str>,
}

/// A row as its export line (with its newline).
fn line(row: &AuditRow) -> String {
    let creation = row.is_creation();
    let line = ExportLine {
        seq: row.seq,
        id: &row.id,
        verification_id: &row.verification_id,
        kind: &row.kind,
        from: row.from_status.as_deref(),
        to: &row.to_status,
        source: &row.source,
        actor: row.actor.as_deref(),
        note: row.note.as_deref(),
        at: &row.at,
        subject_id: row.subject_id.as_deref(),
        provider: row.provider.as_deref(),
        provider_reference: row.provider_reference.as_deref(),
        routing: creation.then(|| row.routing_reason()).flatten(),
        record: row.record.as_deref(),
        prev_hash: row.prev_hash.as_deref(),
        hash: row.hash.as_deref(),
    };
    let mut text = serde_json::to_string(&line).expect("a line is JSON");
    text.push('\n');
    text
}

/// The least history id recorded at `t` (ids are `chg_` + ULID, the time first).
fn first_id_at(t: DateTime<Utc>) -> String {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    format!("chg_{}", ulid::Ulid::from_parts(ms, 0))
}

/// The tenant's history rows recorded from `from` up to `to` (excluded), oldest first, as JSON
/// Lines, one chunk per page read: memory holds one page at a time however long the period.
pub fn export(
    store: Arc<dyn Store>,
    tenant: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> impl Stream<Item = Result<String, StoreError>> + Send + 'static {
    let before = first_id_at(to);
    // Just below the first id at `from`: the page read is "after".
    let start = first_id_at(from);
    let after = Some(start[..start.len() - 1].to_string() + "/");
    futures_util::stream::try_unfold(after, move |after| {
        let (store, tenant, before) = (store.clone(), tenant.clone(), before.clone());
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let page = store.history_page(&tenant, &after, &before, PAGE).await?;
            let next = (page.len() == PAGE as usize)
                .then(|| page.last().map(|row| row.id.clone()))
                .flatten();
            if page.is_empty() {
                return Ok(None);
            }
            let chunk: String = page.iter().map(line).collect();
            Ok(Some((chunk, next)))
        }
    })
}
