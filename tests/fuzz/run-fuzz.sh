#!/bin/sh
# tests/fuzz/run-fuzz.sh [seconds] — build the libFuzzer target for the HTTP
# parsers (clang, ASan + UBSan) into $B/fuzz/ and run it for the given number
# of seconds (default 20) on a copy of tests/fuzz/corpus/http_parser/, so the
# inputs it discovers stay out of the source tree. Exits non-zero on a crash,
# a sanitizer report, an invariant violation or a build failure; a crashing
# input is left in $B/fuzz/ as crash-*. Exit 3: no clang/libFuzzer here. Run from the repository root
# (make fuzz does; FUZZ_SECONDS sets the time).
set -u
secs=${1:-20}
B=${B:-build}
out="$B/fuzz"
CLANG=${CLANG:-clang}

if ! command -v "$CLANG" >/dev/null 2>&1; then
    echo "run-fuzz: $CLANG not found (apt-get install clang libclang-rt-14-dev)" >&2
    exit 3
fi
mkdir -p "$out" || exit 2
# Exit 3 when this clang cannot build any libFuzzer target (runtime missing):
# the caller reports that as a skip, not as a failure of the parser.
probe="$out/probe"
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ return 0; }\n' >"$probe.c"
if ! "$CLANG" -fsanitize=fuzzer,address,undefined -o "$probe" "$probe.c" >/dev/null 2>&1; then
    echo "run-fuzz: $CLANG cannot link a libFuzzer target (apt-get install libclang-rt-14-dev)" >&2
    exit 3
fi
bin="$out/fuzz_http_parser"
"$CLANG" -g -O1 -std=gnu11 -D_GNU_SOURCE -I. -Wall -Wextra -Wno-unused-parameter \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -o "$bin" tests/fuzz/fuzz_http_parser.c http/parser.c || {
    echo "run-fuzz: build of the fuzz target failed" >&2
    exit 1
}

corpus="$out/corpus-http_parser"
mkdir -p "$corpus" || exit 2
cp tests/fuzz/corpus/http_parser/* "$corpus/" || exit 2

log="$out/fuzz_http_parser.log"
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
"$bin" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/" "$corpus" >"$log" 2>&1
rc=$?
# the final figures: executions, speed, coverage, corpus size
grep -aE '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$log"
tail -n 40 "$log" | grep -aE 'cov:|ft:' | tail -n 1
if [ $rc -ne 0 ]; then
    echo "run-fuzz: fuzzer exited with status $rc; log: $log" >&2
    grep -aE 'ERROR|fuzz_http_parser:|SUMMARY|artifact' "$log" | head -n 20 >&2
    exit 1
fi
echo "run-fuzz: no crash in ${secs}s; log: $log"
