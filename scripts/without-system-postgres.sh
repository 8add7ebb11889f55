#!/usr/bin/env bash
# Runs a command as on a machine without a PostgreSQL server, as root: in a
# mount namespace of its own, a tmpfs hides each Debian PostgreSQL's server
# binaries (the client programs, psql among them, stay, as with the
# postgresql-client package alone) and its extension directory (pgTAP with
# it). Nothing outside the command sees a difference.
#
#   bash scripts/without-system-postgres.sh npm test
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "without-system-postgres: needs root (unshare -m and mount)" >&2
  exit 2
fi
exec unshare -m bash -c '
  set -euo pipefail
  for bin in /usr/lib/postgresql/*/bin; do
    [ -d "$bin" ] || continue
    keep="$(mktemp -d)"
    for client in psql pg_dump pg_dumpall pg_restore pg_isready; do
      if [ -e "$bin/$client" ]; then cp -a "$bin/$client" "$keep/"; fi
    done
    mount -t tmpfs tmpfs "$bin"
    cp -a "$keep/." "$bin/"
    rm -rf "$keep"
  done
  for extensions in /usr/share/postgresql/*/extension; do
    [ -d "$extensions" ] && mount -t tmpfs tmpfs "$extensions"
  done
  exec "$@"
' without-system-postgres "$@"
