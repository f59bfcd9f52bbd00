/* conn — one connection (TCP, or the Unix socket of listen.unix) on a worker loop: accepting,
 * deadlines, writes, closing.
 *
 * Listening: a listening socket (TCP, listen.unix) is one socket that every worker holds a
 * duplicate of. It is bound without SO_REUSEPORT, so the port is pier's alone: a second
 * process, a second pier included, fails to bind it instead of silently sharing its traffic.
 * Each worker waits on it with EPOLLEXCLUSIVE, so a new connection wakes one waiting worker,
 * not all of them (a busy worker is not waiting: the kernel wakes an idle one). libuv cannot
 * ask for EPOLLEXCLUSIVE, so the socket joins the loop's epoll set (uv_backend_fd) by hand,
 * tagged with the descriptor of an eventfd that never fires and that a uv_poll watches:
 * libuv hands an epoll event to the watcher of the descriptor it is tagged with, so the
 * socket's readiness arrives as that uv_poll's callback. The socket is in the set exactly
 * while that uv_poll runs (listener_watch / listener_unwatch).
 *
 * Accepting: at most ACCEPT_BATCH per wake-up (accept4). Every accepted descriptor is either
 * made a connection or closed at once, so a failed allocation sheds that one client and the
 * listener keeps going. An error that belongs to one client (accept(2): Linux passes its
 * network errors through accept) is skipped at once. Out of descriptors or memory
 * (EMFILE/ENFILE/ENOBUFS/ENOMEM), or an error accept4 should never give, that listener
 * pauses for ACCEPT_PAUSE_MS — the clients wait in the backlog — and resumes, like nginx: one
 * log line when an episode starts, one when a client is served again; never a spin.
 *
 * Reading: every connection of a worker reads into the worker's one read buffer, and the
 * session consumes the bytes before the callback returns, so an idle connection holds no
 * buffer at all. Writing: the responses a read produced (several, when pipelined) leave in
 * one uv_try_write; only what the kernel does not take is copied into a write request the
 * connection owns until it drains, and reading pauses meanwhile (backpressure).
 *
 * Deadlines: each connection has one absolute deadline — when its phase (idle, headers, body,
 * write, linger) began plus that phase's timeout — in the worker's min-heap (src/worker.h).
 * One timer is due at the heap's top (no periodic tick: a worker with only idle connections
 * sleeps until the nearest deadline); it closes or answers 408 to whatever is due, then is
 * set to the next. A deadline set earlier than the timer moves the timer; one that moves
 * later lets it fire early once, find nothing due and move on. A reload recomputes them all.
 *
 * Pipelining: a read full of small requests could turn into megabytes of responses (64 KiB
 * of "GET /metrics" is 2,000 answers). The session stops at a request boundary once 256 KiB
 * of responses are queued (PIER_FEED_PAUSE); the input not yet fed is held (struct
 * pier_held, hung off tcp.data so ordinary connections pay nothing for it) and reading stops
 * until the responses are written; then the held input is fed, then reading resumes.
 *
 * Closing: after a response that ends the connection pier shuts down its sending side and
 * keeps reading (discarding) until the client closes or a short linger ends, so a client
 * still sending a body it was refused reads the error instead of a reset.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pier/clock.h"
#include "pier/log.h"
#include "worker.h"

#define LINGER_MS       2000
#define LOG_FLUSH_MS    100 /* access-log lines wait at most this long for their write */
#define ACCEPT_BATCH    64  /* connections accepted per wake-up, so one listener cannot starve */
#define ACCEPT_PAUSE_MS 500 /* nginx waits 500 ms too */
#define WRITE_CHUNK     (1u << 30) /* uv_buf_t lengths are unsigned int: write in 1 GiB pieces */
#define MAX_WRITE_BUFS  8          /* 8 GiB: more than limits.max_body_bytes can produce */

enum conn_state { C_OPEN, C_WRITING, C_SHUTDOWN, C_LINGER, C_CLOSING };

/* What the deadline of a connection measures; each has one timeout in the config. */
enum conn_timer { T_NONE, T_IDLE, T_HEADERS, T_BODY, T_WRITE, T_LINGER };

struct pier_write {
    uv_write_t req;
    struct pier__conn *conn;
    size_t len;
    char data[];
};

/* Input read but not fed yet: pipelined requests waiting for their turn (tcp.data). */
struct pier_held {
    size_t len, off;
    char data[];
};

/* Close callback for handles that are the first member of their heap block. */
static void free_handle(uv_handle_t *h) {
    free(h);
}

/* The connection a handle belongs to: tcp is its first member, which leaves tcp.data free for
 * the held input. */
static struct pier__conn *conn_of(void *handle) {
    _Static_assert(offsetof(struct pier__conn, tcp) == 0, "tcp must come first");
    return (struct pier__conn *)handle;
}

static uint64_t now_ms(void) {
    return pier_now_ns() / 1000000u;
}

/* ---- deadlines ------------------------------------------------------------------------- */

static uint64_t timeout_ms(const struct pier_config *cfg, int timer) {
    switch (timer) {
    case T_IDLE:
        return (uint64_t)cfg->idle_ms;
    case T_HEADERS:
        return (uint64_t)(cfg->header_ms < cfg->request_ms ? cfg->header_ms : cfg->request_ms);
    case T_BODY:
    case T_WRITE:
        return (uint64_t)cfg->request_ms;
    default:
        return LINGER_MS;
    }
}

static void heap_set(struct pier__worker *w, size_t i, struct pier__conn *c) {
    w->heap[i] = c;
    c->heap_index = i;
}

static void heap_up(struct pier__worker *w, size_t i) {
    struct pier__conn *c = w->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (w->heap[parent]->deadline_ms <= c->deadline_ms)
            break;
        heap_set(w, i, w->heap[parent]);
        i = parent;
    }
    heap_set(w, i, c);
}

static void heap_down(struct pier__worker *w, size_t i) {
    struct pier__conn *c = w->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= w->heap_len)
            break;
        if (child + 1 < w->heap_len &&
            w->heap[child + 1]->deadline_ms < w->heap[child]->deadline_ms)
            child++;
        if (c->deadline_ms <= w->heap[child]->deadline_ms)
            break;
        heap_set(w, i, w->heap[child]);
        i = child;
    }
    heap_set(w, i, c);
}

static void heap_remove(struct pier__conn *c) {
    struct pier__worker *w = c->w;
    size_t i = c->heap_index;
    if (i == SIZE_MAX)
        return;
    c->heap_index = SIZE_MAX;
    c->timer = T_NONE;
    struct pier__conn *last = w->heap[--w->heap_len];
    if (last == c)
        return;
    heap_set(w, i, last);
    heap_up(w, i);
    heap_down(w, last->heap_index);
}

/* Room for one more connection in the heap, taken before the connection exists so that
 * setting a deadline never allocates (and never fails). */
static int heap_reserve(struct pier__worker *w) {
    if (w->heap_cap > w->nconns)
        return 0;
    size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
    struct pier__conn **h = realloc(w->heap, cap * sizeof *h);
    if (h == NULL)
        return -1;
    w->heap = h;
    w->heap_cap = cap;
    return 0;
}

static void on_deadline(uv_timer_t *t);

/* Have the timer fire by the heap's top deadline. A timer already due at or before it stays:
 * when it fires it finds what is due and is set again. */
static void deadline_timer_arm(struct pier__worker *w) {
    if (w->heap_len == 0)
        return;
    uint64_t due = w->heap[0]->deadline_ms;
    if (w->deadline_timer_ms != 0 && w->deadline_timer_ms <= due)
        return;
    uint64_t now = now_ms();
    uv_timer_start(&w->deadline_timer, on_deadline, due > now ? due - now : 0, 0);
    w->deadline_timer_ms = due;
}

/* Start timing phase `timer` from `since` (monotonic ms). */
static void conn_deadline(struct pier__conn *c, int timer, uint64_t since) {
    struct pier__worker *w = c->w;
    c->timer = (uint8_t)timer;
    c->since_ms = since;
    c->deadline_ms = since + timeout_ms(w->cfg, timer);
    if (c->heap_index == SIZE_MAX) {
        c->heap_index = w->heap_len;
        w->heap[w->heap_len++] = c;
        heap_up(w, c->heap_index);
    } else {
        heap_up(w, c->heap_index);
        heap_down(w, c->heap_index);
    }
    deadline_timer_arm(w);
}

/* A reload changed the worker's config: every deadline is recomputed from when its phase
 * began, and the heap rebuilt (O(n), once per reload). */
void pier__worker_config_changed(struct pier__worker *w) {
    for (size_t i = 0; i < w->heap_len; i++) {
        struct pier__conn *c = w->heap[i];
        c->deadline_ms = c->since_ms + timeout_ms(w->cfg, c->timer);
    }
    for (size_t i = w->heap_len / 2; i-- > 0;)
        heap_down(w, i);
    deadline_timer_arm(w);
}

/* Time the phase the session is in. A phase keeps its deadline while it lasts (dripping bytes
 * buys nothing); a new phase or a new request starts a new one. A pipelined request follows the
 * one before it in the same read, with no idle phase between: the count of answered requests
 * tells it apart, and its headers get their own header_ms from its own start. */
static void conn_track(struct pier__conn *c) {
    uint64_t start = pier_session_request_start(&c->s) / 1000000u;
    int new_request = c->seen_requests != c->s.nrequests;
    c->seen_requests = c->s.nrequests;
    switch (c->s.phase) {
    case PIER_PHASE_IDLE:
        if (c->timer != T_IDLE || new_request)
            conn_deadline(c, T_IDLE, now_ms());
        break;
    case PIER_PHASE_HEADERS:
        if (c->timer != T_HEADERS || new_request)
            conn_deadline(c, T_HEADERS, start ? start : now_ms());
        break;
    case PIER_PHASE_BODY:
        if (c->timer != T_BODY || new_request)
            conn_deadline(c, T_BODY, start ? start : now_ms());
        break;
    }
}

/* ---- closing --------------------------------------------------------------------------- */

static void conn_unlink(struct pier__conn *c) {
    struct pier__worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void on_closed(uv_handle_t *h) {
    struct pier__conn *c = conn_of(h);
    struct pier__worker *w = c->w;
    pier_session_reset(&c->s);
    free(c->tcp.data);
    free(c);
    w->nconns--;
    pier_counter_sub(&w->metrics.connections_active, 1);
    atomic_fetch_sub_explicit(&w->server->connections, 1, memory_order_relaxed);
    if (w->nconns == 0) {
        pier_env_flush_log(&w->env);
        uv_timer_stop(&w->deadline_timer); /* nothing is due any more */
        w->deadline_timer_ms = 0;
        pier__worker_maybe_finish(w);
    }
}

static void conn_close(struct pier__conn *c) {
    if (c->state == C_CLOSING)
        return;
    c->state = C_CLOSING;
    heap_remove(c);
    conn_unlink(c);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    struct pier__conn *c = req->data;
    free(req);
    if (c->state == C_CLOSING)
        return;
    if (status != 0) {
        conn_close(c);
        return;
    }
    c->state = C_LINGER;
    conn_deadline(c, T_LINGER, now_ms());
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn_resume(struct pier__conn *c);

/* The last response is out: stop sending, keep reading until the client closes. */
static void conn_finish(struct pier__conn *c) {
    uv_shutdown_t *req = malloc(sizeof *req);
    if (req == NULL || c->state == C_CLOSING) {
        free(req);
        conn_close(c);
        return;
    }
    req->data = c;
    c->state = C_SHUTDOWN;
    conn_deadline(c, T_LINGER, now_ms());
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        conn_close(c);
    }
}

/* ---- writing --------------------------------------------------------------------------- */

/* Describe `len` bytes as uv_buf_t pieces (their lengths are unsigned int). */
static unsigned split_bufs(char *data, size_t len, uv_buf_t *bufs) {
    unsigned n = 0;
    while (len > 0 && n < MAX_WRITE_BUFS) {
        size_t piece = len < WRITE_CHUNK ? len : WRITE_CHUNK;
        bufs[n++] = uv_buf_init(data, (unsigned)piece);
        data += piece;
        len -= piece;
    }
    return n;
}

static void on_written(uv_write_t *req, int status) {
    struct pier_write *wr = (struct pier_write *)req;
    struct pier__conn *c = wr->conn;
    free(wr);
    if (c->state == C_CLOSING)
        return;
    if (status != 0) {
        conn_close(c);
        return;
    }
    c->state = C_OPEN;
    if (c->close_after_write) {
        conn_finish(c);
        return;
    }
    conn_track(c);
    conn_resume(c);
}

/* Send what the session produced; then close, or go back to reading. */
static void conn_flush(struct pier__conn *c, int closing) {
    pier_buf_t *out = &c->w->env.out;
    uv_buf_t bufs[MAX_WRITE_BUFS];
    size_t off = 0;
    if (out->len > 0) {
        unsigned n = split_bufs(out->data, out->len, bufs);
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (r < 0 && r != UV_EAGAIN) {
            pier_buf_reset(out);
            conn_close(c);
            return;
        }
        off = r > 0 ? (size_t)r : 0;
    }
    if (off < out->len) {
        size_t rest = out->len - off;
        struct pier_write *wr = malloc(sizeof *wr + rest);
        if (wr == NULL) {
            pier_buf_reset(out);
            conn_close(c);
            return;
        }
        wr->conn = c;
        wr->len = rest;
        memcpy(wr->data, out->data + off, rest);
        pier_buf_reset(out);
        unsigned n = split_bufs(wr->data, rest, bufs);
        if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, bufs, n, on_written) != 0) {
            free(wr);
            conn_close(c);
            return;
        }
        c->state = C_WRITING;
        c->close_after_write = (uint8_t)closing;
        uv_read_stop((uv_stream_t *)&c->tcp);
        conn_deadline(c, T_WRITE, now_ms());
        return;
    }
    pier_buf_reset(out);
    pier_buf_shrink(out, 256 * 1024);
    if (closing) {
        conn_finish(c);
        return;
    }
    conn_track(c);
}

/* ---- reading --------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    struct pier__conn *c = conn_of(h);
    (void)suggested;
    buf->base = c->w->readbuf;
    buf->len = c->w->readbuf_size;
}

/* Keep what the session did not consume (PIER_FEED_PAUSE) and stop reading meanwhile. */
static int conn_hold(struct pier__conn *c, const char *data, size_t len) {
    struct pier_held *h = malloc(sizeof *h + len);
    if (h == NULL)
        return -1;
    h->len = len;
    h->off = 0;
    memcpy(h->data, data, len);
    c->tcp.data = h;
    uv_read_stop((uv_stream_t *)&c->tcp);
    return 0;
}

/* The responses are out: feed held input, and once there is none, read from the socket. */
static void conn_resume(struct pier__conn *c) {
    struct pier_held *h;
    while ((h = c->tcp.data) != NULL && c->state == C_OPEN) {
        int r = pier_session_feed(&c->s, h->data + h->off, h->len - h->off);
        h->off += c->w->env.fed;
        if (r != PIER_FEED_PAUSE || h->off >= h->len) {
            c->tcp.data = NULL;
            free(h);
        }
        conn_flush(c, r == PIER_FEED_CLOSE);
    }
    if (c->state == C_OPEN && c->tcp.data == NULL)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
    struct pier__conn *c = conn_of(stream);
    if (nread == 0)
        return;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (c->state == C_SHUTDOWN || c->state == C_LINGER || c->state == C_CLOSING)
        return; /* lingering: discard */
    int r = pier_session_feed(&c->s, buf->base, (size_t)nread);
    size_t fed = c->w->env.fed;
    if (r == PIER_FEED_PAUSE && conn_hold(c, buf->base + fed, (size_t)nread - fed) != 0)
        r = PIER_FEED_CLOSE; /* no memory to wait: answer what was parsed, then close */
    conn_flush(c, r == PIER_FEED_CLOSE);
    if (c->tcp.data != NULL && c->state == C_OPEN) /* written at once: go on */
        conn_resume(c);
}

/* ---- accepting ------------------------------------------------------------------------- */

/* Over max_connections: send the 503 and give the descriptor back at once. A lingering close
 * would hold it for up to LINGER_MS, and a flood of refused clients would then use up the
 * descriptors the limit is there to protect. What the client already sent is read first, so
 * the close is a FIN that lets the 503 arrive, not a reset that can destroy it. */
static void conn_refuse(struct pier__conn *c) {
    pier_buf_t *out = &c->w->env.out;
    uv_buf_t b = uv_buf_init(out->data, (unsigned)out->len); /* a 503: a few hundred bytes */
    uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    pier_buf_reset(out);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        for (int i = 0; i < 4; i++)
            if (recv(fd, c->w->readbuf, c->w->readbuf_size, MSG_DONTWAIT) <= 0)
                break;
        shutdown(fd, SHUT_WR);
    }
    conn_close(c);
}

static void fill_peer(struct pier__conn *c) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        c->s.peer.family = 4;
        c->s.peer.port = ntohs(in->sin_port);
        memcpy(c->s.peer.addr, &in->sin_addr, 4);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        c->s.peer.family = 6;
        c->s.peer.port = ntohs(in6->sin6_port);
        memcpy(c->s.peer.addr, &in6->sin6_addr, 16);
    }
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
    struct pier__server *srv = w->server;
    struct pier__conn *c = NULL;
    if (heap_reserve(w) != 0 || (c = calloc(1, sizeof *c)) == NULL) {
        accept_shed(w, fd, UV_ENOMEM);
        return -1;
    }
    c->w = w;
    c->heap_index = SIZE_MAX;
    if (is_unix)
        uv_pipe_init(&w->loop, &c->pipe, 0);
    else
        uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = NULL; /* no held input */
    int rc = is_unix ? uv_pipe_open(&c->pipe, fd) : uv_tcp_open(&c->tcp, fd);
    if (rc != 0) {
        uv_close((uv_handle_t *)&c->tcp, free_handle);
        accept_shed(w, fd, rc);
        return -1;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    pier_counter_add(&w->metrics.connections_active, 1);
    pier_counter_add(&w->metrics.connections_total, 1);
    int open = atomic_fetch_add_explicit(&srv->connections, 1, memory_order_relaxed) + 1;
    pier_session_init(&c->s, &w->env);
    if (is_unix) {
        c->s.peer.family = 1;
    } else {
        uv_tcp_nodelay(&c->tcp, 1);
        fill_peer(c);
    }
    if (open > atomic_load_explicit(&srv->max_connections, memory_order_relaxed)) {
        pier_session_overload(&c->s);
        conn_refuse(c);
        return 0;
    }
    conn_track(c);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    return 0;
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

/* ---- worker housekeeping --------------------------------------------------------------- */

/* The timer is due: handle every deadline that has passed, then set it to the next one. */
static void on_deadline(uv_timer_t *t) {
    struct pier__worker *w = t->data;
    uint64_t now = now_ms();
    w->deadline_timer_ms = 0;
    /* every branch takes c out of the heap or gives it a later deadline */
    while (w->heap_len > 0 && w->heap[0]->deadline_ms <= now) {
        struct pier__conn *c = w->heap[0];
        if (c->timer == T_HEADERS || c->timer == T_BODY) {
            heap_remove(c);
            pier_session_timeout(&c->s);
            conn_flush(c, 1);
        } else { /* idle, a client not reading, a linger that ran out */
            conn_close(c);
        }
    }
    deadline_timer_arm(w);
}

static void on_log_timer(uv_timer_t *t) {
    struct pier__worker *w = t->data;
    pier_env_flush_log(&w->env);
}

/* After each turn of the loop: access-log lines written into the batch are written out
 * LOG_FLUSH_MS later, together with whatever joins them meanwhile (one write(2) per batch). A
 * worker that logs nothing sets no timer. */
static void on_log_check(uv_check_t *h) {
    struct pier__worker *w = h->data;
    if (w->env.logbatch.len > 0 && !uv_is_active((uv_handle_t *)&w->log_timer))
        uv_timer_start(&w->log_timer, on_log_timer, LOG_FLUSH_MS, 0);
}

void pier__worker_timers_init(struct pier__worker *w) {
    uv_timer_init(&w->loop, &w->deadline_timer);
    w->deadline_timer.data = w;
    w->deadline_timer_ms = 0;
    uv_timer_init(&w->loop, &w->log_timer);
    w->log_timer.data = w;
    uv_check_init(&w->loop, &w->log_check);
    w->log_check.data = w;
    uv_check_start(&w->log_check, on_log_check);
    uv_timer_init(&w->loop, &w->accept_timer);
    w->accept_timer.data = w;
}

void pier__worker_timers_close(struct pier__worker *w, uv_close_cb done) {
    uv_close((uv_handle_t *)&w->deadline_timer, done);
    uv_close((uv_handle_t *)&w->log_timer, done);
    uv_close((uv_handle_t *)&w->log_check, done);
    uv_close((uv_handle_t *)&w->accept_timer, done);
}

unsigned pier__worker_close_all(struct pier__worker *w) {
    unsigned cut = 0;
    while (w->conns) {
        struct pier__conn *c = w->conns;
        if (c->timer != T_LINGER)
            cut++;
        conn_close(c);
    }
    return cut;
}
