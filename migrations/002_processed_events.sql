-- Events whose side effects are done, so that a transaction the homeserver delivers again
-- (after a crash or restart, when the in-memory transaction set is gone) changes nothing.
CREATE TABLE processed_event (
    event_id     TEXT PRIMARY KEY,
    processed_at BIGINT NOT NULL
);
CREATE INDEX processed_event_age_idx ON processed_event (processed_at);
