-- Every user, for the scripts that sync them with Cognito.
SELECT
  users.uuid::text AS uuid,
  users.handle,
  users.email,
  users.display_name,
  users.cognito_user_id
FROM public.users
ORDER BY users.handle
