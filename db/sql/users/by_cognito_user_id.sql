-- The user a Cognito access token's sub belongs to: what the API needs per request.
SELECT
  users.uuid::text AS uuid,
  users.handle,
  users.display_name
FROM public.users
WHERE users.cognito_user_id = %(cognito_user_id)s
