#!/usr/bin/env bash
# `make run`: serve against $CHROMA_URL, or start a local Chroma dev server
# first (data under ./data/chroma, port $CHROMA_PORT, 8000 by default) when
# CHROMA_URL is unset.
set -euo pipefail
chroma_pid=
cd "$(dirname "$0")/.."
pkg=".tools/node_modules/chromadb-js-bindings-linux-x64-gnu"
if [ -z "${CHROMA_URL:-}" ]; then
	port="${CHROMA_PORT:-8000}"
	# Something already on the port (another Chroma: 8000 is its default)
	# would answer the heartbeat below while our own server failed to bind,
	# and serve would snapshot and roll back that server instead.
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "error: 127.0.0.1:$port is in use, so no local Chroma can start there: to serve against what runs there, set CHROMA_URL=http://127.0.0.1:$port; else stop it, or set CHROMA_PORT to a free port" >&2
		exit 1
	fi
	if [ ! -d "$pkg" ]; then
		make tools
	fi
	mkdir -p data/chroma
	echo "CHROMA_URL is unset: starting a local Chroma dev server on 127.0.0.1:$port (data in ./data/chroma, log in ./data/chroma.log)"
	node -e "require(process.argv[1]).cli(['chroma','run','--path',process.argv[2],'--port',process.argv[3]])" \
		"$PWD/$pkg" "$PWD/data/chroma" "$port" >data/chroma.log 2>&1 &
	chroma_pid=$!
	trap 'kill $chroma_pid 2>/dev/null || true' EXIT
	ready=
	for _ in $(seq 1 60); do
		kill -0 $chroma_pid 2>/dev/null || { echo "chroma failed to start; see data/chroma.log" >&2; exit 1; }
		if curl -fsS "http://127.0.0.1:$port/api/v2/heartbeat" >/dev/null 2>&1; then
			ready=1
			break
		fi
		sleep 0.5
	done
	[ -n "$ready" ] || { echo "chroma did not answer on 127.0.0.1:$port within 30s; see data/chroma.log" >&2; exit 1; }
	export CHROMA_URL="http://127.0.0.1:$port"
fi
# serve runs in the background so that Ctrl-C or a TERM reaches both it and Chroma.
bin/chromadb-rollback serve --data-dir ./data "$@" &
serve_pid=$!
trap 'kill -TERM $serve_pid 2>/dev/null || true' INT TERM
wait $serve_pid || true
wait $serve_pid
