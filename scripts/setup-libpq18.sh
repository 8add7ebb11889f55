#!/usr/bin/env bash
# A Python virtual environment holding psycopg's binary wheel, which bundles
# libpq 18: the test client of the OAuth door (test/support/libpq18_oauth.py)
# needs a libpq that speaks OAUTHBEARER, and Debian's is older. Idempotent:
# an environment that already has libpq 18 is kept.
#
# Usage: scripts/setup-libpq18.sh [directory]
# (default node_modules/.cache/postgrest-sessions/libpq18; prints its python)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/node_modules/.cache/postgrest-sessions/libpq18}"
check='import psycopg, sys; v = psycopg.pq.version(); sys.exit(0 if v >= 180000 else f"libpq {v} is older than 18")'
if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$check" 2>/dev/null; then
  echo "$dir/bin/python"
  exit 0
fi
rm -rf "$dir"
if ! python3 -m venv "$dir" >&2; then
  echo "setup-libpq18: python3 -m venv failed: install python3 and python3-venv (apt-get install python3-venv)" >&2
  exit 1
fi
# --retries 0: where the package index is out of reach, fail in seconds.
if ! "$dir/bin/pip" install --quiet --retries 0 --disable-pip-version-check "psycopg[binary]" >&2; then
  rm -rf "$dir"
  echo "setup-libpq18: pip could not install psycopg[binary] (it bundles libpq 18)" >&2
  exit 1
fi
"$dir/bin/python" -c "$check" >&2
echo "$dir/bin/python"
