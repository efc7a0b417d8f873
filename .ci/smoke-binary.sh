#!/usr/bin/env bash
# What the container relies on, without a Docker engine: the compiled binary alone in an empty
# folder, an empty environment plus LUCIUS_* variables, a non-root user; a command is accepted,
# `lucius healthcheck` passes, SIGTERM stops it with exit code 0.
set -euo pipefail
cd "$(dirname "$0")/.."

bun run build
dir=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$dir"' EXIT
cp dist/lucius "$dir/"
chmod 755 "$dir" "$dir/lucius"
cd "$dir"

port=$(( 20000 + RANDOM % 20000 ))
as_user=()
# setpriv execs in place (runuser would fork, and answer SIGTERM with its own exit code 143).
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1; then as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups); fi
run() { "${as_user[@]}" env -i NODE_ENV=production LUCIUS_HOST=127.0.0.1 LUCIUS_PORT="$port" ./lucius "$@"; }

# exec: the signal below must reach the service, not a shell around it.
(exec "${as_user[@]}" env -i NODE_ENV=production LUCIUS_HOST=127.0.0.1 LUCIUS_PORT="$port" ./lucius serve) > "$dir/service.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do
  if run healthcheck 2>/dev/null; then break; fi
  sleep 0.1
done
run healthcheck
echo "smoke: healthcheck passed (as ${as_user[*]:-$(id -un)})"

status=$(bun -e "
  const r = await fetch('http://127.0.0.1:$port/v1/commands', { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ requestType: 'document.ocr', tenantId: 'smoke', payload: { documentId: 'd1', documentUri: 'https://files.example/d1.pdf', contentType: 'application/pdf' } }) });
  console.log(r.status);")
if [ "$status" != 202 ]; then echo "smoke: POST /v1/commands answered $status"; cat "$dir/service.log"; exit 1; fi
echo "smoke: command accepted (202)"

kill -TERM "$pid"
code=0
wait "$pid" || code=$?
if [ "$code" != 0 ]; then echo "smoke: exit code $code after SIGTERM"; cat "$dir/service.log"; exit 1; fi
echo "smoke: stopped cleanly on SIGTERM"
