-- Forget publishes older than the replay window.
DELETE FROM public.realtime_events WHERE published_at < now() - make_interval(secs => %(keep_seconds)s)
