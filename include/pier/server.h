/* server — the process: a control loop for signals and lifecycle, and N worker loops.
 *
 * The main thread runs the control loop: SIGTERM/SIGINT start the drain, SIGHUP reloads the
 * config, timers bound the grace and drain periods. Each worker thread runs its own libuv
 * loop with its own listening socket (SO_REUSEPORT when there are several), its own
 * connections, metrics block and log batch, so the request path shares nothing and takes no
 * lock. The control loop talks to workers by publishing state (current config, lifecycle,
 * replacement listeners) and waking them with uv_async_send; workers read it on wake-up.
 */
#ifndef PIER_SERVER_H
#define PIER_SERVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <sys/types.h>

#include <uv.h>

#include "pier/app.h"
#include "pier/config.h"
#include "pier/session.h"

struct pier_server;
struct pier_conn;

enum pier_conn_list {
    PIER_L_NONE,
    PIER_L_IDLE,
    PIER_L_HEADERS,
    PIER_L_BODY,
    PIER_L_WRITE,
    PIER_L_LINGER,
    PIER_L_COUNT
};

struct pier_conn_queue {
    struct pier_conn *head, *tail;
};

struct pier_worker {
    int id;
    struct pier_server *server;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wake;
    uv_timer_t tick;
    uv_tcp_t *listener;
    uv_pipe_t *unix_listener; /* listen.unix, when set */
    const struct pier_config *cfg;
    struct pier_env env;
    struct pier_metrics metrics;
    struct pier_conn_queue lists[PIER_L_COUNT];
    unsigned nconns;
    int draining;
    int forced;
    int stopping;
    atomic_int finished;
    atomic_int new_listen_fd; /* handed over by a reload, -1 when none */
    char *readbuf;
    size_t readbuf_size;
};

struct pier_server {
    uv_loop_t *loop; /* the control loop (main thread) */
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t grace_timer, drain_timer;
    uv_async_t worker_done;
    struct pier_app app;
    _Atomic(const struct pier_config *) cfg;
    struct pier_config **configs; /* every config ever applied; freed at exit */
    size_t nconfigs;
    char *config_path;
    const char *const *sets;
    size_t nsets;
    struct pier_worker *workers;
    int nworkers;
    int unix_fd;    /* listen.unix: the socket workers hold duplicates of; -1 when none */
    ino_t unix_ino; /* its file, so only our own file is unlinked */
    char unix_path[108];
    atomic_int force_close;
    atomic_int max_connections; /* effective: the config, bounded by RLIMIT_NOFILE */
    atomic_int connections;
    int signals_seen;
    int exit_code;
};

/* Run until shut down. Takes ownership of `cfg` (heap-allocated). Returns the exit code. */
int pier_server_run(struct pier_config *cfg, const char *config_path, const char *const *sets,
                    size_t nsets);

/* Worker side (src/conn.c). */
int pier_worker_start_listening(struct pier_worker *w, int fd);
int pier_worker_start_listening_unix(struct pier_worker *w, int fd);
void pier_worker_on_wake(uv_async_t *handle);
void pier_worker_tick(uv_timer_t *handle);
void pier_worker_close_listener(struct pier_worker *w);
unsigned pier_worker_close_all(struct pier_worker *w);
void pier_worker_maybe_finish(struct pier_worker *w);

#endif
