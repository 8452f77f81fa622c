-- Workers report the models they have loaded, for /readyz.

CREATE TABLE workers (
    id text PRIMARY KEY,
    models jsonb NOT NULL CHECK (jsonb_typeof(models) = 'array'),
    seen_at double precision NOT NULL
);
