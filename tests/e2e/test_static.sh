#!/bin/sh
# Static checks of the built library: only the interposed libc names are
# exported (nm -D against preload/exports.map), the agent library exports its
# one entry point, the signal-context object calls only async-signal-safe
# functions (scripts/check-sigsafe.sh), and neither library depends on
# libunwind or libstdc++ at link time (both are loaded privately or not at all).
B=${B:-build}
n=0; fail=0
check() { n=$((n+1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fail=1; fi; }

want=$(sed -n '/global:/,/local:/p' preload/exports.map | tr ' ;' '\n\n' | grep -E '^[a-z_0-9]+$' | grep -v -e '^global$' -e '^local$' | sort)
got=$(nm -D --defined-only "$B/libddshim.so" | awk '{print $3}' | sort)
[ "$want" = "$got" ]; check $? "libddshim.so exports exactly the interposed names of preload/exports.map"
[ "$got" != "" ]; check $? "the export list is not empty"
agent=$(nm -D --defined-only "$B/libddshim-agent.so" | awk '{print $3}' | sort | tr '\n' ' ')
[ "$agent" = "ddshim_agent_ops_v1 " ]; check $? "libddshim-agent.so exports only ddshim_agent_ops_v1 (got: $agent)"
out=$(sh scripts/check-sigsafe.sh "$B/obj/preload/sighandler.o" 2>&1); rc=$?
echo "# $out"
check $rc "the signal handler object calls only async-signal-safe functions"
readelf -d "$B/libddshim.so" | grep NEEDED | grep -qE 'libunwind|libstdc|libcurl|libdw'; rc=$?
[ $rc -ne 0 ]; check $? "libddshim.so links no libunwind/libstdc++/libcurl/libdw (loaded privately, later)"
echo "1..$n"
exit $fail
