#!/bin/sh
# Install the Debian packages listed in scripts/deps.txt that are missing.
# Quiet and quick when everything is present (one dpkg-query).
set -eu
here=$(dirname "$0")
pkgs=$(grep -v '^#' "$here/deps.txt" | tr -s ' \n' '  ')
missing=""
for p in $pkgs; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = "installed" ] || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "make deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
