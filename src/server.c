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
#include "pier/server.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
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

#define READ_BUFFER_BYTES (64 * 1024)
#define FD_RESERVE        64 /* descriptors kept for listeners, logs, /proc reads */

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- listeners ------------------------------------------------------------------------- */

/* Bind and listen `n` sockets on host:port (SO_REUSEPORT when n > 1). On success fds[] are
 * open and *bound_port says the port (useful when port is 0). */
static int open_listeners(const char *host, int port, int n, int *fds, int *bound_port, char *err,
                          size_t errsize) {
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (pier_net_addr(host, port, &ss, &sslen) != 0) {
        snprintf(err, errsize, "%s is not an IP address", host);
        return -EINVAL;
    }
    int i;
    for (i = 0; i < n; i++)
        fds[i] = -1;
    for (i = 0; i < n; i++) {
        int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            goto fail;
        fds[i] = fd;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (n > 1 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
            goto fail;
        if (bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, 511) != 0)
            goto fail;
        if (i == 0) { /* the others join the port the first one got */
            struct sockaddr_storage got;
            socklen_t gl = sizeof got;
            getsockname(fd, (struct sockaddr *)&got, &gl);
            port = pier_net_port(&got);
            pier_net_addr(host, port, &ss, &sslen);
        }
    }
    *bound_port = port;
    return 0;
fail : {
    int e = errno;
    snprintf(err, errsize, "cannot listen on %s:%d: %s", host, port, strerror(e));
    for (int j = 0; j < n; j++)
        if (fds[j] >= 0)
            close(fds[j]);
    return -e;
}
}

/* The Unix socket (listen.unix). One listening socket, which every worker adopts a duplicate
 * of (SO_REUSEPORT does not apply to paths). The file is made with the configured mode and
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

/* chmod and chgrp the socket file: at start, and when a reload changes mode or group. */
static int unix_apply_perms(const struct pier_config *cfg, const char *path, char *err,
                            size_t errsize) {
    mode_t mode;
    gid_t gid;
    int rc = unix_mode_group(cfg, &mode, &gid, err, errsize);
    if (rc != 0)
        return rc;
    if (chmod(path, mode) != 0) {
        rc = -errno;
        snprintf(err, errsize, "cannot set mode %s on %s: %s", cfg->listen_unix_mode, path,
                 strerror(errno));
        return rc;
    }
    if (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) != 0) {
        rc = -errno;
        snprintf(err, errsize, "cannot give %s to group %s: %s (pier must be a member of it)", path,
                 cfg->listen_unix_group, strerror(errno));
        return rc;
    }
    return 0;
}

static int open_unix_listener(const struct pier_config *cfg, int *out, ino_t *ino, char *err,
                              size_t errsize) {
    const char *path = cfg->listen_unix;
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
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        int why = errno;
        if (probe >= 0)
            close(probe);
        if (live || why != ECONNREFUSED) {
            snprintf(err, errsize, "cannot listen on unix:%s: %s", path,
                     live ? "another process accepts connections on it" : strerror(why));
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
    int rc = unix_apply_perms(cfg, path, err, errsize);
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
    struct stat st;
    *ino = stat(path, &st) == 0 ? st.st_ino : 0;
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
static void unix_unlink(struct pier_server *srv) {
    struct stat st;
    if (srv->unix_fd < 0)
        return;
    if (stat(srv->unix_path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == srv->unix_ino)
        unlink(srv->unix_path);
    close(srv->unix_fd);
    srv->unix_fd = -1;
}

/* Raise the soft descriptor limit to the hard one and bound max_connections by it. */
static void apply_fd_limit(struct pier_server *srv, const struct pier_config *cfg) {
    struct rlimit rl;
    int64_t max = cfg->max_connections;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        int64_t room = rl.rlim_cur == RLIM_INFINITY ? INT32_MAX : (int64_t)rl.rlim_cur;
        room -= FD_RESERVE + srv->nworkers;
        if (room < 1)
            room = 1;
        if (max > room) {
            struct pier_logline l;
            pier_log_begin(&l, PIER_LOG_WARN,
                           "limits.max_connections exceeds the descriptor limit; lowered");
            pier_log_int(&l, "configured", max);
            pier_log_int(&l, "effective", room);
            pier_log_int(&l, "rlimit_nofile", (int64_t)rl.rlim_cur);
            pier_log_end(&l);
            max = room;
        }
    }
    atomic_store(&srv->max_connections, (int)max);
}

/* ---- workers --------------------------------------------------------------------------- */

static void worker_handle_closed(uv_handle_t *h) {
    (void)h;
}

void pier_worker_maybe_finish(struct pier_worker *w) {
    if (!w->draining || w->stopping || w->nconns > 0 || w->listener || w->unix_listener)
        return;
    w->stopping = 1;
    uv_timer_stop(&w->tick);
    uv_close((uv_handle_t *)&w->tick, worker_handle_closed);
    uv_close((uv_handle_t *)&w->wake, worker_handle_closed);
}

void pier_worker_on_wake(uv_async_t *handle) {
    struct pier_worker *w = handle->data;
    struct pier_server *srv = w->server;
    if (w->stopping)
        return;
    const struct pier_config *cfg = atomic_load(&srv->cfg);
    if (cfg != w->cfg) {
        w->cfg = cfg;
        w->env.cfg = cfg;
    }
    int fd = atomic_exchange(&w->new_listen_fd, -1);
    if (fd >= 0) {
        if (w->draining) {
            close(fd);
        } else {
            int rc = pier_worker_start_listening(w, fd);
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
        pier_worker_close_listener(w);
    }
    if (!w->forced && atomic_load(&srv->force_close)) {
        w->forced = 1;
        unsigned cut = pier_worker_close_all(w);
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_WARN, "drain time ran out; connections cut");
        pier_log_int(&l, "worker", w->id);
        pier_log_int(&l, "connections", cut);
        pier_log_end(&l);
    }
    pier_worker_maybe_finish(w);
}

static void worker_main(void *arg) {
    struct pier_worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pier_env_flush_log(&w->env);
    atomic_store(&w->finished, 1);
    uv_async_send(&w->server->worker_done);
}

static int worker_init(struct pier_server *srv, struct pier_worker *w, int id, int fd) {
    memset(w, 0, sizeof *w);
    w->id = id;
    w->server = srv;
    w->cfg = atomic_load(&srv->cfg);
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
    uv_async_init(&w->loop, &w->wake, pier_worker_on_wake);
    w->wake.data = w;
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    return pier_worker_start_listening(w, fd);
}

static void worker_destroy(struct pier_worker *w) {
    uv_loop_close(&w->loop);
    pier_env_destroy(&w->env);
    free(w->readbuf);
}

static void wake_workers(struct pier_server *srv) {
    for (int i = 0; i < srv->nworkers; i++)
        if (!atomic_load(&srv->workers[i].finished))
            uv_async_send(&srv->workers[i].wake);
}

/* ---- control loop ---------------------------------------------------------------------- */

static void control_handle_closed(uv_handle_t *h) {
    (void)h;
}

static void close_control(struct pier_server *srv) {
    uv_close((uv_handle_t *)&srv->sig_term, control_handle_closed);
    uv_close((uv_handle_t *)&srv->sig_int, control_handle_closed);
    uv_close((uv_handle_t *)&srv->sig_hup, control_handle_closed);
    uv_close((uv_handle_t *)&srv->grace_timer, control_handle_closed);
    uv_close((uv_handle_t *)&srv->drain_timer, control_handle_closed);
    uv_close((uv_handle_t *)&srv->worker_done, control_handle_closed);
}

static void on_worker_done(uv_async_t *h) {
    struct pier_server *srv = h->data;
    for (int i = 0; i < srv->nworkers; i++)
        if (!atomic_load(&srv->workers[i].finished))
            return;
    close_control(srv);
}

static void on_drain_timeout(uv_timer_t *t) {
    struct pier_server *srv = t->data;
    atomic_store(&srv->force_close, 1);
    wake_workers(srv);
}

static void begin_drain(struct pier_server *srv) {
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

static void on_stop_signal(uv_signal_t *h, int signum) {
    struct pier_server *srv = h->data;
    if (srv->signals_seen++ > 0) {
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_WARN, "second stop signal: exiting now");
        pier_log_str(&l, "signal", strsignal(signum));
        pier_log_end(&l);
        for (int i = 0; i < srv->nworkers; i++)
            pier_env_flush_log(&srv->workers[i].env);
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

static void reload(struct pier_server *srv) {
    const struct pier_config *old = atomic_load(&srv->cfg);
    struct pier_config *cfg = malloc(sizeof *cfg);
    pier_buf_t errors, diff;
    pier_buf_init(&errors);
    pier_buf_init(&diff);
    int fds[256];
    int port = 0;

    if (cfg == NULL)
        goto fail;
    if (srv->app.lifecycle != PIER_RUNNING) {
        pier_buf_puts(&errors, "shutting down: reload ignored\n");
        goto fail;
    }
    if (pier_config_load(cfg, srv->config_path, srv->sets, srv->nsets, &errors) != 0)
        goto fail;
    if (pier_config_workers(cfg) != srv->nworkers) {
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_WARN, "workers changes need a restart; keeping the count");
        pier_log_int(&l, "running", srv->nworkers);
        pier_log_end(&l);
    }
    if (strcmp(cfg->listen_unix, old->listen_unix) != 0) {
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_WARN, "listen.unix changes need a restart; keeping the socket");
        pier_log_str(&l, "running", old->listen_unix);
        pier_log_str(&l, "configured", cfg->listen_unix);
        pier_log_end(&l);
        memcpy(cfg->listen_unix, old->listen_unix, sizeof cfg->listen_unix);
    }
    if (srv->unix_fd >= 0 && (strcmp(cfg->listen_unix_mode, old->listen_unix_mode) != 0 ||
                              strcmp(cfg->listen_unix_group, old->listen_unix_group) != 0)) {
        char err[512];
        if (unix_apply_perms(cfg, cfg->listen_unix, err, sizeof err) != 0) {
            pier_buf_printf(&errors, "%s\n", err);
            goto fail;
        }
    }
    int moved =
        strcmp(cfg->listen_host, old->listen_host) != 0 || cfg->listen_port != old->listen_port;
    if (moved) {
        char err[256];
        if (open_listeners(cfg->listen_host, (int)cfg->listen_port, srv->nworkers, fds, &port, err,
                           sizeof err) != 0) {
            pier_buf_printf(&errors, "%s\n", err);
            goto fail;
        }
    }
    pier_config_diff(old, cfg, &diff);
    struct pier_config **list = realloc(srv->configs, (srv->nconfigs + 1) * sizeof *list);
    if (list == NULL) {
        if (moved)
            for (int i = 0; i < srv->nworkers; i++)
                close(fds[i]);
        goto fail;
    }
    srv->configs = list;
    srv->configs[srv->nconfigs++] = cfg;
    pier_log_configure((int)cfg->log_level, (int)cfg->log_format);
    apply_fd_limit(srv, cfg);
    atomic_store(&srv->cfg, cfg);
    if (moved)
        for (int i = 0; i < srv->nworkers; i++)
            atomic_store(&srv->workers[i].new_listen_fd, fds[i]);
    wake_workers(srv);
    pier_counter_add(&srv->app.reloads_success, 1);
    atomic_store(&srv->app.last_reload_success_unix_ms, wall_ms());

    struct pier_logline l;
    pier_log_begin(&l, PIER_LOG_INFO, "config reloaded");
    pier_log_str(&l, "file", srv->config_path ? srv->config_path : "(defaults)");
    pier_log_strn(&l, "changed", diff.data ? diff.data : "", diff.len);
    if (moved) {
        pier_log_str(&l, "host", cfg->listen_host);
        pier_log_int(&l, "port", port);
    }
    pier_log_end(&l);
    pier_buf_free(&errors);
    pier_buf_free(&diff);
    return;
fail:
    free(cfg);
    pier_counter_add(&srv->app.reloads_failure, 1);
    log_config_errors("config reload failed; keeping the running config",
                      srv->config_path ? srv->config_path : "(defaults)", &errors);
    pier_buf_free(&errors);
    pier_buf_free(&diff);
}

static void on_hup(uv_signal_t *h, int signum) {
    (void)signum;
    reload(h->data);
}

int pier_server_run(struct pier_config *cfg, const char *config_path, const char *const *sets,
                    size_t nsets) {
    struct pier_server srv;
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
    srv.app.worker_metrics = calloc((size_t)srv.nworkers, sizeof *srv.app.worker_metrics);
    srv.workers = calloc((size_t)srv.nworkers, sizeof *srv.workers);
    srv.unix_fd = -1;
    pier_log_configure((int)cfg->log_level, (int)cfg->log_format);
    apply_fd_limit(&srv, cfg);

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
        open_unix_listener(cfg, &srv.unix_fd, &srv.unix_ino, err, sizeof err) != 0) {
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
    uv_timer_init(srv.loop, &srv.grace_timer);
    uv_timer_init(srv.loop, &srv.drain_timer);
    uv_async_init(srv.loop, &srv.worker_done, on_worker_done);
    srv.sig_term.data = srv.sig_int.data = srv.sig_hup.data = &srv;
    srv.grace_timer.data = srv.drain_timer.data = srv.worker_done.data = &srv;
    uv_signal_start(&srv.sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&srv.sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&srv.sig_hup, on_hup, SIGHUP);

    for (int i = 0; i < srv.nworkers; i++) {
        int wrc = worker_init(&srv, &srv.workers[i], i, fds[i]);
        if (wrc == 0 && srv.unix_fd >= 0) {
            int dup_fd = fcntl(srv.unix_fd, F_DUPFD_CLOEXEC, 0);
            wrc = dup_fd < 0 ? uv_translate_sys_error(errno)
                             : pier_worker_start_listening_unix(&srv.workers[i], dup_fd);
        }
        if (wrc != 0) {
            fprintf(stderr, "pier: cannot start worker %d: %s\n", i, uv_strerror(wrc));
            _exit(1);
        }
    }
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
