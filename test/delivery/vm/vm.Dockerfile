# The rehearsal's "cloud VM" (test/delivery/vm-rehearsal.sh): Debian 12 with systemd as PID 1 and
# cloud-init, like a cloud image before its first boot. Nothing pier-specific is set up here:
# config/cloud-init.yaml does that at first boot through the NoCloud seed. The packages that
# cloud-init's `packages:` list names are installed in advance (PACKAGES, read from
# config/cloud-init.yaml by the rehearsal), as a cloud image with a warm package cache would
# have them, so that a boot does not download ~300 MB; cloud-init still runs its package step.
#
# Build context: test/delivery/vm. Runs only with the flags in test/delivery/vm-rehearsal.sh (capabilities, cgroup namespace, tmpfs /run,
# a volume for /var/lib/docker); never with the host's /sys/fs/cgroup mounted in.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG PACKAGES=
ENV container=docker
# policy-rc.d (from the base image) keeps services from starting during the build; removed
# at the end so that systemd and cloud-init may start them at boot.
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends systemd systemd-sysv dbus cloud-init \
      openssh-server sudo iproute2 procps kmod iptables ca-certificates ${PACKAGES}; \
    rm -rf /var/lib/apt/lists/*; \
    rm -f /usr/sbin/policy-rc.d; \
    for u in getty@tty1 console-getty systemd-udevd systemd-udev-trigger systemd-modules-load \
      systemd-remount-fs sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
      systemd-firstboot systemd-hwdb-update apt-daily.timer apt-daily-upgrade.timer e2scrub_reap \
      systemd-timesyncd; do systemctl mask "$u"; done; \
    rm -f /etc/ssh/ssh_host_*; \
    : >/etc/machine-id; \
    rm -rf /var/lib/cloud/*; \
    find /var/log -type f -delete
# Docker inside this container needs the cgroup v1 controllers writable (the container's are
# mounted read-only): remount them before containerd and docker start.
COPY cgroup-rw.service /etc/systemd/system/pier-vm-cgroup-rw.service
RUN systemctl enable pier-vm-cgroup-rw.service
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
