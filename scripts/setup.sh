#!/bin/sh
# setup.sh PKG... — installs the Debian packages that are missing, and says so.
# Waits up to 10 minutes for another apt-get (a second make on a fresh machine) to let go of the lock.
# Does nothing (and says nothing but one line) when everything is there.
missing=""
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "setup: all packages present ($*)"
  exit 0
fi
echo "setup: installing missing Debian packages:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ ! -f /tmp/.nostall-apt-updated ]; then
  $SUDO apt-get update -qq -o DPkg::Lock::Timeout=600 || { echo "setup: apt-get update failed; install by hand:$missing" >&2; exit 1; }
  touch /tmp/.nostall-apt-updated
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=600 $missing >/dev/null \
  || { echo "setup: apt-get install failed; install by hand:$missing" >&2; exit 1; }
echo "setup: installed$missing"
