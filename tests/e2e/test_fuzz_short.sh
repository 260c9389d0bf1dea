#!/bin/sh
# A 20-second libFuzzer run of the HTTP parsers (tests/fuzz/run-fuzz.sh): the
# seed corpus and whatever the fuzzer reaches in that time must not crash,
# trip a sanitizer, or show a split that parses differently. `make fuzz` is the
# long run. Skipped (named) when clang or its libFuzzer runtime is missing.
if ! command -v clang >/dev/null 2>&1; then
    echo "ok 1 - short fuzz run of the HTTP parsers # SKIP clang/libFuzzer not available"
    echo "1..1"
    exit 0
fi
out=$(sh tests/fuzz/run-fuzz.sh 20 2>&1); rc=$?
echo "$out" | sed 's/^/# /'
if [ $rc -eq 3 ]; then
    echo "ok 1 - short fuzz run of the HTTP parsers # SKIP clang/libFuzzer not available"
elif [ $rc -eq 0 ]; then
    echo "ok 1 - 20 s of libFuzzer on the HTTP parsers: no crash, no split mismatch"
else
    echo "not ok 1 - 20 s of libFuzzer on the HTTP parsers: no crash, no split mismatch"
fi
echo "1..1"
[ $rc -eq 0 ] || [ $rc -eq 3 ]
