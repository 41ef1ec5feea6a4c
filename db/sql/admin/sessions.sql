-- Who is connected: one row per client session (bin/db/sessions).
SELECT
  pid AS process_id,
  usename AS user,
  datname AS db,
  client_addr::text AS client_addr,
  application_name AS app,
  state,
  date_trunc('second', now() - backend_start)::text AS connected_for
FROM pg_stat_activity
WHERE backend_type = 'client backend'
ORDER BY datname, backend_start
