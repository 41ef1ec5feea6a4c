-- A new user already linked to their Cognito sub (tests and benchmarks create them this way).
INSERT INTO public.users (display_name, handle, email, cognito_user_id)
VALUES (%(display_name)s, %(handle)s, %(email)s, %(cognito_user_id)s)
RETURNING users.uuid::text AS uuid
