# A release that exits at once (test/delivery/deploy-test.sh): the real image BASE started with an
# argument pier does not know, so it prints "unknown argument" and exits with status 2 before
# it listens. The deploy must report that status and those lines, every time.
#   docker build -f test/delivery/images/exits.Dockerfile --build-arg BASE=pier:v2 test/delivery/images
ARG BASE=pier:latest
FROM ${BASE}
CMD ["--no-such-option"]
