-- The events of a publish too big to travel inside its NOTIFY.
SELECT payload FROM public.realtime_events WHERE id = %(id)s
