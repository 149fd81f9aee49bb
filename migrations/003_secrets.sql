-- Secrets the bridge generates for itself, such as the key that signs focus tokens. They live
-- in the database, not the config file, so that every node sharing the database accepts
-- every node's tokens, and so that a config pasted into a support request gives nothing away.
CREATE TABLE secret (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
