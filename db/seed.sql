-- Demo users. cognito_user_id is filled in by bin/db/update_cognito_user_ids
-- once the users exist in the user pool. Safe to run again.
--
-- Their uuids are fixed: conversations in DynamoDB name users by uuid, so a
-- database re-created by bin/db/setup must give them the same ones, or every
-- demo conversation would be orphaned (lists empty, old conversations 404).

INSERT INTO public.users (uuid, display_name, handle, email)
VALUES
  ('4991d0b6-f577-4de5-b7c8-223aa6f73dc9', 'Andrew Brown',  'andrewbrown', 'andrew@exampro.co'),
  ('71579bc8-ae12-4955-8151-40d03b3bc81b', 'Andrew Bayko',  'bayko',       'bayko@exampro.co'),
  ('22eb6584-a3b1-4bdd-af35-9e7708673514', 'Londo Mollari', 'londo',       'lmollari@centari.com')
ON CONFLICT DO NOTHING;
