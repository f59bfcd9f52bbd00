/* server — process lifecycle: listeners, workers, signals, drain and reload.
 *
 * Listening sockets are created here, on the control thread, before any worker starts or a
 * reload is applied: a port that cannot be bound is an error that leaves everything as it
 * was (at start: exit 1 with nothing listening; on reload: the old config stays). Workers
 * only adopt ready sockets.
 *
 * Shutdown, in order: health turns 503 at once (lifecycle GRACE); after shutdown.grace_ms
 * the lifecycle becomes DRAINING and every worker closes its listeners, answers every request
 * that still arrives with Connection: close, and ends when it has no connection left. An idle
 * keep-alive connection is not closed by the drain: a proxy may be writing a request on it at
 * that very moment, and that request would be lost. The client closes it (nginx after its
 * upstream keepalive_timeout), or its next request is answered with Connection: close, or
 * timeouts.idle_ms ends it. shutdown.drain_ms bounds the wait: then the remaining connections
 * are cut and counted. A second signal exits at once.
 */
#include "pier/router.h"
#include "pier/clock.h"
#include "pier/server.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pier/log.h"
#include "pier/net.h"
#include "tsan_plant.h"
#include "worker.h"

#define READ_BUFFER_BYTES (64 * 1024)
/* Descriptors kept free beyond those open at rest: per worker, the replacement listener a
 * reload opens before the old one closes (its duplicate and its eventfd) and the one a refused
 * client holds while it gets its 503; for the process, the config file a reload reads, /proc
 * reads, a probe. */
#define FD_SPARE_PER_WORKER 3
#define FD_SPARE            16

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- listeners ------------------------------------------------------------------------- */

/* Bind and listen one socket on host:port and give each of the `n` workers a duplicate of it
 * (fds[]). Without SO_REUSEPORT the port is pier's alone: another process — a second pier
 * too, whatever its workers — cannot bind it while pier listens and fails with EADDRINUSE,
 * where SO_REUSEPORT would have let it join and take a share of the connections. The workers
 * share the one accept queue and wait on it with EPOLLEXCLUSIVE (src/conn.c). On success
 * *bound_port says the port (useful when port is 0). */
static int open_listeners(const char *host, int port, int n, int *fds, int *bound_port, char *err,
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
static int unix_mode_group(const struct pier_config *cfg, mode_t *mode, gid_t *gid, char *err,
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

/* The socket file's mode and group. Both are set through a descriptor opened on the path
 * without following links and checked to be the very file pier bound (device and inode taken
 * right after bind), so a file put in its place by someone else is never changed. */
struct unix_perms {
    mode_t mode;
    gid_t gid;
};

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
static int unix_set_perms(const char *path, dev_t dev, ino_t ino, mode_t mode, gid_t gid,
                          const char *group, struct unix_perms *was, char *err, size_t errsize) {
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

static int open_unix_listener(const struct pier_config *cfg, int *out, dev_t *dev, ino_t *ino,
                              char *err, size_t errsize) {
    const char *path = cfg->listen_unix;
    mode_t mode;
    gid_t gid;
    int rc = unix_mode_group(cfg, &mode, &gid, err, errsize);
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
    rc = unix_set_perms(path, *dev, *ino, mode, gid, cfg->listen_unix_group, NULL, err, errsize);
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

/* Remove the socket file when it is still the one this process made (not a successor's). */
static void unix_unlink(struct pier__server *srv) {
    struct stat st;
    if (srv->unix_fd < 0)
        return;
    if (lstat(srv->unix_path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == srv->unix_dev &&
        st.st_ino == srv->unix_ino)
        unlink(srv->unix_path);
    close(srv->unix_fd);
    srv->unix_fd = -1;
}

/* ---- descriptor budget ----------------------------------------------------------------- */

/* Descriptors open now, counted in /proc/self/fd (-1 if it cannot be read). */
static int count_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* opendir's own */
}

/* Raise the soft descriptor limit to the hard one; return it (INT32_MAX for unlimited). */
static int64_t raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return INT32_MAX;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > INT32_MAX ? INT32_MAX
                                                                   : (int64_t)rl.rlim_cur;
}

/* Bound max_connections by what RLIMIT_NOFILE leaves once the descriptors open at rest (every
 * worker's loop, listener, the logs: srv->fds_at_rest, measured once the workers are up) and
 * the spares are set aside; a connection is one descriptor. Called at start and on each
 * reload (the limit may have been changed from outside with prlimit). Logged at start, and
 * on reload when the result changes. */
static void apply_fd_budget(struct pier__server *srv, const struct pier_config *cfg, int start) {
    int64_t nofile = raise_fd_limit();
    int64_t reserved = (int64_t)srv->fds_at_rest + FD_SPARE + FD_SPARE_PER_WORKER * srv->nworkers;
    int64_t room = nofile - reserved;
    if (room < 1)
        room = 1;
    int64_t max = cfg->max_connections < room ? cfg->max_connections : room;
    int before = atomic_exchange(&srv->max_connections, (int)max);
    if (!start && before == (int)max)
        return;
    struct pier_logline l;
    if (max < cfg->max_connections)
        pier_log_begin(&l, PIER_LOG_WARN,
                       "limits.max_connections exceeds the descriptor limit; lowered");
    else
        pier_log_begin(&l, PIER_LOG_INFO, "descriptor budget");
    pier_log_int(&l, "configured", cfg->max_connections);
    pier_log_int(&l, "effective", max);
    pier_log_int(&l, "rlimit_nofile", nofile);
    pier_log_int(&l, "fds_at_rest", srv->fds_at_rest);
    pier_log_int(&l, "reserved", reserved);
    pier_log_int(&l, "workers", srv->nworkers);
    pier_log_end(&l);
}

/* ---- workers --------------------------------------------------------------------------- */

static void worker_handle_closed(uv_handle_t *h) {
    (void)h;
}

void pier__worker_maybe_finish(struct pier__worker *w) {
    if (!w->draining || w->stopping || w->nconns > 0 || w->listener || w->unix_listener)
        return;
    w->stopping = 1;
    pier__worker_timers_close(w, worker_handle_closed);
    uv_close((uv_handle_t *)&w->wake, worker_handle_closed);
}

/* Take the current config. The worker says which config it is about to use (cfg_in_use)
 * before it trusts it: if srv->cfg still names it afterwards, the control thread — which
 * publishes a new config before it looks at cfg_in_use — sees it and will not free it. */
static const struct pier_config *worker_take_config(struct pier__worker *w) {
    const struct pier_config *cfg = atomic_load(&w->server->cfg);
    for (;;) {
        atomic_store(&w->cfg_in_use, cfg);
        const struct pier_config *again = atomic_load(&w->server->cfg);
        if (again == cfg)
            return cfg;
        cfg = again;
    }
}

static void worker_on_wake(uv_async_t *handle) {
    struct pier__worker *w = handle->data;
    struct pier__server *srv = w->server;
    PIER__TSAN_PLANTED_RACE(); /* nothing unless -DPIER_TSAN_PLANT_RACE=ON (tsan_plant.h) */
    if (atomic_load(&srv->flush_now)) {
        pier_env_flush_log(&w->env);
        atomic_store(&w->flushed, 1);
    }
    if (w->stopping)
        return;
    if (atomic_load(&srv->cfg) != w->cfg) {
        const struct pier_config *cfg = worker_take_config(w);
        w->cfg = cfg;
        w->env.cfg = cfg;
        pier__worker_config_changed(w);
    }
    int fd = atomic_exchange(&w->new_listen_fd, -1);
    if (fd >= 0) {
        if (w->draining) {
            close(fd);
        } else {
            int rc = pier__worker_listen(w, fd, 0);
            if (rc != 0) {
                close(fd);
                struct pier_logline l;
                pier_log_begin(&l, PIER_LOG_ERROR, "cannot adopt the new listener");
                pier_log_int(&l, "worker", w->id);
                pier_log_str(&l, "error", uv_strerror(rc));
                pier_log_end(&l);
            }
        }
    }
    if (!w->draining && atomic_load(&srv->app.lifecycle) == PIER_DRAINING) {
        w->draining = 1;
        pier__worker_close_listener(w);
    }
    if (!w->forced && atomic_load(&srv->force_close)) {
        w->forced = 1;
        unsigned cut = pier__worker_close_all(w);
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_WARN, "drain time ran out; connections cut");
        pier_log_int(&l, "worker", w->id);
        pier_log_int(&l, "connections", cut);
        pier_log_end(&l);
    }
    pier__worker_maybe_finish(w);
}

static void worker_main(void *arg) {
    struct pier__worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pier_env_flush_log(&w->env);
    atomic_store(&w->finished, 1);
    uv_async_send(&w->server->worker_done);
}

static int worker_init(struct pier__server *srv, struct pier__worker *w, int id, int fd) {
    memset(w, 0, sizeof *w);
    w->id = id;
    w->server = srv;
    w->cfg = atomic_load(&srv->cfg);
    atomic_init(&w->cfg_in_use, w->cfg);
    atomic_init(&w->new_listen_fd, -1);
    w->readbuf_size = READ_BUFFER_BYTES;
    w->readbuf = malloc(w->readbuf_size);
    if (w->readbuf == NULL)
        return UV_ENOMEM;
    int rc = uv_loop_init(&w->loop);
    if (rc != 0)
        return rc;
    pier_env_init(&w->env, w->cfg, &srv->app, &w->metrics);
    srv->app.worker_metrics[id] = &w->metrics;
    uv_async_init(&w->loop, &w->wake, worker_on_wake);
    w->wake.data = w;
    pier__worker_timers_init(w);
    return pier__worker_listen(w, fd, 0);
}

static void worker_destroy(struct pier__worker *w) {
    uv_loop_close(&w->loop);
    pier_env_destroy(&w->env);
    free(w->readbuf);
    free(w->heap);
}

static void wake_workers(struct pier__server *srv) {
    for (int i = 0; i < srv->nworkers; i++)
        if (!atomic_load(&srv->workers[i].finished))
            uv_async_send(&srv->workers[i].wake);
}

/* ---- control loop ---------------------------------------------------------------------- */

static void control_handle_closed(uv_handle_t *h) {
    (void)h;
}

static void close_control(struct pier__server *srv) {
    uv_close((uv_handle_t *)&srv->sig_term, control_handle_closed);
    uv_close((uv_handle_t *)&srv->sig_int, control_handle_closed);
    uv_close((uv_handle_t *)&srv->sig_hup, control_handle_closed);
    uv_close((uv_handle_t *)&srv->sig_usr1, control_handle_closed);
    uv_close((uv_handle_t *)&srv->sig_usr2, control_handle_closed);
    uv_close((uv_handle_t *)&srv->grace_timer, control_handle_closed);
    uv_close((uv_handle_t *)&srv->drain_timer, control_handle_closed);
    uv_close((uv_handle_t *)&srv->worker_done, control_handle_closed);
}

static void on_worker_done(uv_async_t *h) {
    struct pier__server *srv = h->data;
    for (int i = 0; i < srv->nworkers; i++)
        if (!atomic_load(&srv->workers[i].finished))
            return;
    close_control(srv);
}

static void on_drain_timeout(uv_timer_t *t) {
    struct pier__server *srv = t->data;
    atomic_store(&srv->force_close, 1);
    wake_workers(srv);
}

static void begin_drain(struct pier__server *srv) {
    const struct pier_config *cfg = atomic_load(&srv->cfg);
    atomic_store(&srv->app.lifecycle, PIER_DRAINING);
    struct pier_logline l;
    pier_log_begin(&l, PIER_LOG_INFO, "draining: listeners closed, finishing in-flight requests");
    pier_log_int(&l, "connections", atomic_load(&srv->connections));
    pier_log_int(&l, "drain_ms", cfg->drain_ms);
    pier_log_end(&l);
    uv_timer_start(&srv->drain_timer, on_drain_timeout, (uint64_t)cfg->drain_ms, 0);
    unix_unlink(srv);
    wake_workers(srv);
}

static void on_grace_over(uv_timer_t *t) {
    begin_drain(t->data);
}

/* Exiting at once: the access-log lines each worker batched are the worker's to write (it may
 * be appending to its batch right now), so ask every worker to flush and wait a moment. */
static void flush_workers(struct pier__server *srv) {
    atomic_store(&srv->flush_now, 1);
    wake_workers(srv);
    for (int tries = 0; tries < 40; tries++) { /* 200 ms at most */
        int waiting = 0;
        for (int i = 0; i < srv->nworkers; i++)
            waiting +=
                !atomic_load(&srv->workers[i].flushed) && !atomic_load(&srv->workers[i].finished);
        if (waiting == 0)
            return;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void on_stop_signal(uv_signal_t *h, int signum) {
    struct pier__server *srv = h->data;
    if (srv->signals_seen++ > 0) {
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_WARN, "second stop signal: exiting now");
        pier_log_str(&l, "signal", strsignal(signum));
        pier_log_end(&l);
        flush_workers(srv);
        _exit(1);
    }
    const struct pier_config *cfg = atomic_load(&srv->cfg);
    atomic_store(&srv->app.lifecycle, PIER_GRACE);
    struct pier_logline l;
    pier_log_begin(&l, PIER_LOG_INFO, "shutting down: health now reports fail");
    pier_log_str(&l, "signal", strsignal(signum));
    pier_log_int(&l, "grace_ms", cfg->grace_ms);
    pier_log_int(&l, "drain_ms", cfg->drain_ms);
    pier_log_end(&l);
    if (cfg->grace_ms > 0)
        uv_timer_start(&srv->grace_timer, on_grace_over, (uint64_t)cfg->grace_ms, 0);
    else
        begin_drain(srv);
}

static void log_config_errors(const char *msg, const char *file, const pier_buf_t *errors) {
    const char *p = errors->data ? errors->data : "";
    const char *end = p + errors->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_ERROR, msg);
        pier_log_str(&l, "file", file);
        pier_log_strn(&l, "error", p, n);
        pier_log_end(&l);
        p += n + 1;
    }
}

/* ---- reload ----------------------------------------------------------------------------
 *
 * Walks the option table (src/config.c): a key marked PIER_OPT_RESTART keeps its running
 * value (the log says a restart is needed); every other changed key applies, through its
 * row's apply hook when it has one. A hook's prepare step may fail (a port that cannot be
 * bound), and then nothing changes; commit steps cannot fail. */

struct reload_ctx {
    struct pier__server *srv;
    const struct pier_config *old;
    struct pier_config *cfg;
    int fds[256]; /* PIER_APPLY_LISTEN: the new listeners, one per worker */
    int nfds;
    int port;
    struct unix_perms unix_was; /* PIER_APPLY_UNIX_PERMS: what the socket file had */
    int unix_set;
};

static int prepare_listen(struct reload_ctx *r, pier_buf_t *errors) {
    char err[256];
    if (open_listeners(r->cfg->listen_host, (int)r->cfg->listen_port, r->srv->nworkers, r->fds,
                       &r->port, err, sizeof err) != 0) {
        pier_buf_printf(errors, "%s\n", err);
        return -1;
    }
    r->nfds = r->srv->nworkers;
    return 0;
}

static void abort_listen(struct reload_ctx *r) {
    for (int i = 0; i < r->nfds; i++)
        close(r->fds[i]);
    r->nfds = 0;
}

/* Hand each worker its new listener. One a worker has not taken yet (two reloads in quick
 * succession) is closed here: exchanged out, so exactly one side owns it. */
static void commit_listen(struct reload_ctx *r) {
    for (int i = 0; i < r->nfds; i++) {
        int untaken = atomic_exchange(&r->srv->workers[i].new_listen_fd, r->fds[i]);
        if (untaken >= 0)
            close(untaken);
    }
    r->nfds = 0;
}

/* listen.unix_mode/_group: chmod/chgrp the running socket; an error keeps the old config,
 * and leaves the file as it was (unix_set_perms changes both or neither). */
static int prepare_unix_perms(struct reload_ctx *r, pier_buf_t *errors) {
    struct pier__server *srv = r->srv;
    char err[512];
    mode_t mode;
    gid_t gid;
    if (srv->unix_fd < 0)
        return 0;
    if (unix_mode_group(r->cfg, &mode, &gid, err, sizeof err) != 0 ||
        unix_set_perms(srv->unix_path, srv->unix_dev, srv->unix_ino, mode, gid,
                       r->cfg->listen_unix_group, &r->unix_was, err, sizeof err) != 0) {
        pier_buf_printf(errors, "%s\n", err);
        return -1;
    }
    r->unix_set = 1;
    return 0;
}

/* A later step failed: put back the mode and group the file had. */
static void abort_unix_perms(struct reload_ctx *r) {
    struct pier__server *srv = r->srv;
    char err[512];
    if (!r->unix_set)
        return;
    if (unix_set_perms(srv->unix_path, srv->unix_dev, srv->unix_ino, r->unix_was.mode,
                       r->unix_was.gid, NULL, NULL, err, sizeof err) != 0) {
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_ERROR, "cannot restore the socket's mode and group");
        pier_log_str(&l, "error", err);
        pier_log_end(&l);
    }
}

static void commit_log(struct reload_ctx *r) {
    pier_log_configure((int)r->cfg->log_level, (int)r->cfg->log_format);
}

static void commit_limits(struct reload_ctx *r) {
    apply_fd_budget(r->srv, r->cfg, 0);
}

static const struct {
    int (*prepare)(struct reload_ctx *r, pier_buf_t *errors); /* may fail: nothing changes */
    void (*abort)(struct reload_ctx *r);                      /* undo a prepare */
    void (*commit)(struct reload_ctx *r);                     /* after the config is published */
} apply_hooks[PIER_APPLY_COUNT] = {
    [PIER_APPLY_LISTEN] = {prepare_listen, abort_listen, commit_listen},
    [PIER_APPLY_LOG] = {NULL, NULL, commit_log},
    [PIER_APPLY_UNIX_PERMS] = {prepare_unix_perms, abort_unix_perms, NULL},
    [PIER_APPLY_LIMITS] = {NULL, NULL, commit_limits},
};

/* Free every config but the current one that no worker may still read (cfg_in_use). */
static void free_unused_configs(struct pier__server *srv) {
    const struct pier_config *cur = atomic_load(&srv->cfg);
    size_t kept = 0;
    for (size_t i = 0; i < srv->nconfigs; i++) {
        struct pier_config *c = srv->configs[i];
        int used = c == cur;
        for (int k = 0; k < srv->nworkers && !used; k++)
            used = !atomic_load(&srv->workers[k].finished) &&
                   atomic_load(&srv->workers[k].cfg_in_use) == c;
        if (used)
            srv->configs[kept++] = c;
        else
            free(c);
    }
    srv->nconfigs = kept;
}

/* "<key> changes need a restart; keeping the running value", with both values. */
static void log_needs_restart(const struct pier_config *running, const struct pier_config *cfg,
                              const struct pier_option *o) {
    pier_buf_t a, b;
    pier_buf_init(&a);
    pier_buf_init(&b);
    pier_config_format_value(running, o, &a);
    pier_config_format_value(cfg, o, &b);
    char msg[128];
    snprintf(msg, sizeof msg, "%s changes need a restart; keeping the running value", o->key);
    struct pier_logline l;
    pier_log_begin(&l, PIER_LOG_WARN, msg);
    pier_log_strn(&l, "running", a.data ? a.data : "", a.len);
    pier_log_strn(&l, "configured", b.data ? b.data : "", b.len);
    pier_log_end(&l);
    pier_buf_free(&a);
    pier_buf_free(&b);
}

static void reload(struct pier__server *srv) {
    struct reload_ctx r = {.srv = srv, .old = atomic_load(&srv->cfg)};
    struct pier_config *cfg = malloc(sizeof *cfg);
    pier_buf_t errors, diff, restart;
    pier_buf_init(&errors);
    pier_buf_init(&diff);
    pier_buf_init(&restart);
    unsigned char hooks[PIER_APPLY_COUNT] = {0};
    int prepared = 0;

    r.cfg = cfg;
    if (cfg == NULL)
        goto fail;
    if (srv->app.lifecycle != PIER_RUNNING) {
        pier_buf_puts(&errors, "shutting down: reload ignored\n");
        goto fail;
    }
    if (pier_config_load(cfg, srv->config_path, srv->sets, srv->nsets, &errors) != 0)
        goto fail;
    for (size_t i = 0; i < pier_options_count; i++) {
        const struct pier_option *o = &pier_options[i];
        if (!pier_config_differs(r.old, cfg, o))
            continue;
        if (o->flags & PIER_OPT_RESTART) {
            pier_buf_printf(&restart, "%s%s", restart.len ? ", " : "", o->key);
            log_needs_restart(r.old, cfg, o);
            pier_config_copy_value(cfg, r.old, o);
        } else {
            hooks[o->apply] = 1;
        }
    }
    hooks[PIER_APPLY_LIMITS] = 1; /* the descriptor limit may have changed from outside */
    for (prepared = 0; prepared < PIER_APPLY_COUNT; prepared++)
        if (hooks[prepared] && apply_hooks[prepared].prepare &&
            apply_hooks[prepared].prepare(&r, &errors) != 0)
            goto fail;
    struct pier_config **list = realloc(srv->configs, (srv->nconfigs + 1) * sizeof *list);
    if (list == NULL) {
        pier_buf_puts(&errors, "out of memory\n");
        goto fail;
    }
    srv->configs = list;
    srv->configs[srv->nconfigs++] = cfg;
    pier_config_diff(r.old, cfg, &diff);
    atomic_store(&srv->cfg, cfg);
    for (int h = 0; h < PIER_APPLY_COUNT; h++)
        if (hooks[h] && apply_hooks[h].commit)
            apply_hooks[h].commit(&r);
    wake_workers(srv);
    free_unused_configs(srv); /* r.old may be gone from here on */
    pier_counter_add(&srv->app.reloads_success, 1);
    atomic_store(&srv->app.last_reload_success_unix_ms, wall_ms());

    struct pier_logline l;
    pier_log_begin(&l, PIER_LOG_INFO, "config reloaded");
    pier_log_str(&l, "file", srv->config_path ? srv->config_path : "(defaults)");
    pier_log_strn(&l, "changed", diff.data ? diff.data : "", diff.len);
    if (restart.len)
        pier_log_strn(&l, "needs_restart", restart.data, restart.len);
    if (hooks[PIER_APPLY_LISTEN]) {
        pier_log_str(&l, "host", cfg->listen_host);
        pier_log_int(&l, "port", r.port);
    }
    pier_log_end(&l);
    goto out;
fail:
    while (prepared-- > 0)
        if (hooks[prepared] && apply_hooks[prepared].abort)
            apply_hooks[prepared].abort(&r);
    free(cfg);
    pier_counter_add(&srv->app.reloads_failure, 1);
    log_config_errors("config reload failed; keeping the running config",
                      srv->config_path ? srv->config_path : "(defaults)", &errors);
out:
    pier_buf_free(&errors);
    pier_buf_free(&diff);
    pier_buf_free(&restart);
}

/* SIGUSR1 / SIGUSR2: stop / resume keep-alive. After a blue/green switch the old process
 * gets SIGUSR1, so the proxy's cached connections to it close after their next request and
 * traffic moves to the new one, while this one stays ready to take it back (SIGUSR2). */
static void on_keepalive_signal(uv_signal_t *h, int signum) {
    struct pier__server *srv = h->data;
    int closing = signum == SIGUSR1;
    atomic_store(&srv->app.close_connections, closing);
    pier_log_msg(PIER_LOG_INFO, closing ? "keep-alive off: every answer says Connection: close"
                                        : "keep-alive on again");
}

static void on_hup(uv_signal_t *h, int signum) {
    (void)signum;
    reload(h->data);
}

/* Until their handlers are installed, SIGHUP, SIGUSR1 and SIGUSR2 would end the process by
 * their default action: a reload or a keep-alive switch sent while pier starts would kill
 * it. They are held (blocked) from main()'s first line; once the handlers are in place they
 * are let through, and one that came meanwhile is handled then. */
static void held_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
    sigaddset(set, SIGUSR2);
}

void pier_server_hold_signals(void) {
    sigset_t set;
    held_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void release_signals(void) {
    sigset_t set;
    held_signals(&set);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

int pier_server_run(struct pier_config *cfg, const char *config_path, const char *const *sets,
                    size_t nsets) {
    struct pier__server srv;
    memset(&srv, 0, sizeof srv);
    int fds[256];
    int port = 0;
    char err[512];
    int rc = 1;

    signal(SIGPIPE, SIG_IGN);
    srv.nworkers = pier_config_workers(cfg);
    srv.config_path = config_path ? strdup(config_path) : NULL;
    srv.sets = sets;
    srv.nsets = nsets;
    srv.configs = malloc(sizeof *srv.configs);
    srv.configs[srv.nconfigs++] = cfg;
    atomic_init(&srv.cfg, cfg);
    srv.app.start_unix_ms = wall_ms();
    srv.app.start_mono_ns = pier_now_ns();
    srv.app.nworkers = srv.nworkers;
    srv.app.routes = pier_routes;
    srv.app.nroutes = pier_routes_count;
    pier_app_collect_components(&srv.app);
    srv.app.worker_metrics = calloc((size_t)srv.nworkers, sizeof *srv.app.worker_metrics);
    srv.workers = calloc((size_t)srv.nworkers, sizeof *srv.workers);
    srv.unix_fd = -1;
    pier_log_configure((int)cfg->log_level, (int)cfg->log_format);
    raise_fd_limit();

    if (open_listeners(cfg->listen_host, (int)cfg->listen_port, srv.nworkers, fds, &port, err,
                       sizeof err) != 0) {
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_ERROR, "cannot start");
        pier_log_str(&l, "error", err);
        pier_log_end(&l);
        fprintf(stderr, "pier: %s\n", err);
        goto out;
    }

    if (cfg->listen_unix[0] &&
        open_unix_listener(cfg, &srv.unix_fd, &srv.unix_dev, &srv.unix_ino, err, sizeof err) != 0) {
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_ERROR, "cannot start");
        pier_log_str(&l, "error", err);
        pier_log_end(&l);
        fprintf(stderr, "pier: %s\n", err);
        for (int i = 0; i < srv.nworkers; i++)
            close(fds[i]);
        goto out;
    }
    snprintf(srv.unix_path, sizeof srv.unix_path, "%s", cfg->listen_unix);

    srv.loop = uv_default_loop();
    uv_signal_init(srv.loop, &srv.sig_term);
    uv_signal_init(srv.loop, &srv.sig_int);
    uv_signal_init(srv.loop, &srv.sig_hup);
    uv_signal_init(srv.loop, &srv.sig_usr1);
    uv_signal_init(srv.loop, &srv.sig_usr2);
    uv_timer_init(srv.loop, &srv.grace_timer);
    uv_timer_init(srv.loop, &srv.drain_timer);
    uv_async_init(srv.loop, &srv.worker_done, on_worker_done);
    srv.sig_term.data = srv.sig_int.data = srv.sig_hup.data = &srv;
    srv.sig_usr1.data = srv.sig_usr2.data = &srv;
    srv.grace_timer.data = srv.drain_timer.data = srv.worker_done.data = &srv;
    uv_signal_start(&srv.sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&srv.sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&srv.sig_hup, on_hup, SIGHUP);
    uv_signal_start(&srv.sig_usr1, on_keepalive_signal, SIGUSR1);
    uv_signal_start(&srv.sig_usr2, on_keepalive_signal, SIGUSR2);
    release_signals(); /* handled from here on; the workers inherit the mask */

    for (int i = 0; i < srv.nworkers; i++) {
        int wrc = worker_init(&srv, &srv.workers[i], i, fds[i]);
        if (wrc == 0 && srv.unix_fd >= 0) {
            int dup_fd = fcntl(srv.unix_fd, F_DUPFD_CLOEXEC, 0);
            wrc = dup_fd < 0 ? uv_translate_sys_error(errno)
                             : pier__worker_listen(&srv.workers[i], dup_fd, 1);
        }
        if (wrc != 0) {
            fprintf(stderr, "pier: cannot start worker %d: %s\n", i, uv_strerror(wrc));
            _exit(1);
        }
    }
    /* Every worker's loop and listener is open and no client is connected yet: what is open
     * now is what the process holds at rest. */
    srv.fds_at_rest = count_open_fds();
    if (srv.fds_at_rest < 0)
        srv.fds_at_rest = 16 + 6 * srv.nworkers; /* no /proc: libuv's usual share per loop */
    apply_fd_budget(&srv, cfg, 1);
    uv_thread_options_t opts = {.flags = UV_THREAD_HAS_STACK_SIZE, .stack_size = 256 * 1024};
    for (int i = 0; i < srv.nworkers; i++) {
        if (uv_thread_create_ex(&srv.workers[i].thread, &opts, worker_main, &srv.workers[i]) != 0) {
            fprintf(stderr, "pier: cannot start worker thread %d\n", i);
            _exit(1);
        }
    }

    struct pier_logline l;
    pier_log_begin(&l, PIER_LOG_INFO, "listening");
    pier_log_str(&l, "host", cfg->listen_host);
    pier_log_int(&l, "port", port);
    if (srv.unix_fd >= 0)
        pier_log_str(&l, "unix", srv.unix_path);
    pier_log_str(&l, "prefix", cfg->prefix);
    pier_log_str(&l, "environment", cfg->environment);
    pier_log_int(&l, "workers", srv.nworkers);
    pier_log_int(&l, "pid", (int64_t)getpid());
    pier_log_str(&l, "config", config_path ? config_path : "(defaults)");
    pier_log_end(&l);

    uv_run(srv.loop, UV_RUN_DEFAULT);

    for (int i = 0; i < srv.nworkers; i++) {
        uv_thread_join(&srv.workers[i].thread);
        worker_destroy(&srv.workers[i]);
    }
    uv_loop_close(srv.loop);
    unix_unlink(&srv);
    pier_log_msg(PIER_LOG_INFO, "stopped");
    rc = 0;
out:
    for (size_t i = 0; i < srv.nconfigs; i++)
        free(srv.configs[i]);
    free(srv.configs);
    free(srv.workers);
    free(srv.app.worker_metrics);
    free(srv.config_path);
    return rc;
}
