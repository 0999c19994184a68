-- +goose Up
-- One order per conversation: the order its messages were committed in.
-- Every message takes the next number of its conversation's sequence
-- (messages.seq; conversations.last_seq is the latest) under a lock on the
-- conversation row that its transaction holds until it commits: numbers
-- are handed out in commit order, and a rolled-back message gives its
-- number back. Its created_at is
-- set under the same lock and never goes back within a conversation, so
-- seq, createdAt and cursors agree. Read marks are kept as the seq read up
-- to: unread is exactly what was committed after the mark.
ALTER TABLE conversations ADD COLUMN last_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN seq bigint;
ALTER TABLE conversation_participants ADD COLUMN last_read_seq bigint NOT NULL DEFAULT 0;

-- Existing messages keep the order pages listed them in.
UPDATE messages m SET seq = o.seq
FROM (SELECT id, row_number() OVER (PARTITION BY conversation_id ORDER BY created_at, id) AS seq
      FROM messages) o
WHERE o.id = m.id;
ALTER TABLE messages ALTER COLUMN seq SET NOT NULL;
ALTER TABLE messages ADD CONSTRAINT messages_conversation_seq_key UNIQUE (conversation_id, seq);
-- Pages, the last message, unread counts and catch-up all go by seq now.
DROP INDEX messages_conversation_created_idx;

UPDATE conversations c SET last_seq = m.seq, last_message_at = m.created_at
FROM (SELECT DISTINCT ON (conversation_id) conversation_id, seq, created_at
      FROM messages ORDER BY conversation_id, seq DESC) m
WHERE m.conversation_id = c.id;

-- A read mark covered the messages created at or before it; created_at
-- grows with seq, so those are exactly the ones up to a seq.
UPDATE conversation_participants p SET last_read_seq = coalesce(
    (SELECT max(m.seq) FROM messages m
     WHERE m.conversation_id = p.conversation_id AND m.created_at <= p.last_read_at), 0)
WHERE p.last_read_at IS NOT NULL;

-- The time is read when the row is inserted, after the conversation's lock
-- is taken, not when the transaction started.
ALTER TABLE messages ALTER COLUMN created_at SET DEFAULT clock_timestamp();

-- Every insert takes the next seq of its conversation, whoever writes it
-- (the API, the demo data, tests, a bulk load), under the conversation's
-- lock, and a created_at no earlier than the conversation's latest. The
-- numbers of the rows a statement inserts come from the conversation's
-- last_seq and the messages already there (those of the statement's
-- earlier rows included); the conversation's last_seq and last_message_at
-- move once per statement, not once per row, so that a bulk insert does not
-- rewrite the conversation row thousands of times.
-- +goose StatementBegin
CREATE FUNCTION messages_take_seq() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    conv_seq bigint;
    conv_at timestamptz;
    last_seq bigint;
    last_at timestamptz;
BEGIN
    SELECT c.last_seq, c.last_message_at INTO conv_seq, conv_at
    FROM conversations c WHERE c.id = NEW.conversation_id
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversation % does not exist', NEW.conversation_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT m.seq, m.created_at INTO last_seq, last_at
    FROM messages m WHERE m.conversation_id = NEW.conversation_id
    ORDER BY m.seq DESC LIMIT 1;
    NEW.seq := greatest(conv_seq, last_seq) + 1;
    NEW.created_at := greatest(NEW.created_at, conv_at, last_at);
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER messages_take_seq BEFORE INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_take_seq();

-- +goose StatementBegin
CREATE FUNCTION messages_advance_conversations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE conversations c
    SET last_seq = greatest(c.last_seq, a.seq), last_message_at = greatest(c.last_message_at, a.at)
    FROM (SELECT conversation_id, max(seq) AS seq, max(created_at) AS at
          FROM added GROUP BY conversation_id) a
    WHERE c.id = a.conversation_id;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER messages_advance_conversations AFTER INSERT ON messages
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION messages_advance_conversations();

-- +goose Down
DROP TRIGGER messages_advance_conversations ON messages;
DROP FUNCTION messages_advance_conversations();
DROP TRIGGER messages_take_seq ON messages;
DROP FUNCTION messages_take_seq();
ALTER TABLE messages ALTER COLUMN created_at SET DEFAULT now();
CREATE INDEX messages_conversation_created_idx
    ON messages (conversation_id, created_at DESC, id DESC);
ALTER TABLE messages DROP CONSTRAINT messages_conversation_seq_key;
ALTER TABLE messages DROP COLUMN seq;
ALTER TABLE conversation_participants DROP COLUMN last_read_seq;
ALTER TABLE conversations DROP COLUMN last_seq;
