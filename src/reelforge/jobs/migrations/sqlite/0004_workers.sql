-- Workers report the models they have loaded, for /readyz.

CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    models TEXT NOT NULL,
    seen_at REAL NOT NULL
);
