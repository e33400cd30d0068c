-- Re-verification: the expiry job tells a tenant before and when a subject's approval lapses (at
-- its completion plus the tenant's `verification_valid_days`), once each.
-- lapse_cursors: per tenant and kind (`expiring`, `expired`), the last approval (completion time,
--                verification id) the job has passed; the job moves it compare-and-set, with the
--                events, in one transaction, so replicas never send one twice.
-- reverification: 1 on a verification created when its subject's newest approval had lapsed.
-- reverifications: those counted per day in the stats, like `started`.
CREATE TABLE IF NOT EXISTS lapse_cursors (
    tenant          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    completed_at    TEXT NOT NULL,
    verification_id TEXT NOT NULL,
    PRIMARY KEY (tenant, kind)
);
ALTER TABLE verifications ADD COLUMN reverification INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stats_daily ADD COLUMN reverifications BIGINT NOT NULL DEFAULT 0;
