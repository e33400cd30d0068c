-- The champion-challenger experiment a verification was routed by, and its arm (`champion`,
-- `challenger`); none for verifications routed otherwise. Indexed for the experiment's figures,
-- which count its verifications per arm and status.
ALTER TABLE verifications ADD COLUMN experiment TEXT;
ALTER TABLE verifications ADD COLUMN arm TEXT;
CREATE INDEX IF NOT EXISTS verifications_experiment
    ON verifications (tenant, experiment, arm, status) WHERE experiment IS NOT NULL;

-- Experiments whose guardrail stopped the challenger's traffic: one row each, written once by
-- whichever replica saw it first (with the tenant's event, in the same transaction).
CREATE TABLE IF NOT EXISTS experiment_stops (
    tenant     TEXT NOT NULL,
    name       TEXT NOT NULL,
    stopped_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);
