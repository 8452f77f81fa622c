-- A placeholder for the migration 0009 another branch adds (migration numbers have no gaps);
-- drop this file when that branch's 0009 is merged.
SELECT 1;
