#!/bin/sh
# make run: profile examples/busy (via $B/ddrun, on the embedded default:
# no Agent needed) and print its top functions, read back from the written
# profile with `go tool pprof` — a reader this project did not write.
set -eu
B=${B:-build}
out="$B/run-example/ddshim-out"
rm -rf "$B/run-example"
mkdir -p "$B/run-example"
chmod 700 "$B/run-example"
echo "== $B/ddrun --service busy-example --output $out -- $B/progs/busy 3000"
"$B/ddrun" --service busy-example --output "$out" -- "$B/progs/busy" 3000
echo
echo "== profiles written:"
ls -l "$out"
gohome="$B/run-example/go"
mkdir -p "$gohome"
echo
echo "== go tool pprof -top (cpu-time) of the files above:"
HOME=$(cd "$gohome" && pwd) GOCACHE=$(cd "$gohome" && pwd)/cache GOTOOLCHAIN=local \
    go tool pprof -symbolize=none -top -nodecount=15 -sample_index=cpu-time "$out"/*.pprof.gz
