-- Guest links (`!call guestlink`): a secret URL that lets someone without a Matrix account
-- join a room's call as a ghost user of the bridge. Only the SHA-256 of the secret is kept;
-- link_id is the short public name moderators list and revoke it by.
CREATE TABLE guest_link (
    link_id     TEXT PRIMARY KEY,
    room_id     TEXT NOT NULL REFERENCES room (room_id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL UNIQUE,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    uses        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX guest_link_room_idx ON guest_link (room_id, expires_at);

-- Guests let in through a link: their ghost user and, once their call client has it, the
-- ghost's device (deleted with its access token when the guest leaves).
CREATE TABLE guest (
    user_id    TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL REFERENCES room (room_id) ON DELETE CASCADE,
    link_id    TEXT NOT NULL,
    device_id  TEXT,
    created_at BIGINT NOT NULL
);
