/* listen — opening pier's listening sockets: TCP, and the Unix socket of listen.unix with its
 * mode and group. The workers wait on them (src/accept.c); the server owns them (src/server.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "listen.h"
#include "pier/net.h"

/* Bind and listen one socket on host:port and give each of the `n` workers a duplicate of it
 * (fds[]). Without SO_REUSEPORT the port is pier's alone: another process — a second pier
 * too, whatever its workers — cannot bind it while pier listens and fails with EADDRINUSE,
 * where SO_REUSEPORT would have let it join and take a share of the connections. The workers
 * share the one accept queue and wait on it with EPOLLEXCLUSIVE (src/conn.c). On success
 * *bound_port says the port (useful when port is 0). */
int pier__listen_tcp(const char *host, int port, int n, int *fds, int *bound_port, char *err,
                     size_t errsize) {
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (pier_net_addr(host, port, &ss, &sslen) != 0) {
        snprintf(err, errsize, "%s is not an IP address", host);
        return -EINVAL;
    }
    for (int i = 0; i < n; i++)
        fds[i] = -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    fds[0] = fd;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* past TIME_WAIT, not a share */
    if (bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, 511) != 0)
        goto fail;
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    if (getsockname(fd, (struct sockaddr *)&got, &gl) == 0)
        port = pier_net_port(&got);
    for (int i = 1; i < n; i++)
        if ((fds[i] = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
            goto fail;
    *bound_port = port;
    return 0;
fail : {
    int e = errno;
    snprintf(err, errsize, "cannot listen on %s:%d: %s%s", host, port, strerror(e),
             e == EADDRINUSE ? " (another process listens on this port)" : "");
    for (int j = 0; j < n; j++)
        if (fds[j] >= 0)
            close(fds[j]);
    return -e;
}
}

/* The Unix socket (listen.unix). One listening socket, which every worker adopts a duplicate
 * of, like the TCP one. The file is made with the configured mode and
 * group before listen(), so no client ever connects through looser permissions. A socket file
 * left by a process that died (kill -9: nothing unlinked it) is stale: nothing accepts on it,
 * so it is removed and bound again; a path where something still accepts, or that is not a
 * socket, is an error and is left alone. */
int pier__unix_mode_group(const struct pier_config *cfg, mode_t *mode, gid_t *gid, char *err,
                          size_t errsize) {
    *mode = (mode_t)strtol(cfg->listen_unix_mode, NULL, 8);
    *gid = (gid_t)-1;
    const char *g = cfg->listen_unix_group;
    if (g[0] == '\0')
        return 0;
    char *end;
    long n = strtol(g, &end, 10);
    if (*end == '\0' && n >= 0) {
        *gid = (gid_t)n;
        return 0;
    }
    struct group *gr = getgrnam(g);
    if (gr == NULL) {
        snprintf(err, errsize, "listen.unix_group: no group \"%s\" on this system", g);
        return -EINVAL;
    }
    *gid = gr->gr_gid;
    return 0;
}

/* chmod through the descriptor: fchmod() on the listening socket would change the socket
 * object, not the file, and fchmodat(AT_EMPTY_PATH) needs Linux 6.6; /proc/self/fd/N names
 * exactly the file the O_PATH descriptor holds. */
static int chmod_fd(int fd, mode_t mode) {
    char p[40];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    return chmod(p, mode);
}

/* Give pier's socket file at `path` (dev, ino) mode `mode` and group `gid` ((gid_t)-1: keep
 * it): both or neither. The group goes first, as it is what fails (pier not a member of it);
 * when the mode then fails, the group is put back. *was, when not NULL, gets what the file
 * had. `group` names the group in the message (NULL: its number). */
int pier__unix_set_perms(const char *path, dev_t dev, ino_t ino, mode_t mode, gid_t gid,
                         const char *group, struct pier__unix_perms *was, char *err,
                         size_t errsize) {
    struct stat st;
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errsize, "cannot open unix:%s to set its mode and group: %s", path,
                 strerror(e));
        return -e;
    }
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_dev != dev || st.st_ino != ino) {
        snprintf(err, errsize,
                 "unix:%s is no longer the socket pier made (replaced or removed): its mode and "
                 "group are left alone",
                 path);
        close(fd);
        return -ESTALE;
    }
    if (was) {
        was->mode = st.st_mode & 07777;
        was->gid = st.st_gid;
    }
    int rc = 0;
    int regroup = gid != (gid_t)-1 && gid != st.st_gid;
    if (regroup && fchownat(fd, "", (uid_t)-1, gid, AT_EMPTY_PATH) != 0) {
        rc = -errno;
        char num[24];
        snprintf(num, sizeof num, "%u", (unsigned)gid);
        snprintf(err, errsize, "cannot give %s to group %s: %s (pier must be a member of it)", path,
                 group ? group : num, strerror(-rc));
    } else if ((st.st_mode & 07777) != mode && chmod_fd(fd, mode) != 0) {
        rc = -errno;
        snprintf(err, errsize, "cannot set mode %04o on %s: %s", (unsigned)mode, path,
                 strerror(-rc));
        if (regroup && fchownat(fd, "", (uid_t)-1, st.st_gid, AT_EMPTY_PATH) != 0) {
            /* cannot happen: the group was ours to give a moment ago */
        }
    }
    close(fd);
    return rc;
}

int pier__listen_unix(const struct pier_config *cfg, int *out, dev_t *dev, ino_t *ino, char *err,
                      size_t errsize) {
    const char *path = cfg->listen_unix;
    mode_t mode;
    gid_t gid;
    int rc = pier__unix_mode_group(cfg, &mode, &gid, err, errsize);
    if (rc != 0)
        return rc;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        struct stat st;
        if (errno != EADDRINUSE || lstat(path, &st) != 0)
            goto fail;
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errsize, "cannot listen on unix:%s: it exists and is not a socket", path);
            close(fd);
            return -EEXIST;
        }
        /* Is anyone there? Non-blocking: an owner alive but with a full queue answers EAGAIN
         * at once, where a blocking connect would wait for it forever. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int why = 0;
        if (probe < 0 || connect(probe, (struct sockaddr *)&sa, sizeof sa) != 0)
            why = errno;
        if (probe >= 0)
            close(probe);
        int live = why == 0 || why == EAGAIN || why == EINPROGRESS;
        if (live || why != ECONNREFUSED) {
            snprintf(err, errsize, "cannot listen on unix:%s: %s", path,
                     why == 0 ? "another process accepts connections on it"
                     : live   ? "another process listens on it (its connection queue is full)"
                              : strerror(why));
            close(fd);
            return live ? -EADDRINUSE : -why;
        }
        if (unlink(path) != 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            goto fail;
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_WARN, "removed a stale socket file: no process accepted on it");
        pier_log_str(&l, "path", path);
        pier_log_end(&l);
    }
    /* the file bound a moment ago: what is chmod-ed, chgrp-ed and finally unlinked is this one */
    struct stat st;
    if (lstat(path, &st) != 0)
        goto fail;
    *dev = st.st_dev;
    *ino = st.st_ino;
    rc = pier__unix_set_perms(path, *dev, *ino, mode, gid, cfg->listen_unix_group, NULL, err,
                              errsize);
    if (rc != 0) {
        unlink(path);
        close(fd);
        return rc;
    }
    if (listen(fd, 511) != 0) {
        int e = errno;
        unlink(path);
        errno = e;
        goto fail;
    }
    *out = fd;
    return 0;
fail : {
    int e = errno;
    snprintf(err, errsize, "cannot listen on unix:%s: %s", path, strerror(e));
    if (fd >= 0)
        close(fd);
    return -e;
}
}
