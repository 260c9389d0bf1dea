#!/bin/sh
# tests/e2e/test_ddrun.sh — the ddrun launcher ($B/ddrun, from ddrun/ddrun.c):
# options, env-files, precedence, --print-config, LD_PRELOAD handling, exit
# statuses, where it finds its library; and scripts/ddrun, the checkout's
# forwarder to build/ddrun. Prints TAP.
# Run from the repository root (tests/run.sh does, with B set). The real
# libddshim.so is not needed: a stub library (`int ddrun_stub;`) built under
# $B/tests/ stands in for it, so the loader accepts LD_PRELOAD quietly.

B=${B:-build}
root=$(pwd -P)
case $B in /*) DDRUN=$B/ddrun ;; *) DDRUN=$root/$B/ddrun ;; esac
FWD=$root/scripts/ddrun
n=0
failed=0

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ddrun-test.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
    n=$((n + 1)); failed=$((failed + 1))
    echo "not ok $n - $1"
    # diagnostics: what the last ddrun run printed
    for f in "$tmp/out" "$tmp/err"; do
        [ -s "$f" ] && sed "s|^|#   ${f##*/}: |" "$f" | head -20
    done
    return 0
}
check() { # description command...
    desc=$1; shift
    if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}
# ddr args...: run ddrun, stdout -> $tmp/out, stderr -> $tmp/err, status -> $rc
ddr() { "$DDRUN" "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?; }
has() { grep -qxF -- "$1" "$tmp/out"; }          # stdout has this exact line
err_has() { grep -qF -- "$1" "$tmp/err"; }       # stderr contains this text
out_has() { grep -qF -- "$1" "$tmp/out"; }       # stdout contains this text
rc_is() { [ "$rc" -eq "$1" ]; }
# The value and source columns of one --print-config row.
row() { grep "^$1 " "$tmp/out" | head -1; }
row_source_is() { row "$1" | grep -q "  $2\$"; }

# A clean environment: nothing DD_*/OTEL_* or preloaded from the caller.
for v in $(env | sed -n 's/^\(DD_[A-Za-z0-9_]*\)=.*/\1/p; s/^\(OTEL_[A-Za-z0-9_]*\)=.*/\1/p'); do
    unset "$v"
done
unset LD_PRELOAD

# ---- stub libraries --------------------------------------------------------------
mkdir -p "$B/tests"
printf 'int ddrun_stub;\n' >"$tmp/stub.c"
printf 'int ddrun_stub_user;\n' >"$tmp/stub2.c"
stub=$(cd "$B/tests" && pwd -P)/libddrun_stub.so
user_so=$(cd "$B/tests" && pwd -P)/libddrun_user.so
if ! cc -shared -fPIC -o "$stub" "$tmp/stub.c" || ! cc -shared -fPIC -o "$user_so" "$tmp/stub2.c"; then
    echo "not ok 1 - build the stub libraries with cc"
    echo "1..1"
    exit 1
fi
if [ ! -x "$DDRUN" ]; then
    echo "not ok 1 - $DDRUN is built (make $B/ddrun)"
    echo "1..1"
    exit 1
fi
DDSHIM_LIB=$stub
export DDSHIM_LIB

# ---- --help -----------------------------------------------------------------
ddr --help
check "--help exits 0" rc_is 0
missing=""
for o in --service --env --version --tags --agent --output --hz --env-file \
    --print-config --debug --lib --help -- ddshim-out Precedence 'Env-file format' \
    'ddrun --service web --env staging -- ./server --port 8080' \
    'ddrun --env-file production.env ./app'; do
    out_has "$o" || missing="$missing $o"
done
[ -z "$missing" ] || echo "# --help does not mention:$missing"
check "--help mentions every option, the env-file format, precedence, examples, ddshim-out" [ -z "$missing" ]
ddr -h
check "-h is --help" rc_is 0
check "-h prints the usage" out_has "Usage: ddrun"

# ---- flags map onto the environment ---------------------------------------------
ddr --service svc --env stg --version 1.2.3 --tags 'a:b,c:d' --agent http://agent:9126 \
    --output /tmp/ddrun-out --hz 123 -- env
check "flags: command ran (exit 0)" rc_is 0
check "--service -> DD_SERVICE" has DD_SERVICE=svc
check "--env -> DD_ENV" has DD_ENV=stg
check "--version -> DD_VERSION" has DD_VERSION=1.2.3
check "--tags -> DD_TAGS" has DD_TAGS=a:b,c:d
check "--agent -> DD_TRACE_AGENT_URL" has DD_TRACE_AGENT_URL=http://agent:9126
check "--output -> DD_SHIM_OUTPUT_DIR" has DD_SHIM_OUTPUT_DIR=/tmp/ddrun-out
check "--hz -> DD_SHIM_SAMPLE_HZ" has DD_SHIM_SAMPLE_HZ=123
check "LD_PRELOAD is the library's absolute path" has "LD_PRELOAD=$stub"
check "the loader accepted LD_PRELOAD (stderr empty)" [ ! -s "$tmp/err" ]
check "no --debug: DD_SHIM_LOG_LEVEL not set" sh -c "! grep -q '^DD_SHIM_LOG_LEVEL=' '$tmp/out'"

ddr --service=eqsvc --hz=10000 --agent=unix:///run/apm.sock env
check "--opt=value form works" has DD_SERVICE=eqsvc
check "--hz 10000 (the maximum) is accepted" has DD_SHIM_SAMPLE_HZ=10000
check "--agent unix:///path is accepted" has DD_TRACE_AGENT_URL=unix:///run/apm.sock

(cd "$tmp" && "$DDRUN" --output rel/dir env) >"$tmp/out" 2>"$tmp/err"
check "relative --output is made absolute" has "DD_SHIM_OUTPUT_DIR=$(cd "$tmp" && pwd)/rel/dir"

ddr --debug -- env
check "--debug -> DD_SHIM_LOG_LEVEL=debug" has DD_SHIM_LOG_LEVEL=debug
check "--debug prints LD_PRELOAD on stderr" err_has "LD_PRELOAD=$stub"
check "--debug prints the command line on stderr" err_has "exec env"

# shellcheck disable=SC2016 # the $ is meant literally
ddr -- printf '%s|' 'a b' '' 'c*' '$HOME'
# shellcheck disable=SC2016
check "arguments pass through unchanged (spaces, empty, glob, \$)" [ "$(cat "$tmp/out")" = 'a b||c*|$HOME|' ]
ddr sh -c 'printf "%s\n" "$@"' sh --service zz
check "options after the command belong to the command" sh -c "grep -qx -- --service '$tmp/out' && grep -qx zz '$tmp/out'"

# ---- LD_PRELOAD: keep the user's entries, no duplicate ----------------------------
LD_PRELOAD=$user_so ddr env
check "user's LD_PRELOAD kept, ours first" has "LD_PRELOAD=$stub:$user_so"
LD_PRELOAD="$user_so $stub" ddr env
check "space-separated LD_PRELOAD: kept, ours not added twice" has "LD_PRELOAD=$stub:$user_so"
LD_PRELOAD="$stub:$user_so:" ddr env
check "colon-separated LD_PRELOAD already holding ours: not added twice" has "LD_PRELOAD=$stub:$user_so"
ln -s "$stub" "$tmp/alias.so"
LD_PRELOAD="$tmp/alias.so" ddr env
check "ours under another name (symlink) is not preloaded twice" has "LD_PRELOAD=$stub"
check "the loader accepted the combined LD_PRELOAD" [ ! -s "$tmp/err" ]

# ---- exit status and signals are the command's ----------------------------------------
ddr false
check "ddrun false exits 1" rc_is 1
ddr sh -c 'exit 7'
check "ddrun sh -c 'exit 7' exits 7" rc_is 7
sh -c 'kill -TERM $$' 2>/dev/null
shell_rc=$?
ddr sh -c 'kill -TERM $$'
check "a command killed by SIGTERM gives what the shell gives ($shell_rc)" rc_is "$shell_rc"
# shellcheck disable=SC2016
"$DDRUN" sh -c 'echo $$' >"$tmp/out" 2>"$tmp/err" &
pid=$!
wait "$pid"
check "exec: the command runs in ddrun's own process" [ "$(cat "$tmp/out")" = "$pid" ]
echo piped | "$DDRUN" cat >"$tmp/out" 2>"$tmp/err"
check "stdin reaches the command" has piped

# ---- env-files ---------------------------------------------------------------------
rm -f /tmp/ddrun-never
cat >"$tmp/a.env" <<'EOF'
# a comment

   # an indented comment
DD_SERVICE=from-a
export DD_ENV="double quoted"
DD_VERSION='single quoted'
  DD_TAGS = team:x region:eu
DD_TRACE_SAMPLE_RATE=0.5
DD_TRACE_HEADER_TAGS=$(touch /tmp/ddrun-never) $HOME `id`
OTEL_SERVICE_NAME=otel-a
DD_PROFILING_ENABLED="false" 
EOF
printf 'DD_SHIM_LOG_LEVEL=info\r\nDD_AGENT_HOST=crlf-host\r\n' >"$tmp/crlf.env"
printf 'DD_TRACE_ENABLED=false' >"$tmp/nonl.env"   # no final newline
ddr --env-file "$tmp/a.env" --env-file "$tmp/crlf.env" --env-file "$tmp/nonl.env" env
check "env-file: command ran" rc_is 0
check "env-file: plain KEY=VALUE" has DD_SERVICE=from-a
check "env-file: export prefix and double quotes" has "DD_ENV=double quoted"
check "env-file: single quotes" has "DD_VERSION=single quoted"
check "env-file: indented line, spaces around = trimmed" has "DD_TAGS=team:x region:eu"
# shellcheck disable=SC2016
check "env-file: value taken literally, nothing expanded or executed" \
    has 'DD_TRACE_HEADER_TAGS=$(touch /tmp/ddrun-never) $HOME `id`'
check "env-file: no code executed" [ ! -e /tmp/ddrun-never ]
check "env-file: OTEL_* accepted" has OTEL_SERVICE_NAME=otel-a
check "env-file: quoted value with trailing blanks" has DD_PROFILING_ENABLED=false
check "env-file: CRLF line ends" has DD_AGENT_HOST=crlf-host
check "env-file: last line without newline" has DD_TRACE_ENABLED=false
check "env-file: comment lines set nothing" sh -c "! grep -q comment '$tmp/out'"

# precedence: flag > env-file (later file wins) > environment
printf 'DD_ENV=from-b\nDD_SERVICE=from-b\n' >"$tmp/b.env"
DD_ENV=from-environment DD_VERSION=from-environment DD_TAGS=env:tags \
    ddr --service from-flag --env-file "$tmp/a.env" --env-file "$tmp/b.env" -- env
check "precedence: flag beats env-file (flag given before --env-file)" has DD_SERVICE=from-flag
check "precedence: later env-file beats earlier one" has DD_ENV=from-b
check "precedence: env-file beats the environment" has "DD_VERSION=single quoted"
DD_SHIM_SAMPLE_HZ=5 ddr --env-file "$tmp/b.env" env
check "precedence: environment kept where no file or flag sets it" has DD_SHIM_SAMPLE_HZ=5
printf 'DD_SERVICE=one\nDD_SERVICE=two\n' >"$tmp/twice.env"
ddr --env-file "$tmp/twice.env" env
check "within one file, a later line wins" has DD_SERVICE=two

# bad files: exit 2, FILE:LINE named, command not run
marker=$tmp/ran
bad_file() { # description expected-text file-content
    printf '%b' "$3" >"$tmp/bad.env"
    rm -f "$marker"
    ddr --env-file "$tmp/bad.env" touch "$marker"
    if rc_is 2 && err_has "$tmp/bad.env:$2" && [ ! -e "$marker" ]; then
        ok "$1"
    else
        not_ok "$1 (rc=$rc)"
    fi
}
bad_file "env-file: line without = -> exit 2, names FILE:3, command not run" 3 \
    "# ok\nDD_ENV=x\nthis is not an assignment\n"
bad_file "env-file: non-DD key -> exit 2, names FILE:2, command not run" "2: PATH" \
    "DD_ENV=x\nPATH=/evil\n"
bad_file "env-file: LD_PRELOAD key rejected" "1: LD_PRELOAD" "LD_PRELOAD=/evil.so\n"
bad_file "env-file: unclosed quote -> exit 2 with FILE:LINE" 1 "DD_ENV=\"open\n"
bad_file "env-file: text after the closing quote -> exit 2" 1 "DD_TAGS=\"a\" b\n"
bad_file "env-file: invalid key name -> exit 2" 1 "DD-ENV=x\n"
bad_file "env-file: bad DD_SHIM_SAMPLE_HZ -> exit 2 with FILE:LINE" 2 "DD_ENV=x\nDD_SHIM_SAMPLE_HZ=fast\n"
bad_file "env-file: bad DD_TRACE_AGENT_URL -> exit 2 with FILE:LINE" 1 "DD_TRACE_AGENT_URL=localhost:8126\n"
rm -f "$marker"
ddr --env-file "$tmp/does-not-exist.env" touch "$marker"
check "env-file missing -> exit 2, command not run" sh -c "[ $rc -eq 2 ] && [ ! -e '$marker' ] && grep -q does-not-exist '$tmp/err'"

# ---- --print-config -------------------------------------------------------------
printf '# staging\nDD_ENV=staging\nexport DD_TAGS=team:x\n' >"$tmp/staging.env"
rm -f "$marker"
DD_VERSION=9.9 LD_PRELOAD=$user_so \
    ddr --service web --env-file "$tmp/staging.env" --print-config touch "$marker"
check "--print-config exits 0" rc_is 0
check "--print-config does not run the command" [ ! -e "$marker" ]
missing=""
for s in DD_SERVICE DD_ENV DD_VERSION DD_TAGS DD_TRACE_AGENT_URL DD_AGENT_HOST \
    DD_TRACE_AGENT_PORT DD_PROFILING_ENABLED DD_TRACE_ENABLED DD_PROFILING_UPLOAD_PERIOD \
    DD_TRACE_SAMPLE_RATE DD_SHIM_SAMPLE_HZ DD_SHIM_OUTPUT_DIR DD_SHIM_DWARF_MAX_BYTES \
    DD_SHIM_LOG_LEVEL DD_SHIM_ENABLED LD_PRELOAD; do
    grep -q "^$s  *[^ ]" "$tmp/out" || missing="$missing $s"
done
[ -z "$missing" ] || echo "# --print-config lacks:$missing"
check "--print-config prints every setting" [ -z "$missing" ]
check "source: flag" row_source_is DD_SERVICE "flag --service"
check "source: env-file FILE:LINE" row_source_is DD_ENV "env-file $tmp/staging.env:2"
check "source: env-file with export prefix" row_source_is DD_TAGS "env-file $tmp/staging.env:3"
check "source: environment" row_source_is DD_VERSION environment
check "value: environment" sh -c "grep -q '^DD_VERSION  *9.9 ' '$tmp/out'"
check "source: default, DD_SHIM_SAMPLE_HZ 99" sh -c "grep -q '^DD_SHIM_SAMPLE_HZ  *99  *default\$' '$tmp/out'"
check "default DD_PROFILING_UPLOAD_PERIOD 60" sh -c "grep -q '^DD_PROFILING_UPLOAD_PERIOD  *60  *default\$' '$tmp/out'"
check "default DD_SHIM_OUTPUT_DIR explains ./ddshim-out" \
    sh -c "grep '^DD_SHIM_OUTPUT_DIR ' '$tmp/out' | grep -q 'ddshim-out.*default\$'"
if [ -S /var/run/datadog/apm.socket ]; then want_url=unix:///var/run/datadog/apm.socket; else want_url=http://localhost:8126; fi
check "default DD_TRACE_AGENT_URL ($want_url)" \
    sh -c "grep -q '^DD_TRACE_AGENT_URL  *$want_url  *default\$' '$tmp/out'"
check "LD_PRELOAD row: library first, user's entry kept" \
    sh -c "grep -q '^LD_PRELOAD  *$stub:$user_so ' '$tmp/out'"
# aligned: every row's value starts in the same column
cols=$(awk '{ match($0, /^[A-Z_]+ +/); print RLENGTH }' "$tmp/out" | sort -u | wc -l)
check "--print-config columns are aligned" [ "$cols" -eq 1 ]

ddr --print-config ./some/dir/myserver --port 1
check "default DD_SERVICE is the command's basename" \
    sh -c "grep -q '^DD_SERVICE  *myserver  *default\$' '$tmp/out'"
ddr --print-config
check "--print-config needs no command" rc_is 0
DD_AGENT_HOST=agent.internal DD_TRACE_AGENT_PORT=9999 ddr --print-config
if [ ! -S /var/run/datadog/apm.socket ]; then
    check "default agent URL is built from DD_AGENT_HOST/DD_TRACE_AGENT_PORT" \
        sh -c "grep -q '^DD_TRACE_AGENT_URL  *http://agent.internal:9999  *default\$' '$tmp/out'"
else
    ok "default agent URL built from DD_AGENT_HOST # SKIP the Agent socket exists here"
fi
OTEL_SERVICE_NAME=otel-svc ddr --print-config
check "OTEL_SERVICE_NAME used for DD_SERVICE when it is unset" \
    sh -c "grep -q '^DD_SERVICE  *otel-svc .*OTEL_SERVICE_NAME' '$tmp/out'"
printf 'DD_ENV=\n' >"$tmp/empty.env"
DD_ENV=inherited ddr --env-file "$tmp/empty.env" --print-config
check "env-file DD_ENV= hides the inherited value (empty counts as unset)" \
    sh -c "grep '^DD_ENV ' '$tmp/out' | grep -q '(unset) *default; the empty DD_ENV from env-file $tmp/empty.env:1'"
ddr --agent 'http://[::1]:8126' --print-config
check "--agent accepts an IPv6 literal" rc_is 0
DD_API_KEY=sekrit-123 ddr --print-config
check "--print-config hides secret-looking values" sh -c "grep -q '^DD_API_KEY ' '$tmp/out' && ! grep -q sekrit '$tmp/out'"
DD_SERIVCE=typo ddr --print-config
check "--print-config flags unknown DD_* variables" sh -c "grep '^DD_SERIVCE ' '$tmp/out' | grep -q 'not read by libddshim'"

# ---- flag validation -------------------------------------------------------------
for bad in 0 10001 abc 1.5 -3 99999999999999999999 ''; do
    rm -f "$marker"
    ddr --hz "$bad" touch "$marker"
    if rc_is 2 && err_has "--hz" && err_has "1 to 10000" && [ ! -e "$marker" ]; then
        ok "--hz '$bad' -> exit 2, message names --hz and its range"
    else
        not_ok "--hz '$bad' -> exit 2, message names --hz and its range (rc=$rc)"
    fi
done
ddr --hz 1 true
check "--hz 1 (the minimum) is accepted" rc_is 0
for bad in localhost:8126 https://agent:8126 ftp://x http:// http://h:65536 http://h: unix://relative; do
    ddr --agent "$bad" true
    if rc_is 2 && err_has "--agent"; then ok "--agent '$bad' -> exit 2 naming --agent"; else not_ok "--agent '$bad' -> exit 2 naming --agent (rc=$rc)"; fi
done
ddr --bogus true
check "unknown option -> exit 2" rc_is 2
check "unknown option -> names it and hints at --help" sh -c "grep -q -- --bogus '$tmp/err' && grep -q -- --help '$tmp/err'"
ddr
check "no command -> exit 2 with usage" sh -c "[ $rc -eq 2 ] && grep -qi usage '$tmp/err'"
ddr --service web --
check "options but no command -> exit 2" rc_is 2
ddr --service
check "option without its value -> exit 2" rc_is 2
ddr --version
check "--version without a value -> exit 2 explaining DD_VERSION" sh -c "[ $rc -eq 2 ] && grep -q DD_VERSION '$tmp/err'"

# ---- the library -------------------------------------------------------------------
rm -f "$marker"
DDSHIM_LIB=$tmp/nope/libddshim.so ddr touch "$marker"
check "missing library -> exit 2, command not run" sh -c "[ $rc -eq 2 ] && [ ! -e '$marker' ]"
check "missing library -> message names the path and suggests make" sh -c "grep -q '$tmp/nope/libddshim.so' '$tmp/err' && grep -q make '$tmp/err'"
ddr --lib "$tmp/nope.so" true
check "missing --lib library -> exit 2" rc_is 2
cp "$user_so" "$tmp/other.so"
(cd "$tmp" && "$DDRUN" --lib ./other.so env) >"$tmp/out" 2>"$tmp/err"
check "--lib beats DDSHIM_LIB; a relative path is made absolute" has "LD_PRELOAD=$(cd "$tmp" && pwd)/other.so"

# ---- the command -------------------------------------------------------------------
ddr ddrun-no-such-command-xyz
check "command not found -> 127" rc_is 127
check "command not found -> shell-like message" err_has "ddrun-no-such-command-xyz: command not found"
ddr ./no/such/path
check "missing path -> 127" rc_is 127
printf 'echo hi\n' >"$tmp/noexec"
chmod 644 "$tmp/noexec"
ddr "$tmp/noexec"
if [ "$(id -u)" -eq 0 ] || [ ! -x "$tmp/noexec" ]; then
    check "not executable -> 126" rc_is 126
    check "not executable -> Permission denied" err_has "Permission denied"
fi
ddr "$tmp"
check "a directory -> 126" rc_is 126

# ---- invocation: through symlinks, from any cwd -----------------------------------
# The default library is libddshim.so next to ddrun's real file: $B/libddshim.so.
case $B in /*) want_lib=$B/libddshim.so ;; *) want_lib=$root/$B/libddshim.so ;; esac
mkdir -p "$tmp/bin" "$tmp/elsewhere"
ln -s "$DDRUN" "$tmp/bin/ddrun-link1"
ln -s ddrun-link1 "$tmp/bin/ddrun"
(cd "$tmp/elsewhere" && env -u DDSHIM_LIB PATH="$tmp/bin:$PATH" ddrun --print-config) >"$tmp/out" 2>"$tmp/err"
check "via a symlink chain from another cwd: default library is <repo>/$B/libddshim.so" \
    sh -c "grep -q '^LD_PRELOAD  *$want_lib' '$tmp/out'"
(cd "$tmp/elsewhere" && PATH="$tmp/bin:$PATH" ddrun sh -c 'exit 3') >"$tmp/out" 2>"$tmp/err"
check "via a symlink from another cwd: runs the command" [ $? -eq 3 ]
(cd / && env -u DDSHIM_LIB "$DDRUN" --print-config) >"$tmp/out" 2>"$tmp/err"
check "from /: default library path is right" sh -c "grep -q '^LD_PRELOAD  *$want_lib' '$tmp/out'"

# An installed copy (ddrun and libddshim.so side by side, reached through a
# relative symlink from a bin directory) preloads the library beside it.
mkdir -p "$tmp/opt/ddshim" "$tmp/usrbin"
cp "$DDRUN" "$tmp/opt/ddshim/ddrun"
cp "$stub" "$tmp/opt/ddshim/libddshim.so"
ln -s ../opt/ddshim/ddrun "$tmp/usrbin/ddrun"
(cd "$tmp/elsewhere" && env -u DDSHIM_LIB PATH="$tmp/usrbin:$PATH" ddrun env) >"$tmp/out" 2>"$tmp/err"
check "installed copy via a relative symlink: preloads the libddshim.so beside it" \
    has "LD_PRELOAD=$tmp/opt/ddshim/libddshim.so"
rm "$tmp/opt/ddshim/libddshim.so"
rm -f "$marker"
(cd "$tmp/elsewhere" && env -u DDSHIM_LIB "$tmp/usrbin/ddrun" touch "$marker") >"$tmp/out" 2>"$tmp/err"
rc=$?
check "installed copy without its library: exit 2, names the path, command not run" \
    sh -c "[ $rc -eq 2 ] && [ ! -e '$marker' ] && grep -qF '$tmp/opt/ddshim/libddshim.so' '$tmp/err'"

# ---- scripts/ddrun: the checkout's forwarder to build/ddrun ---------------------------
# A checkout of its own under $tmp (the forwarder and a copy of the binary under
# test), so these checks do not depend on which build directory this run uses.
co=$tmp/checkout
mkdir -p "$co/scripts" "$co/build"
cp "$FWD" "$co/scripts/ddrun"
cp "$DDRUN" "$co/build/ddrun"
cp "$stub" "$co/build/libddshim.so"
"$co/scripts/ddrun" sh -c 'exit 6' >"$tmp/out" 2>"$tmp/err"
check "scripts/ddrun runs the command through build/ddrun (its exit status)" [ $? -eq 6 ]
(cd "$tmp/elsewhere" && env -u DDSHIM_LIB "$co/scripts/ddrun" env) >"$tmp/out" 2>"$tmp/err"
check "scripts/ddrun: default library is the checkout's build/libddshim.so" has "LD_PRELOAD=$co/build/libddshim.so"
ln -s "$co/scripts/ddrun" "$tmp/bin/fwd-link1"
ln -s fwd-link1 "$tmp/bin/fwd"
(cd "$tmp/elsewhere" && env -u DDSHIM_LIB PATH="$tmp/bin:$PATH" fwd env) >"$tmp/out" 2>"$tmp/err"
check "scripts/ddrun via a symlink chain from another cwd: the checkout's library" \
    has "LD_PRELOAD=$co/build/libddshim.so"
ln -s "$co/scripts" "$tmp/scripts-link"
(cd "$tmp/elsewhere" && env -u DDSHIM_LIB "$tmp/scripts-link/ddrun" env) >"$tmp/out" 2>"$tmp/err"
check "scripts/ddrun in a symlinked scripts/ directory: the checkout's library" \
    has "LD_PRELOAD=$co/build/libddshim.so"
(cd "$co/scripts" && sh ddrun sh -c 'exit 5') >"$tmp/out" 2>"$tmp/err"
check "sh scripts/ddrun works (the forwarder is POSIX sh)" [ $? -eq 5 ]
# shellcheck disable=SC2016
"$co/scripts/ddrun" sh -c 'echo $$' >"$tmp/out" 2>"$tmp/err" &
pid=$!
wait "$pid"
check "scripts/ddrun: the command runs in the forwarder's own process (exec, no fork)" [ "$(cat "$tmp/out")" = "$pid" ]
env PATH=/nonexistent "$co/scripts/ddrun" /bin/sh -c 'exit 4' >"$tmp/out" 2>"$tmp/err"
check "scripts/ddrun needs no program from PATH when it is not a symlink" [ $? -eq 4 ]
rm "$co/build/ddrun"
rm -f "$marker"
"$co/scripts/ddrun" touch "$marker" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "scripts/ddrun without build/ddrun: exit 2, says to run make in the checkout, command not run" \
    sh -c "[ $rc -eq 2 ] && [ ! -e '$marker' ] && grep -qF '$co/build/ddrun is not built' '$tmp/err' && grep -q make '$tmp/err'"
if [ -x "$root/build/ddrun" ]; then
    (cd / && env -u DDSHIM_LIB "$FWD" --print-config) >"$tmp/out" 2>"$tmp/err"
    check "this checkout's scripts/ddrun runs build/ddrun (default library build/libddshim.so)" \
        sh -c "grep -q '^LD_PRELOAD  *$root/build/libddshim.so' '$tmp/out'"
else
    ok "this checkout's scripts/ddrun runs build/ddrun # SKIP build/ddrun is not built (a sanitizer-only run)"
fi

# ---- what a C launcher must also get right ---------------------------------------------
# The command's environment: the caller's, plus only what ddrun documents; no
# shell's SHLVL, _ or refreshed PWD, and odd names passed through.
callenv() { env -u SHLVL -u _ -u OLDPWD PWD=/stale/pwd 'odd.name=1' 'BASH_FUNC_f%%=() { :; }' "$@"; }
callenv env | sort >"$tmp/env.direct"
callenv "$DDRUN" env >"$tmp/out" 2>"$tmp/err"
grep -v -e '^LD_PRELOAD=' -e '^DD_SHIM_ANNOUNCE_PID=' "$tmp/out" | sort >"$tmp/env.ddrun"
check "the command's environment is the caller's plus LD_PRELOAD and DD_SHIM_ANNOUNCE_PID only" \
    cmp -s "$tmp/env.direct" "$tmp/env.ddrun"
# shellcheck disable=SC2016
ddr sh -c 'echo "$$ $DD_SHIM_ANNOUNCE_PID"'
check "DD_SHIM_ANNOUNCE_PID is the command's own pid" sh -c "read a b <'$tmp/out' && [ \"\$a\" = \"\$b\" ]"

# Nothing of ddrun's own on stdout, whatever goes wrong.
for args in "--bogus true" "--hz 0 true" "--env-file $tmp/bad.env true" "ddrun-no-such-command-xyz" "$tmp"; do
    # shellcheck disable=SC2086 # split on purpose
    ddr $args
    if [ ! -s "$tmp/out" ] && [ -s "$tmp/err" ]; then ok "ddrun $args: message on stderr, nothing on stdout"; else not_ok "ddrun $args: message on stderr, nothing on stdout"; fi
done
"$DDRUN" --help >/dev/full 2>"$tmp/err"
rc=$?
check "--help to a full disk: exit 1 and a write error on stderr" sh -c "[ $rc -eq 1 ] && grep -q 'write error' '$tmp/err'"
"$DDRUN" --print-config >/dev/full 2>"$tmp/err"
rc=$?
check "--print-config to a full disk: exit 1 and a write error on stderr" sh -c "[ $rc -eq 1 ] && grep -q 'write error' '$tmp/err'"

# Any length: env-file lines, flag values, the command line (no fixed buffers).
# 100,000 bytes: under the kernel's 128 KiB limit on one environment string.
big=$(head -c 100000 /dev/zero | tr '\0' x)
printf '# a long line\nDD_TAGS=%s\nexport DD_ENV = "%s"\n' "$big" "$big" >"$tmp/long.env"
# shellcheck disable=SC2016
ddr --env-file "$tmp/long.env" sh -c 'printf "%s %s\n" "${#DD_TAGS}" "${#DD_ENV}"'
check "env-file: 100,000-byte values on one line arrive whole" has "100000 100000"
printf 'DD_TAGS=a\n%s\n' "$big" >"$tmp/long.env"
ddr --env-file "$tmp/long.env" true
check "env-file: a 100,000-byte malformed line -> exit 2 naming FILE:2" sh -c "[ $rc -eq 2 ] && grep -qF '$tmp/long.env:2: expected KEY=VALUE' '$tmp/err'"
# shellcheck disable=SC2016
ddr --tags "$big" --service="$big" sh -c 'printf "%s %s\n" "${#DD_TAGS}" "${#DD_SERVICE}"'
check "flags: 100,000-byte values arrive whole" has "100000 100000"
ddr --print-config --tags "$big"
check "--print-config prints a 100,000-byte value whole" \
    sh -c "[ \"\$(awk '\$1 == \"DD_TAGS\" { print length(\$2), \$3, \$4 }' '$tmp/out')\" = '100000 flag --tags' ]"
ddr --debug -- printf '%s|' "$big" 'a b' ''
check "--debug quotes the command line as the shell would (a\\ b, '')" err_has "exec printf %s\\| $big a\\ b ''"

# How the command is found and run: as bash did (the script's exec).
mkdir -p "$tmp/p1" "$tmp/p2"
printf '#!/bin/sh\necho first\n' >"$tmp/p1/tool"
printf '#!/bin/sh\necho second\n' >"$tmp/p2/tool"
chmod 644 "$tmp/p1/tool"
chmod 755 "$tmp/p2/tool"
PATH="$tmp/p1:$tmp/p2:$PATH" ddr tool
check "PATH: a non-executable file is skipped for a later executable one" has second
chmod 644 "$tmp/p2/tool"
PATH="$tmp/p1:$tmp/p2:$PATH" ddr tool
check "PATH: only non-executable files -> 126, Permission denied" sh -c "[ $rc -eq 126 ] && grep -q 'p1/tool: Permission denied' '$tmp/err'"
printf 'echo "no #! line: $# args"\n' >"$tmp/p1/noshebang"
chmod 755 "$tmp/p1/noshebang"
ddr "$tmp/p1/noshebang" a b
check "a script without #! runs under /bin/sh (as execvp runs it)" has "no #! line: 2 args"
printf '\177ELF garbage' >"$tmp/p1/badelf"
chmod 755 "$tmp/p1/badelf"
ddr "$tmp/p1/badelf"
check "a broken binary -> 126, cannot execute binary file" sh -c "[ $rc -eq 126 ] && grep -q 'cannot execute binary file' '$tmp/err'"
printf '#!/nonexistent/interpreter\n' >"$tmp/p1/badinterp"
chmod 755 "$tmp/p1/badinterp"
ddr "$tmp/p1/badinterp"
check "a missing #! interpreter -> 127, required file not found" sh -c "[ $rc -eq 127 ] && grep -q 'required file not found' '$tmp/err'"

echo "1..$n"
[ "$failed" -eq 0 ]
