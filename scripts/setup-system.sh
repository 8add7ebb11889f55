#!/usr/bin/env bash
# Installs the system packages the toolkit and its tests use, on Debian or
# Ubuntu, as root: a PostgreSQL server (the distribution's default when none
# is installed) and pgTAP for the newest installed PostgreSQL major version.
# Idempotent; versions and paths are discovered, never assumed.
set -euo pipefail

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-system: not root on Debian/Ubuntu; install PostgreSQL and pgTAP yourself" >&2
  echo "  (e.g. apt-get install postgresql postgresql-<major>-pgtap)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive

newest_major() {
  ls /usr/lib/postgresql 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -n 1
}

packages=()
updated=0
apt_update() {
  if [ "$updated" -eq 0 ]; then
    apt-get update -qq
    updated=1
  fi
}

major="$(newest_major || true)"
if [ -z "$major" ] || [ ! -x "/usr/lib/postgresql/$major/bin/postgres" ]; then
  apt_update
  apt-get install -y -qq postgresql >/dev/null
  major="$(newest_major)"
fi
if [ ! -f "/usr/share/postgresql/$major/extension/pgtap.control" ]; then
  packages+=("postgresql-$major-pgtap")
fi
for extra in "$@"; do
  dpkg -s "$extra" >/dev/null 2>&1 || packages+=("$extra")
done
if [ "${#packages[@]}" -gt 0 ]; then
  apt_update
  echo "setup-system: installing ${packages[*]}"
  apt-get install -y -qq "${packages[@]}" >/dev/null
fi
echo "setup-system: PostgreSQL $major with pgTAP ready"
