-- The outbox fenced and ordered by sequence.
-- claim:      the token of the attempt that holds the event until claimed_until; a write that ends
--             or reschedules an attempt is conditional on it.
-- generation: bumped by a redeliver; a delivery recorded by an attempt of an older generation
--             changes nothing, so a redeliver made during an attempt stands.
-- tries:      every attempt ever made (never reset): the next attempt row's number, so attempt
--             numbers cannot collide.
-- seq:        the event's place in its line, (tenant, verification_id), assigned in the change's
--             transaction: order never rests on replicas' clocks.
ALTER TABLE events ADD COLUMN claim TEXT;
ALTER TABLE events ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN tries BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
UPDATE events SET tries = COALESCE(
    (SELECT MAX(a.attempt) FROM event_attempts a WHERE a.event_id = events.id), 0);
UPDATE events SET seq = (SELECT COUNT(*) FROM events p WHERE p.tenant = events.tenant
    AND p.verification_id = events.verification_id
    AND (p.created_at < events.created_at OR (p.created_at = events.created_at AND p.id <= events.id)));
CREATE INDEX IF NOT EXISTS events_line ON events (tenant, verification_id, state, seq);
