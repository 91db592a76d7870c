#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The core names no system: the agent's core files must not mention a
# connector's product (Jira, JD Edwards) or its mechanisms (orchestrations),
# comments included, so a new connector never needs a core change. Prints
# every hit as file:line: text, then "N passed, N failed" (one check);
# exits 1 when anything is found or a core file is missing.
set -u
cd "$(dirname "$0")/.." || exit 2

CORE="agent/pipeline.c agent/writeback.c agent/agent.c agent/daemon.c agent/statusview.c
agent/statusd.c agent/main.c"
PATTERN='jira|jde|jd edwards|orchestrat|looker'

hits=0
for f in $CORE; do
    if [ ! -f "$f" ]; then
        echo "$f: missing (a core file moved? update tools/check_core_names.sh)"
        hits=$((hits + 1))
        continue
    fi
    n=$(grep -c -i -E "$PATTERN" "$f")
    if [ "$n" -gt 0 ]; then
        grep -n -i -E "$PATTERN" "$f" | sed "s|^|$f:|"
        hits=$((hits + n))
    fi
done
if [ "$hits" -eq 0 ]; then
    echo "core names no system: none of $(echo $CORE | wc -w) core files mentions $PATTERN"
    echo "1 passed, 0 failed"
    exit 0
fi
echo "core names a system: $hits hits of $PATTERN (case-insensitive) above"
echo "0 passed, 1 failed"
exit 1
