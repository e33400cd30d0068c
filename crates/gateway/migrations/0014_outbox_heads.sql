-- The outbox reads only the heads of lines.
-- due_at: when the head of its line (the line's earliest pending event) is next due, or, while
--         an attempt holds it, when that claim runs out; NULL for an event behind another of its
--         line, one no longer pending, and one parked. The due scan reads this alone, so events
--         held behind a head or parked cost it nothing.
-- parked: 1 while its tenant has no working webhook URL (none in the policy, or one disabled by
--         a 410): it waits, unread, until the policy names one.
ALTER TABLE events ADD COLUMN due_at TEXT;
ALTER TABLE events ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;
UPDATE events SET due_at = next_attempt_at WHERE state = 'pending' AND NOT EXISTS (
    SELECT 1 FROM events p WHERE p.tenant = events.tenant
    AND p.verification_id = events.verification_id AND p.state = 'pending' AND p.seq < events.seq);
DROP INDEX IF EXISTS events_due;
CREATE INDEX IF NOT EXISTS events_head_due ON events (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_parked ON events (tenant) WHERE parked = 1;
