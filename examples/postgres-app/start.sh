#!/bin/sh
# Serve /www from /tmp/www with a /health page that says whether DATABASE_URL is set.
# Only its presence is reported, never its value: it holds the database password.
set -eu
mkdir -p /tmp/www
cp -R /www/. /tmp/www/
if [ -n "${DATABASE_URL:-}" ]; then
  database="configured (${DATABASE_TYPE:-unknown} at ${PGHOST:-unknown})"
else
  database="not configured: DATABASE_URL is empty"
fi
printf 'ok\ndatabase: %s\n' "$database" > /tmp/www/health
echo "postgres-app: database $database; serving on port ${PORT:-3000}"
exec httpd -f -v -p "${PORT:-3000}" -h /tmp/www
