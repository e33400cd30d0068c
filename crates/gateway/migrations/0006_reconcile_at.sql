-- When the reconciler may next read a verification that is not final. A round claims the rows that
-- are due and sets this, so that replicas sharing the database share the work instead of each
-- reading every row. NULL is due now.
ALTER TABLE verifications ADD COLUMN reconcile_at TEXT;
