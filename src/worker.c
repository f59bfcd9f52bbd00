/* worker — a worker thread's life: its loop and handles, what the control thread asks of it
 * through its async handle (a new config, a new listener, drain, cut), and its end.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pier/log.h"
#include "tsan_plant.h"
#include "worker.h"

#define READ_BUFFER_BYTES (64 * 1024)

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

void pier__worker_main(void *arg) {
    struct pier__worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pier_env_flush_log(&w->env);
    atomic_store(&w->finished, 1);
    uv_async_send(&w->server->worker_done);
}

int pier__worker_init(struct pier__server *srv, struct pier__worker *w, int id, int fd) {
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

void pier__worker_destroy(struct pier__worker *w) {
    uv_loop_close(&w->loop);
    pier_env_destroy(&w->env);
    free(w->readbuf);
    free(w->heap);
}

void pier__wake_workers(struct pier__server *srv) {
    for (int i = 0; i < srv->nworkers; i++)
        if (!atomic_load(&srv->workers[i].finished))
            uv_async_send(&srv->workers[i].wake);
}
