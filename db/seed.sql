-- Demo users. cognito_user_id is filled in by bin/db/update_cognito_user_ids
-- once the users exist in the user pool. Safe to run again.

INSERT INTO public.users (display_name, handle, email)
VALUES
  ('Andrew Brown', 'andrewbrown', 'andrew@exampro.co'),
  ('Andrew Bayko', 'bayko',       'bayko@exampro.co'),
  ('Londo Mollari', 'londo',      'lmollari@centari.com')
ON CONFLICT DO NOTHING;
