-- Rooms the bridge runs calls for, and the SFU conference each one maps to.
CREATE TABLE room (
    room_id       TEXT PRIMARY KEY,
    conference_id TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL
);

-- One row per call: from the first participant joining to the last one leaving.
CREATE TABLE call (
    call_id           TEXT PRIMARY KEY,
    room_id           TEXT NOT NULL REFERENCES room (room_id) ON DELETE CASCADE,
    started_at        BIGINT NOT NULL,
    ended_at          BIGINT,
    max_participants  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX call_room_idx ON call (room_id, started_at);

-- Who was in a call, over which path (matrixrtc, legacy_voip), and when.
CREATE TABLE call_participant (
    call_id   TEXT NOT NULL REFERENCES call (call_id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    via       TEXT NOT NULL,
    joined_at BIGINT NOT NULL,
    left_at   BIGINT,
    PRIMARY KEY (call_id, user_id, device_id, joined_at)
);
