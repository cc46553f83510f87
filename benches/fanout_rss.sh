#!/usr/bin/env bash
# Fan-out bound, measured: RSS of the daemon idle, and after one alert naming 10,000 hosts
# (issue 14.2). Usage: benches/fanout_rss.sh [path/to/cordon]   (default: target/release/cordon)
# Prints VmRSS/VmHWM before and after, the ack, the case's action count and the exit status of
# the SIGTERM that follows. Loopback only; everything in a temp directory.
set -euo pipefail
bin="${1:-target/release/cordon}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - "$work/storm.json" <<'PY'
import json, sys
hosts = [{"kind": "host", "value": f"ws-{i:05d}"} for i in range(10000)]
json.dump({"source_alert_id": "storm-rss", "title": "Malware EncodedCommand",
           "rule": {"id": "rule-storm", "name": "Malware EncodedCommand"}, "severity": "high",
           "techniques": ["T1059"], "entities": hosts}, open(sys.argv[1], "w"))
PY
CORDON_DATA_DIR="$work/data" CORDON_HTTP_ADDR=127.0.0.1:18080 CORDON_GRPC_ADDR=127.0.0.1:15051 \
  "$bin" serve >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do curl -sf 127.0.0.1:18080/readyz >/dev/null && break; sleep 0.1; done
echo "idle:   $(grep -E 'VmRSS' /proc/$pid/status | tr -s ' ')"
echo "ack:    $(curl -s -XPOST 127.0.0.1:18080/v1/alerts --data-binary @"$work/storm.json")"
case_id=$(curl -s 127.0.0.1:18080/v1/cases | python3 -c 'import json,sys; print(json.load(sys.stdin)["cases"][0]["case_id"])')
echo "actions: $(curl -s 127.0.0.1:18080/v1/cases/$case_id | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["actions"]))')"
echo "after:  $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr -s ' ' | tr '\n' ' ')"
kill -TERM "$pid"
set +e; wait "$pid"; echo "exit:   $?"
