#!/bin/sh
# Writes Redis's aclfile from k8see's rules (redis-acl-rules.txt, a copy of
# `k8see redis-acl --rules`) and one password per role from PASSWORD_<ROLE>: the default user
# unusable (no password), then `user k8see-<role> reset on #<sha256 of the password> <rules>`. Only hashes reach
# the file. Every role's password is required but the scaler's and the probe's (each left out
# without one). Used by the platform chart's Redis init container and by docker-compose.yml.
#
# Usage: redis-aclfile.sh RULES OUTPUT [COMMAND...]   (then execs COMMAND, if given)
set -eu
rules=$1
output=$2
shift 2
umask 077
{
  # The default user: on but without any password, so no connection can use it; not "off",
  # because Redis 7.0 replays the append-only file's transactions as the default user
  # (k8see/redis_acl.py, DEFAULT_USER).
  echo "user default on resetpass ~* &* +@all"
  while read -r role acl; do
    [ -n "$role" ] || continue
    upper=$(echo "$role" | tr a-z A-Z)
    # The scaler's user (KEDA, autoscaling.keda) and the probe's (the chart's Redis probes) are
    # optional: without a password each is left out (docker-compose.yml, a redis.existingSecret
    # from before chart 0.14 without scaler-password, or before 0.15 without probe-password).
    if { [ "$role" = scaler ] || [ "$role" = probe ]; } && eval "[ -z \"\${PASSWORD_$upper:-}\" ]"; then continue; fi
    eval "password=\${PASSWORD_$upper:?PASSWORD_$upper is not set}"
    hash=$(printf %s "$password" | sha256sum | cut -d' ' -f1)
    echo "user k8see-$role reset on #$hash $acl"
  done < "$rules"
} > "$output"
# The Redis image's entrypoint drops root for its redis user, which must read the file.
if [ "$(id -u)" = 0 ] && id redis >/dev/null 2>&1; then chown redis "$output"; fi
[ $# -eq 0 ] || exec "$@"
