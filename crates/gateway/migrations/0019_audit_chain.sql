-- The tamper-evident history. Each tenant's history rows form one chain: the sealer (a job on
-- every replica) takes the rows not yet sealed, in order, and gives each its place (`seq`), the
-- canonical encoding it vouches for (`record`), the hash of the row before it (`prev_hash`) and
-- its own (`hash`, SHA-256 over the two); `audit_heads` holds each chain's last place and hash,
-- and is locked while a chain grows, so that replicas extend it one at a time.
-- kind:        `change` (a status change), `decision` (a manual decision: who and why).
-- note:        a manual decision's reason.
-- audit_salt:  a verification's random salt: the record holds digests of its subject id,
--              provider reference and notes salted with it, never the values themselves, so
--              erasing the values and the salt leaves the chain whole and the digests unlinkable.
-- Tables are altered in the order writers lock them (a verification, then its history), so
-- that a writer of the previous release and this migration queue instead of deadlocking.
ALTER TABLE verifications ADD COLUMN audit_salt TEXT;
ALTER TABLE status_changes ADD COLUMN kind TEXT NOT NULL DEFAULT 'change';
ALTER TABLE status_changes ADD COLUMN note TEXT;
ALTER TABLE status_changes ADD COLUMN seq BIGINT;
ALTER TABLE status_changes ADD COLUMN record TEXT;
ALTER TABLE status_changes ADD COLUMN prev_hash TEXT;
ALTER TABLE status_changes ADD COLUMN hash TEXT;
CREATE TABLE IF NOT EXISTS audit_heads (
    tenant    TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      TEXT NOT NULL,
    sealed_at TEXT NOT NULL
);
