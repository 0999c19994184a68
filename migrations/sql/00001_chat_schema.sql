-- +goose Up
-- The chat schema. Users are identified by uuid so that Supabase auth users
-- (whose ids are uuids) can be mapped one to one.
CREATE TABLE users (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text        NOT NULL CHECK (email <> ''),
    display_name  text        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 80),
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE conversations (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    title           text        CHECK (title IS NULL OR char_length(title) <= 200),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_message_at timestamptz
);

CREATE TABLE conversation_participants (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    last_read_at    timestamptz,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE TABLE messages (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    author_id       uuid        NOT NULL REFERENCES users (id),
    body            text        NOT NULL CHECK (char_length(body) BETWEEN 1 AND 4000),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Emails are unique regardless of case; lookups go through lower(email).
CREATE UNIQUE INDEX users_email_lower_idx ON users (lower(email));

-- The inbox: a user's conversations, newest activity first.
CREATE INDEX conversation_participants_user_idx
    ON conversation_participants (user_id, conversation_id);
CREATE INDEX conversations_last_message_at_idx
    ON conversations (last_message_at DESC NULLS LAST, id DESC);

-- A conversation's messages, newest first, paged by (created_at, id).
CREATE INDEX messages_conversation_created_idx
    ON messages (conversation_id, created_at DESC, id DESC);
CREATE INDEX messages_author_idx ON messages (author_id);

-- +goose Down
DROP TABLE messages;
DROP TABLE conversation_participants;
DROP TABLE conversations;
DROP TABLE users;
