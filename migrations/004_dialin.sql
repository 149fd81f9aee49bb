-- Each room's dial-in ghost: clients that only know 1:1 Matrix calls call it to join the
-- room's conference.
CREATE TABLE dialin_ghost (
    room_id    TEXT PRIMARY KEY REFERENCES room (room_id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- Direct chats with a dial-in ghost (one ghost per chat): calls placed there join the
-- conference of the ghost's room.
CREATE TABLE dialin_chat (
    chat_room_id  TEXT PRIMARY KEY,
    ghost_user_id TEXT NOT NULL REFERENCES dialin_ghost (user_id) ON DELETE CASCADE,
    opened_by     TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
