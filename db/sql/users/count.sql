SELECT count(*) AS count FROM public.users
