/* conn — one connection (TCP, or listen.unix) on a worker loop: reading, writing, deadlines,
 * closing. Accepting is src/accept.c.
 *
 * All connections of a worker read into its one read buffer and the session consumes the bytes
 * before the callback returns, so an idle connection holds no buffer. The responses one read
 * produced leave in one uv_try_write; what the kernel does not take waits in a write request
 * while reading pauses. Once 256 KiB of responses are queued the session stops at a request
 * boundary (PIER_FEED_PAUSE) and the rest of the input is held until they are written.
 *
 * Deadlines are absolute (the phase's start plus its timeout) in a min-heap per worker, with
 * one timer at the nearest: a worker with only idle connections sleeps until then. A closing
 * connection shuts down its sending side and reads (discarding) for a short linger, so a client
 * still sending a refused body reads the error instead of a reset.
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

#define LINGER_MS      2000
#define LOG_FLUSH_MS   100        /* access-log lines wait at most this long for their write */
#define WRITE_CHUNK    (1u << 30) /* uv_buf_t lengths are unsigned int: write in 1 GiB pieces */
#define MAX_WRITE_BUFS 8          /* 8 GiB: more than limits.max_body_bytes can produce */

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

/* A write or the shutdown of c has completed: 1 when c is closing (now, if it failed). */
static int conn_gone(struct pier__conn *c, int status) {
    if (c->state == C_CLOSING)
        return 1;
    if (status != 0)
        conn_close(c);
    return status != 0;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    struct pier__conn *c = req->data;
    free(req);
    if (conn_gone(c, status))
        return;
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
    if (conn_gone(c, status))
        return;
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

/* ---- opening ---------------------------------------------------------------------------- */

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

/* Make the accepted `fd` a connection on worker w: 0, or a libuv error (nothing is left
 * open but fd, which the caller closes). Past max_connections it gets its 503 and closes. */
int pier__conn_open(struct pier__worker *w, int fd, int is_unix) {
    struct pier__server *srv = w->server;
    struct pier__conn *c = NULL;
    if (heap_reserve(w) != 0 || (c = calloc(1, sizeof *c)) == NULL)
        return UV_ENOMEM;
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
        return rc;
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

static void worker_handle_closed(uv_handle_t *h) {
    (void)h;
}

/* A draining worker with no connection and no listener left closes its handles, and its loop
 * then ends. Here, with the connections, so that closing one never calls back into server.c. */
void pier__worker_maybe_finish(struct pier__worker *w) {
    if (!w->draining || w->stopping || w->nconns > 0 || w->listener || w->unix_listener)
        return;
    w->stopping = 1;
    pier__worker_timers_close(w, worker_handle_closed);
    uv_close((uv_handle_t *)&w->wake, worker_handle_closed);
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
