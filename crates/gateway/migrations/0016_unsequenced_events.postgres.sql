-- Events a replica of the release before 0013 wrote after 0013 ran have no sequence (0) and no
-- due time: the outbox finds them by this index, gives each the next sequence of its line and
-- makes its line's head due. Built concurrently, outside a transaction, so that writers carry on
-- meanwhile (one statement: PostgreSQL builds an index concurrently only on its own). The SQLite
-- form of this migration differs only in that word.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_unsequenced ON events (created_at) WHERE seq = 0
