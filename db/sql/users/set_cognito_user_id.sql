-- Link a user (by handle, any case) to a Cognito sub, or unlink it with NULL.
UPDATE public.users
SET cognito_user_id = %(cognito_user_id)s
WHERE lower(users.handle) = lower(%(handle)s)
