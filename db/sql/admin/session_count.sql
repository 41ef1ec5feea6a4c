-- Other sessions connected to a database (what blocks DROP DATABASE).
SELECT count(*) AS count
FROM pg_stat_activity
WHERE datname = %(datname)s AND pid <> pg_backend_pid()
