-- A room's call modes set by its moderators: 'locked' (no new participants) and 'moderated'
-- (participants muted by a moderator cannot unmute themselves). A row means the mode is on.
CREATE TABLE room_mode (
    room_id TEXT NOT NULL REFERENCES room (room_id) ON DELETE CASCADE,
    mode    TEXT NOT NULL,
    set_by  TEXT NOT NULL,
    set_at  BIGINT NOT NULL,
    PRIMARY KEY (room_id, mode)
);

-- Users removed from a room's call by a moderator: no new call token until the time given.
CREATE TABLE call_removal (
    room_id    TEXT NOT NULL REFERENCES room (room_id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    removed_by TEXT NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- What moderators did, for the call history: the call it happened in (if one was running),
-- who did what to whom.
CREATE TABLE moderation_action (
    room_id    TEXT NOT NULL REFERENCES room (room_id) ON DELETE CASCADE,
    call_id    TEXT REFERENCES call (call_id) ON DELETE CASCADE,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT,
    detail     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX moderation_action_room_idx ON moderation_action (room_id, created_at);
