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
#include "fdbudget.h"
#include "listen.h"
#include "worker.h"

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
    pier__wake_workers(srv);
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
    pier__wake_workers(srv);
}

static void on_grace_over(uv_timer_t *t) {
    begin_drain(t->data);
}

/* Exiting at once: the access-log lines each worker batched are the worker's to write (it may
 * be appending to its batch right now), so ask every worker to flush and wait a moment. */
static void flush_workers(struct pier__server *srv) {
    atomic_store(&srv->flush_now, 1);
    pier__wake_workers(srv);
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
    struct pier__unix_perms unix_was; /* PIER_APPLY_UNIX_PERMS: what the socket file had */
    int unix_set;
};

static int prepare_listen(struct reload_ctx *r, pier_buf_t *errors) {
    char err[256];
    if (pier__listen_tcp(r->cfg->listen_host, (int)r->cfg->listen_port, r->srv->nworkers, r->fds,
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
 * and leaves the file as it was (pier__unix_set_perms changes both or neither). */
static int prepare_unix_perms(struct reload_ctx *r, pier_buf_t *errors) {
    struct pier__server *srv = r->srv;
    char err[512];
    mode_t mode;
    gid_t gid;
    if (srv->unix_fd < 0)
        return 0;
    if (pier__unix_mode_group(r->cfg, &mode, &gid, err, sizeof err) != 0 ||
        pier__unix_set_perms(srv->unix_path, srv->unix_dev, srv->unix_ino, mode, gid,
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
    if (pier__unix_set_perms(srv->unix_path, srv->unix_dev, srv->unix_ino, r->unix_was.mode,
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
    pier__fd_budget_apply(r->srv, r->cfg, 0);
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
    pier__wake_workers(srv);
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
    pier_fd_raise_limit();

    if (pier__listen_tcp(cfg->listen_host, (int)cfg->listen_port, srv.nworkers, fds, &port, err,
                         sizeof err) != 0) {
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_ERROR, "cannot start");
        pier_log_str(&l, "error", err);
        pier_log_end(&l);
        fprintf(stderr, "pier: %s\n", err);
        goto out;
    }

    if (cfg->listen_unix[0] &&
        pier__listen_unix(cfg, &srv.unix_fd, &srv.unix_dev, &srv.unix_ino, err, sizeof err) != 0) {
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
        int wrc = pier__worker_init(&srv, &srv.workers[i], i, fds[i]);
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
    srv.fds_at_rest = pier_fd_count();
    if (srv.fds_at_rest < 0)
        srv.fds_at_rest = 16 + 6 * srv.nworkers; /* no /proc: libuv's usual share per loop */
    pier__fd_budget_apply(&srv, cfg, 1);
    uv_thread_options_t opts = {.flags = UV_THREAD_HAS_STACK_SIZE, .stack_size = 256 * 1024};
    for (int i = 0; i < srv.nworkers; i++) {
        if (uv_thread_create_ex(&srv.workers[i].thread, &opts, pier__worker_main,
                                &srv.workers[i]) != 0) {
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
        pier__worker_destroy(&srv.workers[i]);
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
