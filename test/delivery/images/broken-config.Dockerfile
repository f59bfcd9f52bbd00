# A release that must never get traffic (test/delivery/deploy-test.sh): the real image BASE with a prod
# config pier refuses (a port out of range), so pier exits 1 at start; the deploy must report
# status 1 and pier's error lines.
#   docker build -f test/delivery/images/broken-config.Dockerfile --build-arg BASE=pier:v2 test/delivery/images
ARG BASE=pier:latest
FROM ${BASE}
COPY broken-prod.yaml /etc/pier/prod.yaml
