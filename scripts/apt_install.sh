#!/bin/sh
# apt_install.sh PACKAGE: install a Debian package, as root or with passwordless sudo, refreshing the
# package lists once if the first try fails. Exit status: 0 installed, 1 not, 2 no apt-get here.
set -u
command -v apt-get >/dev/null 2>&1 || exit 2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo -n"
echo "$(basename "$0"): installing $1"
$SUDO apt-get install -y -q "$1" >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q "$1" >/dev/null 2>&1
}
