#!/bin/sh
# check-sigsafe.sh [OBJ] — fail when a signal-context object calls anything
# outside the allow-list of async-signal-safe functions. Reads the call/jump
# relocations of `objdump -dr` (direct calls through the PLT) and counts
# indirect calls. The signal-context objects are preload/sighandler.o (the
# handler) and preload/unwind.o (its stack walker), both checked; OBJ names
# the handler's object (default build/obj/preload/sighandler.o), the walker's is
# looked for next to it. Used by `make check-sigsafe` and by the test suite.
set -eu
obj=${1:-build/obj/preload/sighandler.o}
walker=$(dirname "$obj")/unwind.o
if [ ! -f "$walker" ]; then
    echo "check-sigsafe: $walker not found (build the shim first)"
    exit 1
fi
# POSIX async-signal-safe functions these objects may use, plus:
#  - shim functions documented as async-signal-safe (preload/hooks.c:
#    hooks_real_sigaction; preload/unwind.c: unwind_walk, which this script
#    checks in its own object);
#  - _dl_find_object: glibc >= 2.35, "MT-Safe | AS-Safe | AC-Safe" in the glibc
#    manual (lock-free, two copies of its data), the walker's way to find an
#    address's .eh_frame_hdr without the loader lock dl_iterate_phdr takes.
allow="__errno_location clock_gettime raise sigaction memset memcpy syscall
__stack_chk_fail hooks_real_sigaction ring_put unwind_walk _dl_find_object"

# check OBJ MAX_INDIRECT WHY: 0 when OBJ calls only allowed functions and
# makes at most MAX_INDIRECT indirect calls.
check() {
    o=$1
    calls=$(objdump -dr "$o" | awk '/R_X86_64_(PLT32|PC32)/ { s=$3; sub(/[-+]0x[0-9a-f]+$/, "", s); print s }' | sort -u)
    bad=""
    for c in $calls; do
        case $c in
            sampler_*|unwind_counters|.text*|.rodata*|.bss*|.data*) continue ;; # data references and own statics
            __asan_*|__ubsan_*) continue ;; # SANITIZER= builds: checks the compiler adds (the runtime is reached only to report an error, then die)
        esac
        ok=0
        for a in $allow; do [ "$c" = "$a" ] && ok=1; done
        [ $ok -eq 1 ] || bad="$bad $c"
    done
    # Data references (R_X86_64_PC32 to variables) are not calls; keep only symbols
    # that are functions (undefined or text) in the object.
    real_bad=""
    for c in $bad; do
        if nm "$o" | grep -qE " [UTt] $c\$"; then real_bad="$real_bad $c"; fi
    done
    indirect=$(objdump -d "$o" | grep -cE 'call +\*%' || true)
    st=0
    if [ -n "$real_bad" ]; then
        echo "check-sigsafe: $o calls functions outside the async-signal-safe allow-list:$real_bad"
        st=1
    fi
    if [ "$indirect" -gt "$2" ]; then
        echo "check-sigsafe: $o makes $indirect indirect calls ($2 expected: $3)"
        st=1
    fi
    [ $st -eq 0 ] && echo "check-sigsafe: $o calls only: $(echo $calls | tr '\n' ' ')"
    return $st
}

status=0
check "$obj" 1 "the libunwind walk" || status=1
check "$walker" 0 "none" || status=1
exit $status
