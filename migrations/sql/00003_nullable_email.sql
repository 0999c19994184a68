-- +goose Up
-- A user may have no email: Supabase anonymous and phone sign-ins carry
-- none. Such users were given a placeholder, <id>@users.invalid, which
-- clients showed as if it were an address; NULL says what is meant. The
-- unique index on lower(email) allows any number of NULLs.
ALTER TABLE users ALTER COLUMN email DROP NOT NULL;
UPDATE users SET email = NULL WHERE email = id::text || '@users.invalid';

-- +goose Down
UPDATE users SET email = id::text || '@users.invalid' WHERE email IS NULL;
ALTER TABLE users ALTER COLUMN email SET NOT NULL;
