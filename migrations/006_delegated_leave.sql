-- Delayed leave events (MSC4140) that clients handed over to the bridge (MSC4195 delegation):
-- restarted while the participant is on the SFU, sent when it goes. Kept here so that a
-- restart of the bridge neither forgets a participant's leave nor sends it twice. Times are
-- milliseconds since the epoch; delay_ms is NULL when the client did not say its delay.
CREATE TABLE delegated_leave (
    conference_id   TEXT NOT NULL,
    identity        TEXT NOT NULL,
    legacy_identity TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    delay_id        TEXT NOT NULL,
    delay_ms        BIGINT,
    phase           TEXT NOT NULL,
    due_ms          BIGINT NOT NULL,
    expires_ms      BIGINT NOT NULL,
    give_up_ms      BIGINT NOT NULL,
    PRIMARY KEY (conference_id, identity)
);
