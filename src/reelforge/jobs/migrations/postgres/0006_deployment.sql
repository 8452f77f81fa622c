-- Facts every process sharing this database must agree on, set by the first process that
-- starts (e.g. 'storage': where videos and inputs live), compared by every later one.

CREATE TABLE deployment (
    name text PRIMARY KEY,
    value text NOT NULL CHECK (value <> '')
);
