#!/bin/sh
# May this product release run here now? Asks the Tessera agent daemon with curl.
#
#   tessera-check.sh PRODUCT VERSION RELEASED [FEATURE]
#
# Speaks HTTP over the daemon's AF_UNIX socket (TESSERA_AGENT_SOCKET, default
# /run/tessera/agent.sock); needs curl 7.40 or later. Prints the answer's code on stdout.
# Exit codes: 0 entitled, 1 refused, 2 usage (or a question the agent calls malformed),
# 3 agent unreachable.
set -u

if [ "$#" -lt 3 ] || [ "$#" -gt 4 ] || [ -z "$1" ] || [ -z "$2" ] || [ -z "$3" ]; then
    echo "usage: $0 PRODUCT VERSION RELEASED(YYYY-MM-DD) [FEATURE]" >&2
    exit 2
fi
socket="${TESSERA_AGENT_SOCKET:-/run/tessera/agent.sock}"

set -- --data-urlencode "product=$1" --data-urlencode "version=$2" --data-urlencode "released=$3" \
    ${4+--data-urlencode "feature=$4"}
body=$(mktemp) || exit 3
trap 'rm -f "$body"' EXIT
# -G puts the encoded fields in the query string; -w prints only the HTTP status.
status=$(curl --silent --show-error --max-time 10 --unix-socket "$socket" -H 'Connection: close' \
    -G "$@" -o "$body" -w '%{http_code}' 'http://localhost/v1/check') || {
    echo "$0: agent unreachable at $socket" >&2
    exit 3
}
# Codes are lowercase words and hyphens: no JSON parser needed to pick one out.
code=$(sed -n 's/.*"code": *"\([a-z0-9-]*\)".*/\1/p' "$body")

case "$status" in
    200) [ "$code" = entitled ] && { echo "$code"; exit 0; } ;;
    403) [ -n "$code" ] && { echo "$code"; exit 1; } ;;
    400) echo "$0: ${code:-invalid-request}: the agent calls the question malformed" >&2; exit 2 ;;
esac
echo "$0: the agent answered HTTP $status (${code:-no code})" >&2
exit 3
