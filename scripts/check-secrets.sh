#!/usr/bin/env bash
# `make test`, last step: scripts/check-secrets.sh DIR fails, naming file and
# line, when an artifact of the test suite under DIR (TEST_ARTIFACTS: the
# services' logs, the audit events, audit trails; see pkg/testenv) holds a
# test secret. Every secret the tests make starts with CRBSECRET
# (testenv.SecretMarker), so no value needs to be known; age secret keys
# have their own prefix. Only the start of a leaked secret is printed.
set -euo pipefail
dir=${1:?usage: scripts/check-secrets.sh TEST_ARTIFACTS_DIR}
for kind in logs audit; do
	if [[ -z $(find "$dir/$kind" -type f -print -quit 2>/dev/null) ]]; then
		echo "check-secrets: no $kind under $dir: the tests wrote no artifacts (is TEST_ARTIFACTS set?)" >&2
		exit 1
	fi
done
pattern='CRBSECRET[a-z]{0,12}|AGE-SECRET-KEY-1[0-9A-Z]{20,}'
set +e
leaks=$(grep -rnIoE "$pattern" "$dir")
status=$?
set -e
if ((status > 1)); then
	echo "check-secrets: grep failed ($status)" >&2
	exit 1
fi
files=$(find "$dir" -type f | wc -l)
if [[ -n $leaks ]]; then
	echo "check-secrets: test secrets in $(grep -c '' <<<"$leaks") lines of the test artifacts:" >&2
	# file:line:match -> file:line: the secret's first characters
	sed -E 's/^(.*):([0-9]+):(.{0,18}).*$/  \1:\2: \3.../' <<<"$leaks" >&2
	exit 1
fi
echo "check-secrets: no test secret in $files artifact files under $dir"
