-- Only the uuid of the user a Cognito sub belongs to.
SELECT users.uuid::text AS uuid
FROM public.users
WHERE users.cognito_user_id = %(cognito_user_id)s
