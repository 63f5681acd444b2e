#!/usr/bin/env bash
# Makes a local test CA, a server certificate for 127.0.0.1/localhost and client
# certificates, for trying NATS TLS (deploy/nats/tls.conf) on one machine. Not for
# production: use your own PKI there.
#
#   deploy/tls/make-test-ca.sh DIR [CLIENT ...]
#
# Writes into DIR (created if missing):
#   ca.pem, ca-key.pem               the test CA (10 years)
#   server.pem, server-key.pem       the server certificate: DNS localhost, IP 127.0.0.1 and ::1,
#                                    extra names from NATS_TLS_HOSTS (comma-separated, e.g.
#                                    "nats-1.example,10.0.0.5"); serverAuth and clientAuth, so
#                                    cluster nodes can present it on routes too
#   <client>.pem, <client>-key.pem   one client certificate per CLIENT (default: snapshotter
#                                    restorer watchdog auditor operator dashboard job_reindex)
#
# Idempotent: the CA and every certificate that still verifies against it, is valid for
# more than a day and (for the server) names the same hosts are kept; anything missing or
# stale is made again. Keys are written readable by the owner only.
#
# Server environment for deploy/nats/tls.conf:
#   NATS_SERVER_CERT=DIR/server.pem NATS_SERVER_KEY=DIR/server-key.pem NATS_SERVER_CA=DIR/ca.pem
# Client flags: --nats-ca DIR/ca.pem --nats-cert DIR/operator.pem --nats-key DIR/operator-key.pem
set -euo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
	exit 2
fi
dir=$1
shift
clients=("$@")
if [[ ${#clients[@]} -eq 0 ]]; then
	clients=(snapshotter restorer watchdog auditor operator dashboard job_reindex)
fi
command -v openssl >/dev/null || { echo "make-test-ca: openssl not found" >&2; exit 1; }

umask 077
mkdir -p "$dir"
cd "$dir"

# valid CERT: signed by our CA and not expiring within a day.
valid() {
	[[ -s "$1" && -s "${1%.pem}-key.pem" ]] &&
		openssl verify -CAfile ca.pem "$1" >/dev/null 2>&1 &&
		openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1
}

# newkey FILE: an ECDSA P-256 key.
newkey() {
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

if [[ -s ca.pem && -s ca-key.pem ]] && openssl x509 -in ca.pem -noout -checkend 86400 >/dev/null 2>&1; then
	echo "make-test-ca: keeping the CA in $dir"
else
	newkey ca-key.pem
	openssl req -x509 -new -key ca-key.pem -sha256 -days 3650 -subj "/CN=chromadb-rollback test CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
		-out ca.pem 2>/dev/null
	rm -f server.pem "${clients[@]/%/.pem}" # signed by the old CA
	echo "make-test-ca: made a new CA in $dir"
fi

# sign NAME CN EKU [SAN]: NAME.pem signed by the CA, key NAME-key.pem.
sign() {
	local name=$1 cn=$2 eku=$3 san=${4:-}
	local ext
	ext=$(mktemp)
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=$eku"
		[[ -n "$san" ]] && echo "subjectAltName=$san"
	} >"$ext"
	newkey "$name-key.pem"
	openssl req -new -key "$name-key.pem" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
	openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -sha256 -days 825 \
		-extfile "$ext" -out "$name.pem" 2>/dev/null
	rm -f "$name.csr" "$ext"
	echo "make-test-ca: made $dir/$name.pem"
}

san="DNS:localhost,IP:127.0.0.1,IP:::1"
IFS=',' read -r -a extra <<<"${NATS_TLS_HOSTS:-}"
for h in "${extra[@]}"; do
	h=${h// /}
	[[ -z "$h" ]] && continue
	if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san+=",IP:$h"; else san+=",DNS:$h"; fi
done
if valid server.pem && [[ "$(cat server.san 2>/dev/null)" == "$san" ]]; then
	echo "make-test-ca: keeping $dir/server.pem"
else
	sign server localhost serverAuth,clientAuth "$san"
	echo "$san" >server.san
fi

for c in "${clients[@]}"; do
	if [[ ! "$c" =~ ^[A-Za-z0-9_.-]+$ ]]; then
		echo "make-test-ca: client name $c: use letters, digits, '_', '-' and '.'" >&2
		exit 2
	fi
	if valid "$c.pem"; then
		echo "make-test-ca: keeping $dir/$c.pem"
	else
		sign "$c" "$c" clientAuth
	fi
done
chmod 644 ca.pem server.pem "${clients[@]/%/.pem}"
