#!/usr/bin/env bash
# `make browser-deps`: Debian's Chromium (the browser tests drive it; never `playwright install`) and the
# CJK fonts (readable Chinese screenshots). Installs them where this user may (root, or sudo without a
# password) and apt-get exists; elsewhere prints the one command and lets the browser tests skip.
set -uo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing+=(fonts-noto-cjk)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
fi
if [ "$sudo" != "none" ] && command -v apt-get >/dev/null; then
    echo "Installing ${missing[*]} for the browser tests (apt-get)"
    $sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; } \
        && exit 0
    echo "apt-get could not install ${missing[*]}" >&2
fi
echo "The browser tests will be skipped: ${missing[*]} missing. Install with: sudo apt-get install -y ${missing[*]}"
[ "${CI:-}" = "true" ] && exit 1  # CI skips nothing
exit 0
