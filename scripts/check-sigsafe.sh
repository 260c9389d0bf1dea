#!/bin/sh
# check-sigsafe.sh OBJ — fail when the signal-context object calls anything
# outside the allow-list of async-signal-safe functions. Reads the call/jump
# relocations of `objdump -dr` (direct calls through the PLT) and counts
# indirect calls (only the libunwind walk, through sampler_unw_backtrace, is
# expected). Used by `make check-sigsafe` and by the test suite.
set -eu
obj=${1:-build/obj/preload/sighandler.o}
# POSIX async-signal-safe functions this handler may use, plus shim functions
# documented as async-signal-safe (preload/hooks.c: hooks_real_sigaction).
allow="__errno_location clock_gettime raise sigaction memset memcpy syscall
__stack_chk_fail hooks_real_sigaction ring_put"
calls=$(objdump -dr "$obj" | awk '/R_X86_64_(PLT32|PC32)/ { s=$3; sub(/[-+]0x[0-9a-f]+$/, "", s); print s }' | sort -u)
bad=""
for c in $calls; do
    case $c in
        sampler_*|.text*|.rodata*|.bss*|.data*) continue ;; # data references and own statics
    esac
    ok=0
    for a in $allow; do [ "$c" = "$a" ] && ok=1; done
    [ $ok -eq 1 ] || bad="$bad $c"
done
# Data references (R_X86_64_PC32 to variables) are not calls; keep only symbols
# that are functions (undefined or text) in the object.
real_bad=""
for c in $bad; do
    if nm "$obj" | grep -qE " [UTt] $c\$"; then real_bad="$real_bad $c"; fi
done
indirect=$(objdump -d "$obj" | grep -cE 'call +\*%' || true)
status=0
if [ -n "$real_bad" ]; then
    echo "check-sigsafe: $obj calls functions outside the async-signal-safe allow-list:$real_bad"
    status=1
fi
if [ "$indirect" -gt 1 ]; then
    echo "check-sigsafe: $obj makes $indirect indirect calls (1 expected: the libunwind walk)"
    status=1
fi
[ $status -eq 0 ] && echo "check-sigsafe: $obj calls only: $(echo $calls | tr '\n' ' ')"
exit $status
