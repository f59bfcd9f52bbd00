/* accept — a worker's listeners: waiting on them, accepting, pausing when out of descriptors.
 *
 * A listening socket (TCP, listen.unix) is one socket every worker holds a duplicate of, bound
 * without SO_REUSEPORT (src/listen.c), so no second process can share its port. Each worker
 * waits on it with EPOLLEXCLUSIVE, so a connection wakes one idle worker, not all. libuv cannot
 * ask for EPOLLEXCLUSIVE, so the socket joins the loop's epoll set by hand, tagged with an
 * eventfd that a uv_poll watches: libuv hands the event to that uv_poll's callback.
 *
 * At most ACCEPT_BATCH connections per wake-up; each is made a connection or closed at once.
 * A client's own network error is skipped; out of descriptors or memory the listener pauses
 * for ACCEPT_PAUSE_MS (the clients wait in the backlog) and resumes, like nginx, with one log
 * line when an episode starts and one when it ends.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pier/clock.h"
#include "pier/log.h"
#include "worker.h"

#define ACCEPT_BATCH    64  /* connections accepted per wake-up, so one listener cannot starve */
#define ACCEPT_PAUSE_MS 500 /* nginx waits 500 ms too */

static uint64_t now_ms(void) {
    return pier_now_ns() / 1000000u;
}

/* A client we cannot take (no memory for it): close it, so it learns at once instead of
 * waiting in the backlog, and say so — at most once a second, with how many were shed since
 * the last line; the rest of an episode is counted in "accepting again". */
static void accept_shed(struct pier__worker *w, int fd, int err) {
    close(fd);
    w->shed_unlogged++;
    w->accept_trouble = 1;
    uint64_t now = now_ms();
    if (w->shed_logged_ms != 0 && now - w->shed_logged_ms < 1000)
        return;
    struct pier_logline l;
    pier_log_begin(&l, PIER_LOG_WARN, "connection shed: cannot set it up");
    pier_log_int(&l, "worker", w->id);
    pier_log_str(&l, "error", uv_strerror(err));
    pier_log_int(&l, "shed", w->shed_unlogged);
    pier_log_end(&l);
    w->shed_logged_ms = now;
    w->shed_unlogged = 0;
}

/* A client got a connection after clients were shed or accepting paused: the episode is over.
 * Say so, with the pauses it took and the clients shed since the last "connection shed" line
 * (those are logged nowhere else). */
static void accept_recovered(struct pier__worker *w) {
    struct pier_logline l;
    pier_log_begin(&l, PIER_LOG_INFO, "accepting again");
    pier_log_int(&l, "worker", w->id);
    pier_log_int(&l, "pauses", w->accept_pauses);
    pier_log_int(&l, "shed", w->shed_unlogged);
    pier_log_end(&l);
    w->accept_trouble = 0;
    w->accept_pauses = 0;
    w->shed_unlogged = 0;
}

/* Make `fd` a connection, or shed it. Returns 0 when the client got a connection (served, or
 * refused with a 503 at max_connections). */
static int accept_one(struct pier__worker *w, int fd, int is_unix) {
    int rc = pier__conn_open(w, fd, is_unix);
    if (rc != 0)
        accept_shed(w, fd, rc);
    return rc;
}

static void on_acceptable(uv_poll_t *poll, int status, int events);

/* Wait on the listening socket: it joins the loop's epoll set with EPOLLEXCLUSIVE, tagged with
 * the descriptor of ls->poll (see "Listening" at the top of this file). */
static int listener_watch(struct pier__listener *ls) {
    if (ls->watched)
        return 0;
    int epfd = uv_backend_fd(&ls->w->loop);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = ls->signal_fd};
    int rc = epoll_ctl(epfd, EPOLL_CTL_ADD, ls->fd, &ev);
    if (rc != 0 && errno == EINVAL) { /* a kernel without EPOLLEXCLUSIVE (before 4.5) */
        ev.events = EPOLLIN;          /* then every waiting worker wakes: slower, still right */
        rc = epoll_ctl(epfd, EPOLL_CTL_ADD, ls->fd, &ev);
    }
    if (rc != 0)
        return uv_translate_sys_error(errno);
    rc = uv_poll_start(&ls->poll, UV_READABLE, on_acceptable);
    if (rc != 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, ls->fd, &ev);
        return rc;
    }
    ls->watched = 1;
    return 0;
}

/* Stop waiting on it: out of the epoll set first, so no event tagged for ls->poll comes
 * while ls->poll is stopped (libuv would then drop ls->poll's own descriptor, not this one,
 * and the listener's readiness would return at every turn of the loop). */
static void listener_unwatch(struct pier__listener *ls) {
    if (!ls->watched)
        return;
    struct epoll_event ev = {0}; /* kernels before 2.6.9 want one even for EPOLL_CTL_DEL */
    epoll_ctl(uv_backend_fd(&ls->w->loop), EPOLL_CTL_DEL, ls->fd, &ev);
    uv_poll_stop(&ls->poll);
    ls->watched = 0;
}

static void accept_resume(uv_timer_t *t) {
    struct pier__worker *w = t->data;
    struct pier__listener *all[] = {w->listener, w->unix_listener};
    for (int i = 0; i < 2; i++) {
        struct pier__listener *ls = all[i];
        if (ls == NULL || !ls->paused || ls->closing)
            continue;
        ls->paused = 0;
        int rc = listener_watch(ls);
        if (rc != 0) {
            struct pier_logline l;
            pier_log_begin(&l, PIER_LOG_ERROR, "cannot watch the listener again; retrying");
            pier_log_int(&l, "worker", w->id);
            pier_log_str(&l, "error", uv_strerror(rc));
            pier_log_end(&l);
            ls->paused = 1;
            uv_timer_start(&w->accept_timer, accept_resume, ACCEPT_PAUSE_MS, 0);
        }
    }
}

/* Out of descriptors or kernel memory, or an error accept4 should never give: stop watching
 * this listener for ACCEPT_PAUSE_MS instead of spinning on it. The clients stay in the
 * backlog and are taken when accepting resumes (or by another worker meanwhile). One log line
 * per episode; "accepting again" ends it. */
static void accept_pause(struct pier__listener *ls, int err) {
    struct pier__worker *w = ls->w;
    listener_unwatch(ls);
    ls->paused = 1;
    w->accept_trouble = 1;
    if (!uv_is_active((uv_handle_t *)&w->accept_timer))
        uv_timer_start(&w->accept_timer, accept_resume, ACCEPT_PAUSE_MS, 0);
    if (w->accept_pauses++ > 0)
        return;
    struct pier_logline l;
    pier_log_begin(&l, PIER_LOG_WARN, "cannot accept: accepting paused");
    pier_log_int(&l, "worker", w->id);
    pier_log_str(&l, "listener", ls->is_unix ? "unix" : "tcp");
    pier_log_str(&l, "error", uv_strerror(err));
    pier_log_int(&l, "pause_ms", ACCEPT_PAUSE_MS);
    pier_log_int(&l, "connections", w->nconns);
    pier_log_end(&l);
}

/* Errors accept4 returns for one client that is gone or never made it: Linux passes the new
 * connection's pending network errors through accept (accept(2)), and the next client in
 * the queue may be fine. Retried at once, never a pause. */
static int accept_error_is_the_clients(int e) {
    switch (e) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case EPERM: /* a firewall rule refused this connection */
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
        return 1;
    default:
        return 0;
    }
}

static void on_acceptable(uv_poll_t *poll, int status, int events) {
    struct pier__listener *ls = poll->data;
    struct pier__worker *w = ls->w;
    (void)events;
    if (status != 0) { /* libuv stopped ls->poll (an error on the socket) */
        accept_pause(ls, status);
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH && !ls->paused && !ls->closing; i++) {
        int fd = accept4(ls->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK)
                return;
            if (accept_error_is_the_clients(e))
                continue;
            accept_pause(ls, -e); /* EMFILE, ENFILE, ENOBUFS, ENOMEM, and the unexpected */
            return;
        }
        if (accept_one(w, fd, ls->is_unix) == 0 && w->accept_trouble)
            accept_recovered(w);
    }
}

static void on_listener_closed(uv_handle_t *h) {
    struct pier__listener *ls = h->data;
    struct pier__worker *w = ls->w;
    if (ls->fd >= 0)
        close(ls->fd);
    close(ls->signal_fd);
    free(ls);
    pier__worker_maybe_finish(w);
}

static void listener_close(struct pier__listener *ls) {
    listener_unwatch(ls);
    ls->closing = 1;
    uv_close((uv_handle_t *)&ls->poll, on_listener_closed);
}

/* Accept from `fd`, this worker's duplicate of a listening socket (TCP, or listen.unix when
 * is_unix). Returns 0 (the worker owns fd from then on) or an error (fd is still the
 * caller's). A reload that moves the TCP listener calls it again: the new socket listens
 * before the old one closes. */
int pier__worker_listen(struct pier__worker *w, int fd, int is_unix) {
    struct pier__listener *ls = calloc(1, sizeof *ls);
    if (ls == NULL)
        return UV_ENOMEM;
    ls->fd = fd;
    ls->w = w;
    ls->is_unix = is_unix;
    ls->signal_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int rc = ls->signal_fd < 0 ? uv_translate_sys_error(errno)
                               : uv_poll_init(&w->loop, &ls->poll, ls->signal_fd);
    if (rc != 0) { /* the handle never joined the loop */
        if (ls->signal_fd >= 0)
            close(ls->signal_fd);
        free(ls);
        return rc;
    }
    ls->poll.data = ls;
    rc = listener_watch(ls);
    if (rc != 0) {
        ls->fd = -1; /* still the caller's */
        ls->closing = 1;
        uv_close((uv_handle_t *)&ls->poll, on_listener_closed);
        return rc;
    }
    struct pier__listener **slot = is_unix ? &w->unix_listener : &w->listener;
    if (*slot)
        listener_close(*slot);
    *slot = ls;
    return 0;
}

void pier__worker_close_listener(struct pier__worker *w) {
    if (w->listener) {
        listener_close(w->listener);
        w->listener = NULL;
    }
    if (w->unix_listener) {
        listener_close(w->unix_listener);
        w->unix_listener = NULL;
    }
}
