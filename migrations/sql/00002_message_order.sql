-- +goose Up
-- One order per conversation: the order its messages were committed in.
-- Every message takes the next number of its conversation's sequence
-- (conversations.last_seq) by updating the conversation row, whose lock its
-- transaction then holds until it commits: numbers are handed out in commit
-- order, and a rolled-back message gives its number back. Its created_at is
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

-- The sequence is taken by every insert that gives no seq, whoever writes
-- it (the API, the demo data, tests): created_at is raised to the
-- conversation's last one if it is earlier, and the conversation's
-- last_seq and last_message_at move. A bulk load that numbers its messages
-- itself (load.Seed, which would take minutes a row at a time) gives seq
-- and is left alone: it sets last_seq and last_message_at afterwards.
-- +goose StatementBegin
CREATE FUNCTION messages_take_seq() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    next_seq bigint;
    at timestamptz;
BEGIN
    IF NEW.seq IS NOT NULL THEN
        RETURN NEW;
    END IF;
    UPDATE conversations
    SET last_seq = last_seq + 1,
        last_message_at = greatest(last_message_at, NEW.created_at)
    WHERE id = NEW.conversation_id
    RETURNING last_seq, last_message_at INTO next_seq, at;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversation % does not exist', NEW.conversation_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    NEW.seq := next_seq;
    NEW.created_at := at;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER messages_take_seq BEFORE INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_take_seq();

-- +goose Down
DROP TRIGGER messages_take_seq ON messages;
DROP FUNCTION messages_take_seq();
ALTER TABLE messages ALTER COLUMN created_at SET DEFAULT now();
CREATE INDEX messages_conversation_created_idx
    ON messages (conversation_id, created_at DESC, id DESC);
ALTER TABLE messages DROP CONSTRAINT messages_conversation_seq_key;
ALTER TABLE messages DROP COLUMN seq;
ALTER TABLE conversation_participants DROP COLUMN last_read_seq;
ALTER TABLE conversations DROP COLUMN last_seq;
