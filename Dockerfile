# ngx_http_corelog_module in a container: Debian's nginx plus the module.
#
#   docker build -t corelog .
#   docker run --rm -p 8080:8080 \
#       -e CORELOG_CONNINFO='host=db dbname=corelog user=corelog password=...' \
#       [-e CORELOG_INIT_SCHEMA=1] corelog
#
# See scripts/docker-entrypoint.sh for the environment it reads.

# --- build: the module against Debian's nginx source tree (nginx-dev) ---
FROM debian:bookworm AS build

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        gcc libc6-dev make pkg-config \
        nginx nginx-dev libjansson-dev libpq-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY config ngx_http_corelog_module.c ./
COPY src/ src/
COPY scripts/build.sh scripts/
RUN scripts/build.sh

# --- runtime: the same Debian nginx, the libraries, psql for the schema
# migrations (scripts/migrate.sh) ---
FROM debian:bookworm

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        nginx libjansson4 libpq5 libssl3 postgresql-client \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /src/objs/ngx_http_corelog_module.so /usr/lib/nginx/modules/
COPY conf/ /usr/share/corelog/
COPY sql/ /usr/share/corelog/sql/
COPY scripts/migrate.sh /usr/share/corelog/scripts/
COPY scripts/docker-entrypoint.sh /usr/local/bin/corelog-entrypoint

ENV PORT=8080
EXPOSE 8080
# SIGQUIT: nginx finishes the requests in flight, then exits.
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/usr/local/bin/corelog-entrypoint"]
