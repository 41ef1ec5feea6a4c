-- Sender (by Cognito sub) and receiver (by handle, any case) of a new message,
-- in one round trip. Always one row; a side that does not exist is NULL.
SELECT
  (
    SELECT json_build_object('uuid', sender.uuid::text, 'handle', sender.handle,
                             'display_name', sender.display_name)
    FROM public.users AS sender
    WHERE sender.cognito_user_id = %(cognito_user_id)s
  ) AS sender,
  (
    SELECT json_build_object('uuid', receiver.uuid::text, 'handle', receiver.handle,
                             'display_name', receiver.display_name)
    FROM public.users AS receiver
    WHERE lower(receiver.handle) = lower(%(handle)s)
  ) AS receiver
