# ngx_http_corelog_module: build, run and test.
#
#   make               build objs/ngx_http_corelog_module.so (= make build);
#                      installs nothing: says what is missing (make deps)
#   make test          deps, build (and debug-build if nginx is not
#                      --with-debug), then run the tests in t/
#   make debug-build   build nginx --with-debug and the module in
#                      .build/debug/ (for t/013-debug-log.t)
#   make valgrind      deps, build, then run the tests under valgrind
#   make asan          build nginx and the module with ASan + UBSan in
#                      .build/asan/, then run the tests with them
#   make run           deps, build, then start PostgreSQL + nginx in .run/
#   make deps          install missing Debian packages (apt-get, via sudo)
#   make test-matrix   the tests against every nginx version there is a
#                      source of: Debian's, and each ../shared/nginx tarball
#                      (scripts/matrix.sh), one line per version
#   make test-nginx NGINX_VERSION=1.30.4   the tests against that one
#   make fuzz          build the libFuzzer targets (clang, ASan + UBSan) in
#                      .build/fuzz/ and run each FUZZ_SECONDS (fuzz/README.md)
#   make mutate        the mutation run: each mutant of mutate/mutants alone,
#                      built in .build/mutate/, against its tests, then t/
#   make lint          syntax checks, shellcheck, mutants apply, the
#                      Dockerfile's linter (npm's dockerfilelint, installed
#                      into .build/lint/ the first time)
#   make clean         remove objs/ and t/tmp/
#   make distclean     clean, and also remove .run/ (the `make run` database)
#                      and .build/ (nginx source trees, asan and fuzz builds)
#
# Variables: NGINX_SRC=<nginx source tree> (default: Debian's nginx-dev tree),
# TESTS=<files or dirs for prove> (default t/), PROVE_JOBS (default 2),
# PROVE_FLAGS, PORT and PGPORT for `make run`.  TEST_CORELOG_KEEP=1 keeps the
# tests' temporary directories in t/tmp/.  FUZZ_TARGETS (default: all four)
# and FUZZ_SECONDS (default 60) for `make fuzz`.

SHELL := /bin/bash

NGINX_SRC ?= /usr/share/nginx/src
export NGINX_SRC

TESTS       ?= t/
# The test files are independent: each starts its own nginx on free ports
# and its own throwaway PostgreSQL cluster.
PROVE_JOBS  ?= 2
PROVE_FLAGS ?=

.DEFAULT_GOAL := build
.PHONY: build deps test valgrind asan run bench bench-status bench-ab \
        bench-json soak clean distclean lint fuzz mutate debug-build \
        test-matrix test-nginx lint-dockerfile
# prerequisites in order, also under make -j: deps before build
.NOTPARALLEL:

deps:
	scripts/deps.sh

build:
	scripts/build.sh

# nginx itself --with-debug from a full source tree, for the test that
# reads its debug log; a minute or two the first time, then incremental.
debug-build:
	scripts/nginx-build.sh .build/debug

# the stock nginx when it is --with-debug (Debian's is), else .build/debug
test: deps build
	@nginx=$${TEST_CORELOG_NGINX:-/usr/sbin/nginx}; \
	"$$nginx" -V 2>&1 | grep -q -- '--with-debug' || $(MAKE) debug-build
	prove -I t/lib -r -j$(PROVE_JOBS) $(PROVE_FLAGS) $(TESTS)

# The whole suite against each nginx version (scripts/matrix.sh): Debian's
# /usr/sbin/nginx, then each ../shared/nginx/nginx-X.Y.Z.tar.gz (or
# NGINX_TARBALLS=<dir>) built with --with-compat into .build/matrix/X.Y.Z/;
# one line per version at the end, in .build/matrix/summary too.  About
# 5 minutes per version.  `make test-nginx NGINX_VERSION=X.Y.Z`: one.
test-matrix: deps
	TESTS="$(TESTS)" PROVE_JOBS="$(PROVE_JOBS)" PROVE_FLAGS="$(PROVE_FLAGS)" \
	    scripts/matrix.sh

test-nginx: deps
	@[ -n "$(NGINX_VERSION)" ] || { echo \
	    "make test-nginx NGINX_VERSION=X.Y.Z (or debian)" >&2; exit 1; }
	TESTS="$(TESTS)" PROVE_JOBS="$(PROVE_JOBS)" PROVE_FLAGS="$(PROVE_FLAGS)" \
	    scripts/matrix.sh $(NGINX_VERSION)

# nginx (master, workers) under valgrind's memcheck, with t/valgrind.supp:
# each test file fails "valgrind: no memory errors" on an error in the
# module, libjansson or libpq (t/lib/Corelog/Test.pm).  One file at a time;
# the harness's own waits are 5 times longer.  Not part of `make test`.
# All of t/ passes under valgrind (about 4 minutes); should a timing-sensitive
# test not, the files without tight timing are
#   VALGRIND_TESTS="t/010-corelog-create.t t/011-corelog-errors.t
#     t/012-corelog-http.t t/020-auth-token.t t/050-channel-log.t
#     t/070-logtank.t t/032-reload-shutdown.t t/031-queue-timeout-abort.t"
VALGRIND_TESTS ?= t/

valgrind: deps build
	TEST_CORELOG_VALGRIND=1 prove -I t/lib -r -j1 $(PROVE_FLAGS) \
	    $(VALGRIND_TESTS)

# nginx itself and the module compiled with -fsanitize=address,undefined
# (scripts/asan.sh: a full nginx source tree, the build in .build/asan/);
# each test file fails "asan: no sanitizer reports" on any ASan or UBSan
# report (t/lib/Corelog/Test.pm; t/asan.supp and t/ubsan.supp suppress
# nginx's own).  TESTS, PROVE_JOBS and PROVE_FLAGS as for `make test`.
# About 70 s for t/, and 3 minutes for the first build.  Not part of
# `make test`.
asan:
	TESTS="$(TESTS)" PROVE_JOBS="$(PROVE_JOBS)" PROVE_FLAGS="$(PROVE_FLAGS)" \
	    scripts/asan.sh

run: deps build
	scripts/run.sh

# The throughput benchmark (bench/README.md): a few minutes, not a test.
bench: deps build
	bench/run.sh

# Only the last section of make bench: the channel route with the status
# zone on and off, alternating (BENCH_STATUS_PAIRS pairs, default 10;
# more on a busy machine: bench/README.md).
bench-status: deps build
	BENCH_STATUS_ONLY=1 bench/run.sh

# A/B in one run (bench/README.md, "make bench-ab"): REF's module, conf and
# schema (A, built in .build/bench-ab/) against the working tree's (B), two
# nginx side by side, the load alternating A, B, A, B... per route
# (BENCH_AB_PAIRS pairs, default 8; BENCH_ROUTES); REF=HEAD is an A/A run.
bench-ab: deps build
	@[ -n "$(REF)" ] || { echo "make bench-ab REF=<commit>" >&2; exit 1; }
	bench/ab.sh "$(REF)"

# jansson's parse of the bench bodies alone, microseconds per parse
# (bench/json.c; bench/README.md, issue 15): seconds, no nginx, no database.
bench-json: deps
	mkdir -p .build
	$(CC) -O2 -Wall -Werror -o .build/bench-json bench/json.c -ljansson
	.build/bench-json

# Five minutes at full load on one route: worker RSS must stay flat.
soak: deps build
	BENCH_ROUTES=channel_log BENCH_DURATION=$${BENCH_DURATION:-300s} \
	BENCH_NO_PGBENCH=1 BENCH_PAIRS=10 bench/run.sh

# libFuzzer targets for the request bodies of the three routes and for the
# corelog_postgres conninfo (fuzz/README.md); exits 1 when one crashed.
#   make fuzz FUZZ_TARGETS=fuzz_conninfo FUZZ_SECONDS=600
FUZZ_TARGETS ?= fuzz_core_log fuzz_channel_log fuzz_logtank fuzz_conninfo
FUZZ_SECONDS ?= 60

fuzz:
	FUZZ_TARGETS="$(FUZZ_TARGETS)" FUZZ_SECONDS="$(FUZZ_SECONDS)" \
	    scripts/fuzz.sh

# Mutation testing (docs/contributing.md, "Mutation testing"): each mutant of
# mutate/mutants (a small slip in the source) applied alone, built, and run
# against its test files, then the rest of t/; prints KILLED/SURVIVED per
# mutant and the score, and fails below MUTATE_MIN per cent (default 95) or
# when a mutant no longer applies.  MUTANTS="id ..." runs a subset.  About
# an hour for all of them; not part of `make test`.
mutate: deps
	scripts/mutate.sh

lint: lint-dockerfile
	bash -n scripts/*.sh .ci/run
	scripts/mutate.sh --check
	if command -v shellcheck >/dev/null; then shellcheck scripts/*.sh .ci/run; fi
	perl -I t/lib -c t/lib/Corelog/Test.pm
	for f in $$(find t -name '*.t' -not -path 't/tmp/*'); do \
	    perl -I t/lib -c "$$f" || exit 1; done

# The Dockerfile's linter: dockerfilelint from npm (hadolint is not packaged
# for Debian), installed once into .build/lint/; skipped without npm.
DOCKERFILELINT := .build/lint/node_modules/.bin/dockerfilelint

lint-dockerfile:
	@if [ ! -x $(DOCKERFILELINT) ] && command -v npm >/dev/null; then \
	    npm install --no-audit --no-fund --prefix .build/lint \
	        dockerfilelint@1.8.0 >/dev/null; fi
	if [ -x $(DOCKERFILELINT) ]; then $(DOCKERFILELINT) Dockerfile; \
	else echo "lint: no npm, the Dockerfile is not linted"; fi

# Best effort: stop what an interrupted test run left behind in t/tmp/
# (SIGQUIT = nginx graceful stop, SIGINT = PostgreSQL fast shutdown).
clean:
	@stopped=; \
	for f in t/tmp/*/nginx.pid; do [ -f "$$f" ] && \
	    kill -QUIT "$$(cat "$$f")" 2>/dev/null && stopped=1; done; \
	for f in t/tmp/*/pg/postmaster.pid; do [ -f "$$f" ] && \
	    kill -INT "$$(head -1 "$$f")" 2>/dev/null && stopped=1; done; \
	for f in t/tmp/*/prometheus/prometheus.pid; do [ -f "$$f" ] && \
	    kill -TERM "$$(cat "$$f")" 2>/dev/null && stopped=1; done; \
	if [ -n "$$stopped" ]; then sleep 2; fi
	rm -rf objs t/tmp

distclean: clean
	@stopped=; \
	[ -f .run/nginx.pid ] && kill -QUIT "$$(cat .run/nginx.pid)" 2>/dev/null \
	    && stopped=1; \
	[ -f .run/pgdata/postmaster.pid ] && \
	    kill -INT "$$(head -1 .run/pgdata/postmaster.pid)" 2>/dev/null \
	    && stopped=1; \
	if [ -n "$$stopped" ]; then sleep 2; fi
	@# .run links to /var/tmp/corelog-run-* when run as root from a
	@# checkout others cannot reach (scripts/run.sh)
	if [ -L .run ]; then rm -rf "$$(readlink .run)"; fi
	rm -rf .run .build
