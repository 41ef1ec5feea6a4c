-- Record a publish and NOTIFY every listening API process, in one statement (one transaction:
-- listeners hear it only once the row is committed). The notification carries the events inline
-- when they fit (%(inline)s), else a reference to the row, whose payload they then read.
WITH published AS (
  INSERT INTO public.realtime_events (user_uuids, message_group_uuid, position, read_position, payload)
  VALUES (%(user_uuids)s::uuid[], %(message_group_uuid)s::uuid, %(position)s, %(read_position)s, %(payload)s)
  RETURNING id
)
SELECT pg_notify(%(channel)s, coalesce(%(inline)s, '{"v":1,"ref":' || (SELECT id FROM published) || '}')) AS notified
