# ngx_http_corelog_module on the official nginx image (nginx.org's Debian
# package of nginx ${NGINX_VERSION}), with the module built against that
# exact version's source and the image's own configure arguments.
#
#   docker build -t corelog .
#   docker build -t corelog --build-arg NGINX_VERSION=1.31.4 \
#       --build-arg NGINX_SHA256=<sha256 of nginx-1.31.4.tar.gz> .
#   docker compose up        (compose.yaml: PostgreSQL, the schema, corelog)
#
# See scripts/docker-entrypoint.sh for the environment it reads, and
# docs/install.md for the image.
#
# What `nginx -V` prints in the official nginx:1.30 image: nginx.org's
# Debian package, whose arguments are the same from release to release but
# for the version in the -ffile-prefix-map path (taken from the packages'
# output; update it from `docker run --rm nginx:<version> nginx -V` when it
# changes).  t/005-install.t builds nginx 1.30.4 with this line, outside
# Docker, runs this file's builder step against that nginx, and the final
# stage's `nginx -t`; keep it one line, as nginx prints it:
#
# configure arguments: --prefix=/etc/nginx --sbin-path=/usr/sbin/nginx --modules-path=/usr/lib/nginx/modules --conf-path=/etc/nginx/nginx.conf --error-log-path=/var/log/nginx/error.log --http-log-path=/var/log/nginx/access.log --pid-path=/run/nginx.pid --lock-path=/run/nginx.lock --http-client-body-temp-path=/var/cache/nginx/client_temp --http-proxy-temp-path=/var/cache/nginx/proxy_temp --http-fastcgi-temp-path=/var/cache/nginx/fastcgi_temp --http-uwsgi-temp-path=/var/cache/nginx/uwsgi_temp --http-scgi-temp-path=/var/cache/nginx/scgi_temp --user=nginx --group=nginx --with-compat --with-file-aio --with-threads --with-http_addition_module --with-http_auth_request_module --with-http_dav_module --with-http_flv_module --with-http_gunzip_module --with-http_gzip_static_module --with-http_mp4_module --with-http_random_index_module --with-http_realip_module --with-http_secure_link_module --with-http_slice_module --with-http_ssl_module --with-http_stub_status_module --with-http_sub_module --with-http_v2_module --with-http_v3_module --with-mail --with-mail_ssl_module --with-stream --with-stream_realip_module --with-stream_ssl_module --with-stream_ssl_preread_module --with-cc-opt='-g -O2 -ffile-prefix-map=/home/builder/debuild/nginx-1.30.4/debian/debuild-base/nginx-1.30.4=. -fstack-protector-strong -Wformat -Werror=format-security -Wp,-D_FORTIFY_SOURCE=2 -fPIC' --with-ld-opt='-Wl,-z,relro -Wl,-z,now -Wl,--as-needed -pie'

# The current stable; one of the versions scripts/matrix.sh tests.
ARG NGINX_VERSION=1.30.4

# --- build: the module, against nginx.org's source of the image's version,
# with the image's `nginx -V` arguments plus --with-compat ------------------
FROM nginx:${NGINX_VERSION} AS build

ARG NGINX_VERSION
# sha256 of nginx-${NGINX_VERSION}.tar.gz; checked when given
ARG NGINX_SHA256=

SHELL ["/bin/bash", "-eo", "pipefail", "-c"]

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        gcc make libc6-dev libpcre2-dev zlib1g-dev libssl-dev \
        libjansson-dev libpq-dev curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /build
RUN curl -fsSL -o "nginx-${NGINX_VERSION}.tar.gz" \
        "https://nginx.org/download/nginx-${NGINX_VERSION}.tar.gz" \
 && if [ -n "${NGINX_SHA256}" ]; then \
        echo "${NGINX_SHA256}  nginx-${NGINX_VERSION}.tar.gz" | sha256sum -c -; \
    fi

COPY config ngx_http_corelog_module.c /src/
COPY src/ /src/src/
COPY scripts/install.sh scripts/safe-path.sh /src/scripts/
# builds /build/objs/ngx_http_corelog_module.so and checks that this
# image's nginx loads it
RUN /src/scripts/install.sh --build-only --nginx /usr/sbin/nginx --source "/build/nginx-${NGINX_VERSION}.tar.gz" --builddir /build/objs

# --- runtime: the same image, the module's libraries, psql for the schema
# migrations (scripts/migrate.sh) -------------------------------------------
FROM nginx:${NGINX_VERSION}

SHELL ["/bin/bash", "-eo", "pipefail", "-c"]

# libssl3t64 is trixie's name of bookworm's libssl3
RUN . /etc/os-release \
 && case "${VERSION_CODENAME}" in \
        bookworm) libssl=libssl3 ;; \
        *) libssl=libssl3t64 ;; \
    esac \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
        libjansson4 libpq5 "${libssl}" postgresql-client \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /build/objs/ngx_http_corelog_module.so /usr/lib/nginx/modules/
COPY conf/ /usr/share/corelog/
COPY sql/ /usr/share/corelog/sql/
COPY scripts/migrate.sh /usr/share/corelog/scripts/
COPY scripts/docker-entrypoint.sh /usr/local/bin/corelog-entrypoint

# Smoke test: the configuration the entry point writes, with a placeholder
# conninfo (nginx -t parses it, it does not connect), loads the module.
RUN CORELOG_CONNINFO='host=127.0.0.1 dbname=corelog' \
    CORELOG_PREFIX=/tmp/corelog-check corelog-entrypoint --config-only \
 && nginx -t -p /tmp/corelog-check/ -c /tmp/corelog-check/nginx.conf -e stderr \
 && rm -rf /tmp/corelog-check

ENV PORT=8080
EXPOSE 8080
# SIGQUIT: nginx finishes the requests in flight, then exits.
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/usr/local/bin/corelog-entrypoint"]
CMD ["run"]
