-- Events a replica of the release before 0013 wrote after 0013 ran have no sequence (0) and no
-- due time: the outbox finds them by this index, gives each the next sequence of its line and
-- makes its line's head due. (The PostgreSQL form builds it concurrently, outside a transaction.)
CREATE INDEX IF NOT EXISTS events_unsequenced ON events (created_at) WHERE seq = 0
