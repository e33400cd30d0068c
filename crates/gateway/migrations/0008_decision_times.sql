-- How long verifications took from creation to a final status, as counts per tenant, UTC day of
-- creation, provider instance, country ('' when unknown) and time bucket: bucket 0 is at most
-- 1 ms, bucket b > 0 holds times from 1.05^(b-1) to 1.05^b ms (5 % wide), so a percentile read
-- from the buckets is within 2.5 % of the true one. Kept in the transaction of the change.
CREATE TABLE IF NOT EXISTS stats_decisions (
    tenant   TEXT NOT NULL,
    day      TEXT NOT NULL,
    provider TEXT NOT NULL,
    country  TEXT NOT NULL,
    bucket   BIGINT NOT NULL,
    decided  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day, provider, country, bucket)
);
