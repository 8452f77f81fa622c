-- A placeholder for the migration 0006 another branch adds (migration numbers have no gaps);
-- drop this file when that branch's 0006 is merged.
SELECT 1;
