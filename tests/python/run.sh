#!/usr/bin/env bash
# Runs tests/python/approve_flow.py against a cordon daemon that is already serving gRPC
# (plaintext), using the same virtualenv as tests/it/python_client.rs (<target>/pyenv, created
# from tests/python/requirements.txt when it cannot import grpc and grpc_tools).
#
#   tests/python/run.sh --addr 127.0.0.1:50051 --token <approver token> --ingest-token <token>
#
# Further arguments go to approve_flow.py (see its --help); --proto-dir, --out-dir and
# --payload default to the repository's proto/, a temporary directory and the Elastic fixture.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$repo/$target ;; esac
venv=$target/pyenv
if ! "$venv/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check -r "$repo/tests/python/requirements.txt"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$venv/bin/python" "$repo/tests/python/approve_flow.py" \
  --proto-dir "$repo/proto" --out-dir "$out" --payload "$repo/tests/fixtures/elastic.json" "$@"
