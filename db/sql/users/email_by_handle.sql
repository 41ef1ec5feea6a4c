-- The sign-in email of a user, by handle (any case).
SELECT users.email
FROM public.users
WHERE lower(users.handle) = lower(%(handle)s)
