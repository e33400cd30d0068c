-- Why each verification went to its provider instance: {"reason": ..., "tried": [...]} as JSON.
-- Verifications made before this column existed have none.
ALTER TABLE verifications ADD COLUMN routing TEXT;
