# The rehearsal's "outside world" (test/delivery/vm-rehearsal.sh): what is not the VM.
#   pebble           Let's Encrypt's ACME test server, validating HTTP-01 over the network
#   docker-registry  stands in for ghcr.io (TLS with the rehearsal's CA, htpasswd login)
#   runner           a non-root user with passwordless sudo, like GitHub's hosted runners,
#                    that runs deploy.yml's deploy step (ssh, git, curl, jq)
#   webhook receiver Alertmanager's notifications land here (test/delivery/vm/webhook-receiver.py)
#   testssl.sh, nmap the external checks
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends pebble docker-registry apache2-utils testssl.sh \
      bsdextrautils nmap openssh-client git curl jq sudo python3 python3-yaml ca-certificates \
      openssl procps iproute2 dnsutils; \
    rm -rf /var/lib/apt/lists/*; \
    useradd -m -s /bin/bash runner; \
    echo 'runner ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/runner; \
    chmod 0440 /etc/sudoers.d/runner
COPY outside-start.sh webhook-receiver.py /usr/local/bin/
CMD ["/usr/local/bin/outside-start.sh"]
