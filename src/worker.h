/* worker — what src/server.c and src/conn.c share, and no other module sees.
 *
 * pier's private tier, like libuv's uv__ names: everything here is prefixed pier__ and lives
 * in src/, not include/. server.c owns the process (control loop, signals, reload, the
 * descriptor budget) and publishes state to the workers; conn.c owns what happens on a worker
 * loop (accepting, connections, their deadlines). The public interface of both is
 * include/pier/server.h: pier_server_run().
 *
 * Deadlines: every open connection has one absolute deadline (monotonic ms) computed from the
 * moment its phase began and the phase's duration in the worker's current config, kept in a
 * binary min-heap per worker; one timer is due at the heap's top, so an idle worker sleeps
 * until the nearest deadline. When a reload changes a timeout, every waiting connection's
 * deadline is recomputed and the heap rebuilt, so the new value applies to new and waiting
 * connections at once and no connection waits behind another.
 */
#ifndef PIER__WORKER_H
#define PIER__WORKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "pier/app.h"
#include "pier/config.h"
#include "pier/session.h"

struct pier__server;
struct pier__worker;

/* One client connection (src/conn.c owns it). */
struct pier__conn {
    union {             /* first: the connection is found from its handle (conn_of) */
        uv_tcp_t tcp;   /* accepted on the TCP listener */
        uv_pipe_t pipe; /* accepted on the Unix socket (listen.unix); used as a stream like tcp */
    };
    struct pier_session s;
    struct pier__worker *w;
    struct pier__conn *prev, *next; /* the worker's list of open connections */
    uint64_t since_ms;              /* when the current phase began */
    uint64_t deadline_ms;           /* since_ms + the phase's timeout */
    size_t heap_index;              /* SIZE_MAX when not in the heap */
    uint32_t seen_requests;
    uint8_t timer; /* enum conn_timer */
    uint8_t state;
    uint8_t close_after_write;
};

/* A listening socket a worker accepts from: the worker's duplicate of it, waited on with
 * EPOLLEXCLUSIVE through `poll` (src/conn.c, "Listening"). Accepting is ours, not
 * uv_listen's, so that it can pause (out of descriptors) and a connection that cannot be set
 * up is closed instead of left in the backlog. */
struct pier__listener {
    uv_poll_t poll; /* on signal_fd: the listening socket's events are tagged with it */
    int fd;
    int signal_fd; /* an eventfd that never fires */
    struct pier__worker *w;
    int is_unix; /* listen.unix: connections are uv_pipe_t */
    int watched; /* fd is in the loop's epoll set */
    int paused;  /* waiting on the worker's accept_timer */
    int closing;
};

struct pier__worker {
    int id;
    struct pier__server *server;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wake;
    uv_timer_t deadline_timer;       /* due at the nearest deadline in the heap */
    uint64_t deadline_timer_ms;      /* the deadline it is armed for; 0 when it is not */
    uv_timer_t log_timer;            /* writes the access-log batch soon after its first line */
    uv_check_t log_check;            /* after each loop turn: starts log_timer if lines wait */
    uv_timer_t accept_timer;         /* resumes paused listeners (EMFILE, ENFILE, ...) */
    struct pier__listener *listener; /* TCP */
    struct pier__listener *unix_listener; /* listen.unix, when set */
    const struct pier_config *cfg;
    /* The config this worker may still read; the control thread frees older ones. */
    _Atomic(const struct pier_config *) cfg_in_use;
    struct pier_env env;
    struct pier_metrics metrics;
    struct pier__conn **heap; /* open connections by deadline (min-heap) */
    size_t heap_len, heap_cap;
    struct pier__conn *conns; /* every open connection, for the drain */
    unsigned nconns;
    int draining;
    int forced;
    int stopping;
    int accept_trouble;     /* clients shed or accepting paused since the last connection */
    unsigned accept_pauses; /* pauses in this episode (logged when accepting resumes) */
    uint64_t shed_logged_ms;
    unsigned shed_unlogged; /* clients shed since the last line that counted them */
    atomic_int finished;
    atomic_int new_listen_fd; /* handed over by a reload, -1 when none */
    atomic_int flushed;       /* set by the worker after a flush the control thread asked for */
    char *readbuf;
    size_t readbuf_size;
};

struct pier__server {
    uv_loop_t *loop; /* the control loop (main thread) */
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;
    uv_timer_t grace_timer, drain_timer;
    uv_async_t worker_done;
    struct pier_app app;
    _Atomic(const struct pier_config *) cfg;
    struct pier_config **configs; /* the current config and old ones a worker may still use */
    size_t nconfigs;
    char *config_path;
    const char *const *sets;
    size_t nsets;
    struct pier__worker *workers;
    int nworkers;
    int unix_fd;    /* listen.unix: the socket workers hold duplicates of; -1 when none */
    dev_t unix_dev; /* its file, so only our own file is chmod-ed or unlinked */
    ino_t unix_ino;
    char unix_path[108];
    int fds_at_rest; /* descriptors open once every worker is up, before any connection */
    atomic_int force_close;
    atomic_int flush_now;       /* second stop signal: workers flush their log batches */
    atomic_int max_connections; /* effective: the config, bounded by the descriptor budget */
    atomic_int connections;
    int signals_seen;
    int exit_code;
};

/* worker.c: a worker's life, driven by the control thread (server.c). */
int pier__worker_init(struct pier__server *srv, struct pier__worker *w, int id, int fd);
void pier__worker_main(void *arg); /* the thread: runs the loop until the worker is done */
void pier__worker_destroy(struct pier__worker *w);
void pier__wake_workers(struct pier__server *srv);

/* conn.c and accept.c: the worker loop's side. */
int pier__conn_open(struct pier__worker *w, int fd, int is_unix);
void pier__worker_timers_init(struct pier__worker *w);
void pier__worker_timers_close(struct pier__worker *w, uv_close_cb done);
int pier__worker_listen(struct pier__worker *w, int fd, int is_unix);
void pier__worker_close_listener(struct pier__worker *w);
void pier__worker_config_changed(struct pier__worker *w);
unsigned pier__worker_close_all(struct pier__worker *w);
/* A worker may have nothing left to do: if draining and empty, close its handles. */
void pier__worker_maybe_finish(struct pier__worker *w);

#endif
