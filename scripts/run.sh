#!/usr/bin/env bash
# `make run`: serve against $CHROMA_URL, or start a local Chroma dev server
# first (data under ./data/chroma, port 8000) when CHROMA_URL is unset.
set -euo pipefail
chroma_pid=
cd "$(dirname "$0")/.."
pkg=".tools/node_modules/chromadb-js-bindings-linux-x64-gnu"
if [ -z "${CHROMA_URL:-}" ]; then
	if [ ! -d "$pkg" ]; then
		make tools
	fi
	mkdir -p data/chroma
	echo "CHROMA_URL is unset: starting a local Chroma dev server on 127.0.0.1:8000 (data in ./data/chroma, log in ./data/chroma.log)"
	node -e "require(process.argv[1]).cli(['chroma','run','--path',process.argv[2],'--port','8000'])" \
		"$PWD/$pkg" "$PWD/data/chroma" >data/chroma.log 2>&1 &
	chroma_pid=$!
	trap 'kill $chroma_pid 2>/dev/null || true' EXIT
	for _ in $(seq 1 60); do
		curl -fsS http://127.0.0.1:8000/api/v2/heartbeat >/dev/null 2>&1 && break
		kill -0 $chroma_pid 2>/dev/null || { echo "chroma failed to start; see data/chroma.log" >&2; exit 1; }
		sleep 0.5
	done
	export CHROMA_URL=http://127.0.0.1:8000
fi
# serve runs in the background so that Ctrl-C or a TERM reaches both it and Chroma.
bin/chromadb-rollback serve --data-dir ./data "$@" &
serve_pid=$!
trap 'kill -TERM $serve_pid 2>/dev/null || true' INT TERM
wait $serve_pid || true
wait $serve_pid
