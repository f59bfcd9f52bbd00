/* conn — one connection (TCP, or the Unix socket of listen.unix) on a worker loop: socket,
 * timeouts, writes, closing.
 *
 * Reading: every connection of a worker reads into the worker's one read buffer, and the
 * session consumes the bytes before the callback returns, so an idle connection holds no
 * buffer at all. Writing: the responses a read produced (several, when pipelined) leave in
 * one uv_try_write; only what the kernel does not take is copied into a write request the
 * connection owns until it drains, and reading pauses meanwhile (backpressure).
 *
 * Timeouts: instead of a timer per connection, each connection sits in one of the worker's
 * queues by phase — idle, headers, body, write, linger — each with one duration, so a queue
 * is in deadline order and the worker's tick only looks at the heads. A connection moves
 * between queues as its session changes phase.
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
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "pier/log.h"
#include "pier/server.h"

#define LINGER_MS 2000
#define TICK_MS   100

enum conn_state { C_OPEN, C_WRITING, C_SHUTDOWN, C_LINGER, C_CLOSING };

struct pier_write {
    uv_write_t req;
    struct pier_conn *conn;
    size_t len;
    char data[];
};

struct pier_conn {
    union {             /* first: the connection is found from its handle (conn_of) */
        uv_tcp_t tcp;   /* accepted on the TCP listener */
        uv_pipe_t pipe; /* accepted on the Unix socket (listen.unix); used as a stream like tcp */
    };
    struct pier_session s;
    struct pier_worker *w;
    struct pier_conn *prev, *next;
    uint64_t deadline_ms;
    uint32_t seen_requests;
    uint8_t list;
    uint8_t state;
    uint8_t close_after_write;
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
static struct pier_conn *conn_of(void *handle) {
    _Static_assert(offsetof(struct pier_conn, tcp) == 0, "tcp must come first");
    return (struct pier_conn *)handle;
}

static uint64_t now_ms(void) {
    return pier_now_ns() / 1000000u;
}

/* ---- queues ---------------------------------------------------------------------------- */

static void queue_remove(struct pier_conn *c) {
    if (c->list == PIER_L_NONE)
        return;
    struct pier_conn_queue *q = &c->w->lists[c->list];
    if (c->prev)
        c->prev->next = c->next;
    else
        q->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        q->tail = c->prev;
    c->prev = c->next = NULL;
    c->list = PIER_L_NONE;
}

static void queue_push(struct pier_conn *c, int list, uint64_t deadline) {
    queue_remove(c);
    struct pier_conn_queue *q = &c->w->lists[list];
    c->list = (uint8_t)list;
    c->deadline_ms = deadline;
    c->prev = q->tail;
    c->next = NULL;
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
}

/* Put the connection in the queue its session's phase calls for. */
static void conn_track(struct pier_conn *c) {
    const struct pier_config *cfg = c->w->cfg;
    switch (c->s.phase) {
    case PIER_PHASE_IDLE:
        if (c->list != PIER_L_IDLE || c->seen_requests != c->s.nrequests)
            queue_push(c, PIER_L_IDLE, now_ms() + (uint64_t)cfg->idle_ms);
        break;
    case PIER_PHASE_HEADERS:
        if (c->list != PIER_L_HEADERS) {
            uint64_t start = pier_session_request_start(&c->s) / 1000000u;
            int64_t limit = cfg->header_ms < cfg->request_ms ? cfg->header_ms : cfg->request_ms;
            queue_push(c, PIER_L_HEADERS, (start ? start : now_ms()) + (uint64_t)limit);
        }
        break;
    case PIER_PHASE_BODY:
        if (c->list != PIER_L_BODY) {
            uint64_t start = pier_session_request_start(&c->s) / 1000000u;
            queue_push(c, PIER_L_BODY, (start ? start : now_ms()) + (uint64_t)cfg->request_ms);
        }
        break;
    }
    c->seen_requests = c->s.nrequests;
}

/* ---- closing --------------------------------------------------------------------------- */

static void on_closed(uv_handle_t *h) {
    struct pier_conn *c = conn_of(h);
    struct pier_worker *w = c->w;
    pier_session_reset(&c->s);
    free(c->tcp.data);
    free(c);
    w->nconns--;
    pier_counter_sub(&w->metrics.connections_active, 1);
    atomic_fetch_sub_explicit(&w->server->connections, 1, memory_order_relaxed);
    if (w->nconns == 0) {
        pier_env_flush_log(&w->env);
        uv_timer_stop(&w->tick);
        pier_worker_maybe_finish(w);
    }
}

static void conn_close(struct pier_conn *c) {
    if (c->state == C_CLOSING)
        return;
    c->state = C_CLOSING;
    queue_remove(c);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    struct pier_conn *c = req->data;
    free(req);
    if (c->state == C_CLOSING)
        return;
    if (status != 0) {
        conn_close(c);
        return;
    }
    c->state = C_LINGER;
    queue_push(c, PIER_L_LINGER, now_ms() + LINGER_MS);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn_resume(struct pier_conn *c);

/* The last response is out: stop sending, keep reading until the client closes. */
static void conn_finish(struct pier_conn *c) {
    uv_shutdown_t *req = malloc(sizeof *req);
    if (req == NULL || c->state == C_CLOSING) {
        free(req);
        conn_close(c);
        return;
    }
    req->data = c;
    c->state = C_SHUTDOWN;
    queue_push(c, PIER_L_LINGER, now_ms() + LINGER_MS);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        conn_close(c);
    }
}

/* ---- writing --------------------------------------------------------------------------- */

static void on_written(uv_write_t *req, int status) {
    struct pier_write *wr = (struct pier_write *)req;
    struct pier_conn *c = wr->conn;
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
static void conn_flush(struct pier_conn *c, int closing) {
    pier_buf_t *out = &c->w->env.out;
    size_t off = 0;
    if (out->len > 0) {
        uv_buf_t b = uv_buf_init(out->data, (unsigned)out->len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n < 0 && n != UV_EAGAIN) {
            pier_buf_reset(out);
            conn_close(c);
            return;
        }
        off = n > 0 ? (size_t)n : 0;
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
        uv_buf_t b = uv_buf_init(wr->data, (unsigned)rest);
        if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
            free(wr);
            conn_close(c);
            return;
        }
        c->state = C_WRITING;
        c->close_after_write = (uint8_t)closing;
        uv_read_stop((uv_stream_t *)&c->tcp);
        queue_push(c, PIER_L_WRITE, now_ms() + (uint64_t)c->w->cfg->request_ms);
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
    struct pier_conn *c = conn_of(h);
    (void)suggested;
    buf->base = c->w->readbuf;
    buf->len = c->w->readbuf_size;
}

/* Keep what the session did not consume (PIER_FEED_PAUSE) and stop reading meanwhile. */
static int conn_hold(struct pier_conn *c, const char *data, size_t len) {
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
static void conn_resume(struct pier_conn *c) {
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
    struct pier_conn *c = conn_of(stream);
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
 * descriptors the limit is there to protect (accept fails with EMFILE and libuv resets
 * connections). What the client already sent is read first, so the close is a FIN that lets
 * the 503 arrive, not a reset that can destroy it. */
static void conn_refuse(struct pier_conn *c) {
    pier_buf_t *out = &c->w->env.out;
    uv_buf_t b = uv_buf_init(out->data, (unsigned)out->len);
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

static void fill_peer(struct pier_conn *c) {
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

static void on_connection(uv_stream_t *listener, int status) {
    struct pier_worker *w = listener->data;
    struct pier_server *srv = w->server;
    if (status != 0) {
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_WARN, "accept failed");
        pier_log_str(&l, "error", uv_strerror(status));
        pier_log_end(&l);
        return;
    }
    struct pier_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return; /* the connection stays in the backlog; libuv retries on the next event */
    c->w = w;
    int is_unix = listener->type == UV_NAMED_PIPE;
    if (is_unix)
        uv_pipe_init(&w->loop, &c->pipe, 0);
    else
        uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = NULL; /* no held input */
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, free_handle);
        return;
    }
    w->nconns++;
    pier_counter_add(&w->metrics.connections_active, 1);
    pier_counter_add(&w->metrics.connections_total, 1);
    int open = atomic_fetch_add_explicit(&srv->connections, 1, memory_order_relaxed) + 1;
    if (w->nconns == 1)
        uv_timer_start(&w->tick, pier_worker_tick, TICK_MS, TICK_MS);
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
        return;
    }
    conn_track(c);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_listener_closed(uv_handle_t *h) {
    struct pier_worker *w = h->data;
    free(h);
    pier_worker_maybe_finish(w);
}

int pier_worker_start_listening(struct pier_worker *w, int fd) {
    uv_tcp_t *l = malloc(sizeof *l);
    if (l == NULL)
        return UV_ENOMEM;
    uv_tcp_init(&w->loop, l);
    l->data = w;
    int rc = uv_tcp_open(l, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)l, 511, on_connection);
    if (rc != 0) {
        uv_close((uv_handle_t *)l, free_handle);
        return rc;
    }
    if (w->listener) /* a reload moved us: the new socket listens before the old one closes */
        uv_close((uv_handle_t *)w->listener, on_listener_closed);
    w->listener = l;
    return 0;
}

int pier_worker_start_listening_unix(struct pier_worker *w, int fd) {
    uv_pipe_t *l = malloc(sizeof *l);
    if (l == NULL)
        return UV_ENOMEM;
    uv_pipe_init(&w->loop, l, 0);
    l->data = w;
    int rc = uv_pipe_open(l, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)l, 511, on_connection);
    if (rc != 0) {
        uv_close((uv_handle_t *)l, free_handle);
        return rc;
    }
    w->unix_listener = l;
    return 0;
}

void pier_worker_close_listener(struct pier_worker *w) {
    if (w->listener) {
        uv_close((uv_handle_t *)w->listener, on_listener_closed);
        w->listener = NULL;
    }
    if (w->unix_listener) {
        uv_close((uv_handle_t *)w->unix_listener, on_listener_closed);
        w->unix_listener = NULL;
    }
}

/* ---- worker housekeeping --------------------------------------------------------------- */

static void expire(struct pier_worker *w, int list, uint64_t now, int ordered) {
    struct pier_conn *c = w->lists[list].head;
    while (c) {
        struct pier_conn *next = c->next;
        if (c->deadline_ms > now) {
            if (ordered)
                break;
            c = next;
            continue;
        }
        switch (list) {
        case PIER_L_HEADERS:
        case PIER_L_BODY:
            pier_session_timeout(&c->s);
            conn_flush(c, 1);
            break;
        default: /* idle, a client not reading, a linger that ran out */
            conn_close(c);
            break;
        }
        c = next;
    }
}

void pier_worker_tick(uv_timer_t *handle) {
    struct pier_worker *w = handle->data;
    uint64_t now = now_ms();
    expire(w, PIER_L_IDLE, now, 1);
    expire(w, PIER_L_HEADERS, now, 1);
    expire(w, PIER_L_BODY, now, 0);
    expire(w, PIER_L_WRITE, now, 1);
    expire(w, PIER_L_LINGER, now, 1);
    pier_env_flush_log(&w->env);
}

unsigned pier_worker_close_all(struct pier_worker *w) {
    unsigned cut = 0;
    for (int l = PIER_L_IDLE; l < PIER_L_COUNT; l++) {
        struct pier_conn *c = w->lists[l].head;
        while (c) {
            struct pier_conn *next = c->next;
            if (l != PIER_L_LINGER)
                cut++;
            conn_close(c);
            c = next;
        }
    }
    return cut;
}
