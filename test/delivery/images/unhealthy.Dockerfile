# A release that starts but never becomes healthy (test/delivery/deploy-test.sh): the real image BASE
# whose health check probes a port nothing listens on. The long start period keeps Docker's
# status at "starting", so the deploy has to give up on its own timeout.
#   docker build -f test/delivery/images/unhealthy.Dockerfile --build-arg BASE=pier:v2 test/delivery/images
ARG BASE=pier:latest
FROM ${BASE}
HEALTHCHECK --interval=1s --timeout=2s --start-period=120s --retries=3 CMD ["/pier", "--probe", "http://127.0.0.1:9/"]
