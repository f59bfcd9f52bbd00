# A release that exits at once (ci/deploy-test.sh): the real image BASE started with an
# argument pier does not know, so it prints "unknown argument" and exits with status 2 before
# it listens. The deploy must report that status and those lines, every time.
#   docker build -f test/deploy/exits.Dockerfile --build-arg BASE=pier:v2 test/deploy
ARG BASE=pier:latest
FROM ${BASE}
CMD ["--no-such-option"]
