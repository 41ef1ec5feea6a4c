-- A user's conversations with activity after a position: the newest position of each, and of its
-- newest read (served by realtime_events_user_uuids_idx).
SELECT
  message_group_uuid::text AS message_group_uuid,
  max(position) AS position,
  max(read_position) AS read_position
FROM public.realtime_events
WHERE user_uuids @> ARRAY[%(user_uuid)s::uuid]
  AND position > %(since)s
GROUP BY message_group_uuid
