-- A user by handle, whatever its case (served by users_handle_lower_key).
SELECT
  users.uuid::text AS uuid,
  users.handle,
  users.display_name
FROM public.users
WHERE lower(users.handle) = lower(%(handle)s)
