# nginx for docker/compose.yaml, built from the same base image as pier so the stack comes
# up without pulling anything. The configuration is not baked in: compose mounts
# config/nginx (and docker/nginx/upstreams over its upstreams/) read-only.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light curl >/dev/null \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
 && nginx -v
# Runs unprivileged: listens on 8080, writes only under the prefix (/tmp, a tmpfs in compose).
USER www-data
EXPOSE 8080
STOPSIGNAL SIGQUIT
CMD ["nginx", "-p", "/tmp/", "-c", "/etc/nginx/pier/nginx.conf", "-g", "daemon off;"]
