#!/usr/bin/env bash
# Lint asterisk_conf/extensions_custom.conf with asterisklint (pip: asterisklint==0.4.3, in the
# "test" extra). asterisklint wants a path to an extensions.conf, so this builds one in a
# temporary directory: stand-ins for the contexts FreePBX or a typical plain Asterisk provides
# (from-internal with the transfer targets), then #include of our file.
#
# Fails on every message except "app 'AudioSocket' does not exist": asterisklint 0.4.3 predates
# app_audiosocket, so that one is a gap in the linter, not in the dialplan.
# Usage: .ci/lint-dialplan.sh   (asterisklint from $ASTERISKLINT, PATH, .venv/ or ../venv/)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lint=${ASTERISKLINT:-$(command -v asterisklint || true)}
for candidate in "$root/.venv/bin/asterisklint" "$root/../venv/bin/asterisklint"; do
    if [ -z "$lint" ] && [ -x "$candidate" ]; then
        lint=$candidate
    fi
done
if [ -z "$lint" ]; then
    echo "lint-dialplan: asterisklint not found; pip install asterisklint==0.4.3" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp "$root/asterisk_conf/extensions_custom.conf" "$work/extensions_custom.conf"
cat > "$work/extensions.conf" <<'CONF'
[general]

[globals]

; Stand-in for what FreePBX (or a typical plain Asterisk) provides. Exact extensions, not
; patterns, so a typo in a transfer target is reported.
[from-internal]
include => agi-voice-example
exten => 0,1,NoOp(operator)
exten => 2001,1,NoOp(billing)
exten => 2002,1,NoOp(sales)
exten => 2003,1,NoOp(support)

#include "extensions_custom.conf"
CONF

set +e
output=$(cd "$work" && "$lint" dialplan-check extensions.conf 2>&1)
status=$?
set -e

if [ -n "$output" ]; then
    printf '%s\n' "$output"
fi
unexpected=$(printf '%s\n' "$output" \
    | grep -v -E "E_APP_MISSING: app 'AudioSocket' does not exist" \
    | grep -v -E '^[[:space:]]*$' || true)
if [ -n "$unexpected" ]; then
    echo "lint-dialplan: FAILED (asterisklint exit $status); unexpected messages above" >&2
    exit 1
fi
echo "lint-dialplan: OK (asterisklint exit $status; only known AudioSocket gaps, if any)"
