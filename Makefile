# libddshim — build, test, run.
#   make            build/libddshim.so and build/ddrun (installs missing Debian packages first)
#   make test       unit + end-to-end tests; last line "N passed, N failed"
#   make run        profile an example program on the embedded default, print its top functions
#   make deps       install the Debian packages of scripts/deps.txt
#   SANITIZER=address|undefined   build everything with that sanitizer, in its own
#                   directory (build-asan/ or build-ubsan/; B=dir overrides), so its
#                   objects never mix with the plain build/. `make test SANITIZER=...`
#                   runs every test on that build (tests/run.sh: options, reports).
#   TESTS="test_sym test_upload.py"   run only these tests (with `make test`)

CC        ?= gcc
SANITIZER ?=
ifeq ($(SANITIZER),address)
  SANB    := build-asan
else ifeq ($(SANITIZER),undefined)
  SANB    := build-ubsan
else ifeq ($(SANITIZER),)
  SANB    := build
else
  $(error SANITIZER must be address or undefined)
endif
# Only `make B=dir` overrides the build directory (not a B in the environment).
ifneq ($(origin B),command line)
  B       := $(SANB)
endif
PROTO     := /usr/share/gocode/src/github.com/google/pprof/proto/profile.proto
VERSION   := 0.1.0

WARN      := -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
             -Werror=implicit-function-declaration -Werror=format
CFLAGS    ?= -O2 -g
CFLAGS    += -std=gnu11 -fPIC -pthread $(WARN) -D_GNU_SOURCE -DDDSHIM_VERSION='"$(VERSION)"' \
             -I. -I$(B)/gen
ifeq ($(SANITIZER),address)
  CFLAGS  += -fsanitize=address -fno-omit-frame-pointer
  LDSAN   := -fsanitize=address
else ifeq ($(SANITIZER),undefined)
  CFLAGS  += -fsanitize=undefined -fno-sanitize-recover=undefined
  LDSAN   := -fsanitize=undefined
endif
LIB_CFLAGS := $(CFLAGS) -fvisibility=hidden
LIBS      := -lprotobuf-c -lz -ljansson -ldw -lelf -ldl -lpthread

DEPS_STAMP := $(B)/.deps-ok
GEN_C     := $(B)/gen/profile.pb-c.c
GEN_H     := $(B)/gen/profile.pb-c.h
GEN_O     := $(B)/obj/gen/profile.pb-c.o

mod_objs   = $(patsubst %.c,$(B)/obj/%.o,$(wildcard $(1)/*.c))
COMMON_O  := $(call mod_objs,common)
PRELOAD_O := $(call mod_objs,preload)
PPROF_O   := $(call mod_objs,pprof) $(GEN_O)
SYM_O     := $(call mod_objs,symbolize)
# http/: parser and conn run in host threads (libddshim.so); the span rules in the uploader.
SPANRULES_O := $(filter-out $(B)/obj/http/parser.o $(B)/obj/http/conn.o,$(call mod_objs,http))
# libddshim.so: what runs inside the host (hooks, sampler, collector); libc only.
SHIM_OBJS := $(COMMON_O) $(PRELOAD_O) $(B)/obj/agent_io/collector.o $(B)/obj/agent_io/stacks.o \
             $(B)/obj/http/conn.o $(B)/obj/http/parser.o
# libddshim-agent.so: dlopen'd RTLD_LOCAL by the uploader thread on first use.
# libcurl is dlopen'd by curl_lazy.c when the Agent is first spoken to, not linked.
AGENT_OBJS := $(COMMON_O) $(B)/obj/agent_io/agent.o $(B)/obj/agent_io/transport.o $(B)/obj/agent_io/curl_lazy.o \
              $(B)/obj/agent_io/stacks.o \
              $(B)/obj/agent_io/traces.o $(B)/obj/agent_io/spans.o $(B)/obj/agent_io/spool.o \
              $(B)/obj/preload/config.o $(SPANRULES_O) $(PPROF_O) $(SYM_O)
LIB_OBJS  := $(SHIM_OBJS) $(AGENT_OBJS)

.PHONY: all deps test run clean check-sigsafe check-static bench fuzz
all: $(B)/libddshim.so $(B)/libddshim-agent.so $(B)/ddrun

deps:
	sh scripts/install-deps.sh
$(DEPS_STAMP): scripts/deps.txt scripts/install-deps.sh
	@sh scripts/install-deps.sh
	@mkdir -p $(B) && touch $@

$(GEN_C) $(GEN_H): $(DEPS_STAMP)
	@mkdir -p $(B)/gen
	protoc-c --c_out=$(B)/gen -I$(dir $(PROTO)) $(PROTO)

$(B)/obj/gen/%.o: $(B)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -w -c $< -o $@

$(B)/obj/%.o: %.c $(GEN_H) $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

$(B)/libddshim.so: $(SHIM_OBJS) preload/exports.map
	$(CC) -shared -o $@ $(SHIM_OBJS) -Wl,--version-script=preload/exports.map \
	    -Wl,-z,nodelete -Wl,--no-undefined $(LDSAN) -ldl -lpthread

$(B)/libddshim-agent.so: $(AGENT_OBJS) agent_io/agent.map
	$(CC) -shared -o $@ $(AGENT_OBJS) -Wl,--version-script=agent_io/agent.map \
	    -Wl,-z,nodelete -Wl,--no-undefined $(LDSAN) $(LIBS)

# ddrun: the launcher, a small program of its own (libc only). It finds
# libddshim.so next to its real file, so the three stay together in $(B).
# A static PIE: it starts ~0.5 ms sooner than a dynamic one (no loader, no
# libc.so to map), and the user's LD_PRELOAD is loaded only into the command,
# never into ddrun. Sanitizer builds link their (dynamic) runtime instead.
DDRUN_LDFLAGS := $(if $(SANITIZER),$(LDSAN),-static-pie)
$(B)/ddrun: ddrun/ddrun.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(DDRUN_LDFLAGS)

# ---- unit tests: each links only its own module (and common/) ----------------
UNIT_CFLAGS := $(CFLAGS)
$(B)/tests/test_pprof: tests/unit/test_pprof.c $(PPROF_O) $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(UNIT_CFLAGS) -o $@ $^ $(LDSAN) -lprotobuf-c -lz
$(B)/tests/test_sym: tests/unit/test_sym.c $(SYM_O) $(COMMON_O) $(B)/tests/libsymtest_dl.so
	@mkdir -p $(dir $@)
	$(CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_sym.c $(SYM_O) $(COMMON_O) $(LDSAN) -ldw -lelf -ldl \
	    -Wl,--export-dynamic-symbol=inflate
$(B)/tests/libsymtest_dl.so: tests/unit/symtest_dl.c
	@mkdir -p $(dir $@)
	$(CC) $(UNIT_CFLAGS) -shared -o $@ $<
$(B)/tests/test_transport: tests/unit/test_transport.c $(B)/obj/agent_io/transport.o $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(UNIT_CFLAGS) -o $@ $^ $(LDSAN) -lcurl -ljansson
$(B)/tests/test_config: tests/unit/test_config.c $(B)/obj/preload/config.o $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(UNIT_CFLAGS) -o $@ $^ $(LDSAN)
$(B)/tests/test_stacks: tests/unit/test_stacks.c $(B)/obj/agent_io/stacks.o $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(UNIT_CFLAGS) -o $@ $^ $(LDSAN)
$(B)/tests/test_spool: tests/unit/test_spool.c $(B)/obj/agent_io/spool.o $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(UNIT_CFLAGS) -o $@ $^ $(LDSAN)
$(B)/tests/test_traces: tests/unit/test_traces.c $(B)/obj/agent_io/traces.o $(B)/obj/agent_io/transport.o $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(UNIT_CFLAGS) -o $@ $^ $(LDSAN) -lcurl -ljansson -lmsgpackc
$(B)/tests/test_http_parser: tests/unit/test_http_parser.c $(B)/obj/http/parser.o $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(UNIT_CFLAGS) -o $@ $^ $(LDSAN)
$(B)/tests/test_span_rules: tests/unit/test_span_rules.c $(SPANRULES_O) $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(UNIT_CFLAGS) -o $@ $^ $(LDSAN)
UNIT_TESTS := $(patsubst tests/unit/test_%.c,$(B)/tests/test_%,$(wildcard tests/unit/test_*.c))

# ---- programs the end-to-end tests run under the shim ------------------------
# Built like distributions build: -O2, no frame pointers, with DWARF.
PROG_CFLAGS := -O2 -g -fomit-frame-pointer -pthread -D_GNU_SOURCE
$(B)/progs/%: tests/progs/%.c
	@mkdir -p $(dir $@)
	$(CC) $(PROG_CFLAGS) -o $@ $< -ldl -lm
$(B)/progs/%: tests/progs/%.cc
	@mkdir -p $(dir $@)
	g++ $(PROG_CFLAGS) -o $@ $< -ldl -Wl,-rpath,'$$ORIGIN' -L$(B)/progs -lsymlib
$(B)/progs/lib%.so: tests/progs/lib%.c
	@mkdir -p $(dir $@)
	$(CC) $(PROG_CFLAGS) -fPIC -shared -o $@ $<
$(B)/progs/%: examples/%.c
	@mkdir -p $(dir $@)
	$(CC) $(PROG_CFLAGS) -o $@ $< -lm
PROGS := $(patsubst tests/progs/%.c,$(B)/progs/%,$(filter-out tests/progs/lib%,$(wildcard tests/progs/*.c))) \
         $(patsubst tests/progs/lib%.c,$(B)/progs/lib%.so,$(wildcard tests/progs/lib*.c)) \
         $(patsubst tests/progs/%.cc,$(B)/progs/%,$(wildcard tests/progs/*.cc)) \
         $(patsubst examples/%.c,$(B)/progs/%,$(wildcard examples/*.c))
$(patsubst tests/progs/%.cc,$(B)/progs/%,$(wildcard tests/progs/*.cc)): $(B)/progs/libsymlib.so

# SANITIZER=address: tests/run.sh preloads this right after the ASan runtime
# (tests/san/asan_swift_demangle.c says why); never part of the shim.
SAN_TEST := $(if $(filter address,$(SANITIZER)),$(B)/tests/libasan_swift_demangle.so)
$(B)/tests/libasan_swift_demangle.so: tests/san/asan_swift_demangle.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -fPIC -shared -o $@ $<

test: $(DEPS_STAMP) all $(UNIT_TESTS) $(PROGS) $(SAN_TEST)
	@B=$(B) SANITIZER=$(SANITIZER) sh tests/run.sh

run: $(DEPS_STAMP) all $(B)/progs/busy
	@sh scripts/run-example.sh

check-sigsafe: $(B)/obj/preload/sighandler.o
	@sh scripts/check-sigsafe.sh $<

check-static: all
	@B=$(B) sh tests/e2e/test_static.sh

bench: all $(PROGS)
	@sh bench/run.sh

# libFuzzer on the HTTP parsers (clang); build/fuzz/ holds the binary, the
# growing corpus and any crash artifact.
FUZZ_SECONDS ?= 600
fuzz:
	sh tests/fuzz/run-fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(B)
