#!/bin/sh
# PID 1 of the rehearsal's outside container: start pebble, the registry and the webhook
# receiver from the files test/delivery/vm-rehearsal.sh put in /etc/rehearsal, then wait.
set -eu
cd /etc/rehearsal
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config pebble.json >/var/log/pebble.log 2>&1 &
docker-registry serve registry.yml >/var/log/registry.log 2>&1 &
python3 /usr/local/bin/webhook-receiver.py 9099 /var/log/alerts.jsonl >/var/log/receiver.log 2>&1 &
trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
