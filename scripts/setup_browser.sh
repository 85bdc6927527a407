#!/bin/sh
# The web page's end-to-end test drives Debian's chromium headless (Playwright with executable_path:
# Playwright's own browser download cannot reach its servers here). Install it once.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
[ -x /usr/bin/chromium ] && exit 0
sh "$(dirname "$0")/apt_install.sh" chromium
case $? in
  0) exit 0 ;;
  2) echo "setup_browser: no apt-get; install Chromium yourself (MLX_BLUEY_CHROMIUM=/path/to/chrome) for tests/test_web.py" >&2
     exit 0 ;;
  *) echo "setup_browser: could not install chromium" >&2
     exit 1 ;;
esac
