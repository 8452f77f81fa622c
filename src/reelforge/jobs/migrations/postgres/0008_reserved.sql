-- A placeholder for the migration 0008 another branch adds (migration numbers have no gaps);
-- drop this file when that branch's 0008 is merged.
SELECT 1;
