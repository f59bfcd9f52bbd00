/* session — HTTP/1.1 over an in-memory byte stream; see include/pier/session.h.
 *
 * Each byte is walked once: a head by pier's parser (src/parse.c), a chunked body's framing by
 * llhttp (src/chunked.c); a Content-Length body is counted off. This file acts on what they find:
 * it builds the request view, enforces pier's own rules (Host, CONNECT, Expect, the body limit,
 * the target's form), routes, calls the handler and has the answer written (src/respond.c).
 * An early error marks the request RESPONDED and the connection CLOSE; the rest of the input
 * is then ignored.
 *
 * A head is parsed where it lies in the read buffer. Only when it spans reads, or when its
 * request's body does, is it copied into the request state (the read buffer is the worker's
 * and is reused by the next read).
 */
#include "pier/session.h"

#include <stdio.h>
#include <string.h>

#include "pier/clock.h"
#include "pier/router.h"
#include "request.h"

void pier_session_init(struct pier_session *s, struct pier_env *env) {
    memset(s, 0, sizeof *s);
    s->env = env;
    pier_parse_init(&s->parser);
    s->phase = PIER_PHASE_HEADERS;
}

void pier_session_reset(struct pier_session *s) {
    if (s->rq) {
        pier__reqstate_put(s->env, s->rq);
        s->rq = NULL;
    }
}

/* ---- the request view ------------------------------------------------------------------ */

/* RFC 9110 7.2: Host is uri-host [ ":" port ]: a reg-name, an IPv4 address or an IP literal
 * in brackets, so these characters and nothing else (empty is allowed: no authority). */
static int valid_host(struct pier_str v) {
    static const uint32_t ok[8] = {0, 0x2fff7ff2, 0xaffffffe, 0x47fffffe, 0, 0, 0, 0};
    for (size_t i = 0; i < v.n; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (!((ok[c >> 5] >> (c & 31)) & 1))
            return 0;
    }
    return 1;
}

static int valid_request_id(struct pier_str v) {
    if (v.n == 0 || v.n > PIER_REQUEST_ID_MAX)
        return 0;
    for (size_t i = 0; i < v.n; i++)
        if ((unsigned char)v.p[i] < 0x20 || (unsigned char)v.p[i] > 0x7e)
            return 0;
    return 1;
}

/* The path and query of the target; absolute-form loses its scheme and authority. */
static int split_target(struct pier_reqstate *rq) {
    struct pier_request *req = &rq->req;
    const char *t = req->target.p, *end = t + req->target.n;
    const char *q = rq->h.query ? rq->base + rq->h.query : NULL; /* after the '?' */
    const char *path = t;
    if (t[0] != '/') {
        const char *stop = q ? q - 1 : end;
        const char *sep = stop - t > 3 ? memmem(t, (size_t)(stop - t), "://", 3) : NULL;
        if (sep == NULL)
            return -1;
        path = memchr(sep + 3, '/', (size_t)(stop - sep - 3));
        if (path == NULL) { /* "http://host" means "/" */
            req->path = (struct pier_str){"/", 1};
            req->query = (struct pier_str){q ? q : "", q ? (size_t)(end - q) : 0};
            return 0;
        }
    }
    req->path.p = path;
    req->path.n = (size_t)((q ? q - 1 : end) - path);
    req->query = (struct pier_str){q ? q : "", q ? (size_t)(end - q) : 0};
    return 0;
}

/* Point the view at the head's bytes (they lie from rq->base). */
static void build_view(struct pier_session *s) {
    struct pier_reqstate *rq = s->rq;
    struct pier_request *req = &rq->req;
    const char *b = rq->base;
    for (uint32_t i = 0; i < rq->h.nfields; i++) {
        rq->views[i].name = (struct pier_str){b + rq->h.names[i].off, rq->h.names[i].len};
        rq->views[i].value = (struct pier_str){b + rq->h.values[i].off, rq->h.values[i].len};
    }
    req->method = s->parser.method;
    req->method_name = pier_method_name(s->parser.method);
    req->target = (struct pier_str){b + rq->h.target.off, rq->h.target.len};
    req->http_major = 1;
    req->http_minor = s->parser.minor;
    req->headers = rq->views;
    req->nheaders = rq->h.nfields;
    req->fields = rq->h.first;
    req->cfg = s->env->cfg;
    req->app = s->env->app;
}

/* The head must outlive the read buffer (its body goes on in a later read): copy it into the
 * request state and move every pointer of the view that points into it. */
static int keep_head(struct pier_reqstate *rq) {
    if (rq->base == rq->head.data)
        return 0;
    const char *old = rq->base;
    pier_buf_reset(&rq->head);
    if (pier_buf_append(&rq->head, old, rq->head_len) != 0)
        return -1;
    const char *now = rq->head.data;
#define MOVE(str)                                                                                  \
    if ((str).p >= old && (str).p < old + rq->head_len)                                            \
    (str).p = now + ((str).p - old)
    struct pier_request *req = &rq->req;
    MOVE(req->target);
    MOVE(req->path);
    MOVE(req->route_path);
    MOVE(req->query);
    MOVE(req->request_id);
    for (size_t i = 0; i < req->nparams; i++)
        MOVE(req->params[i].value);
    for (size_t i = 0; i < req->nheaders; i++) { /* the views built so far (none before on_head) */
        MOVE(rq->views[i].name);
        MOVE(rq->views[i].value);
    }
#undef MOVE
    rq->base = now;
    return 0;
}

/* Match the request's path (below the prefix) against the route table. */
static void route_request(struct pier_session *s) {
    struct pier_reqstate *rq = s->rq;
    struct pier_request *req = &rq->req;
    const struct pier_config *cfg = s->env->cfg;
    struct pier_str path = req->path;
    if (cfg->prefix_len) {
        if (path.n < cfg->prefix_len || memcmp(path.p, cfg->prefix, cfg->prefix_len) != 0 ||
            (path.n > cfg->prefix_len && path.p[cfg->prefix_len] != '/')) {
            rq->route = PIER_ROUTE_NONE;
            return;
        }
        path.p += cfg->prefix_len;
        path.n -= cfg->prefix_len;
    }
    if (path.n == 0)
        path.p = "/", path.n = 1;
    req->route_path = path;
    rq->route = pier_router_match(pier_routes, pier_routes_count, req->method, path,
                                  cfg->metrics_enabled ? 0 : PIER_ROUTE_METRICS, req->params,
                                  &req->nparams, rq->allow, sizeof rq->allow);
    if (rq->route >= 0 && (pier_routes[rq->route].flags & PIER_ROUTE_BODY))
        s->flags |= PIER_S_KEEP_BODY;
}

/* Does the route want its body in a media type this request does not declare? (415) */
static int body_type_refused(const struct pier_request *req, int route) {
    const char *type = route >= 0 ? pier_routes[route].body_type : NULL;
    return type && !pier_request_content_type_is(req, type);
}

static void dispatch(struct pier_session *s, struct pier_response *res) {
    struct pier_reqstate *rq = s->rq;
    struct pier_request *req = &rq->req;
    if (req->method == PIER_M_OPTIONS) {
        int star = req->target.n == 1 && req->target.p[0] == '*';
        if (star || rq->route == PIER_ROUTE_WRONG_METHOD) {
            pier_response_begin(res, 204, NULL);
            if (star)
                memcpy(res->allow, "GET, HEAD, POST, OPTIONS", sizeof "GET, HEAD, POST, OPTIONS");
            else
                memcpy(res->allow, rq->allow, sizeof res->allow);
            return;
        }
    }
    if (rq->route == PIER_ROUTE_NONE) {
        pier_response_error(res, 404, "no such route");
        return;
    }
    if (rq->route == PIER_ROUTE_WRONG_METHOD) {
        pier_response_error(res, 405, "method not allowed for this route");
        memcpy(res->allow, rq->allow, sizeof res->allow);
        return;
    }
    if (body_type_refused(req, rq->route)) {
        char msg[128];
        snprintf(msg, sizeof msg, "send the body as Content-Type: %s",
                 pier_routes[rq->route].body_type);
        pier_response_error(res, 415, msg);
        return;
    }
    req->body.p = rq->body.data ? rq->body.data : "";
    req->body.n = rq->body.len;
    /* The config now in force: a reload while the body arrived may have retired (and the
     * server freed) the one the headers were read under. */
    req->cfg = s->env->cfg;
    pier_routes[rq->route].handler(req, res);
    if (res->body->oom) { /* the handler's answer was cut short: not sent */
        pier_response_error(res, 503, "out of memory: the answer could not be built");
        res->retry_after = 1;
        s->flags |= PIER_S_CLOSE;
    }
}

/* ---- the request's life ------------------------------------------------------------------ */

#define FAIL(s, status, msg, reason) (pier__fail((s), (status), (msg), (reason)), -1)
/* Out of memory for the request's bytes: it cannot be read whole, so 503 and close, never a
 * truncated head or body passed on. */
#define NOT_KEPT(s)                                                                                \
    FAIL((s), 503, "out of memory: the request could not be kept", PIER_BAD_OVERLOAD)

/* Body bytes, counted against limits.max_body_bytes and kept when the route reads them. */
static int on_body(void *ctx, const char *at, size_t len) {
    struct pier_session *s = ctx;
    struct pier_reqstate *rq = s->rq;
    rq->body_bytes += len;
    if (rq->body_bytes > (uint64_t)s->env->cfg->max_body_bytes)
        return FAIL(s, 413, "request body exceeds limits.max_body_bytes", PIER_BAD_BODY_TOO_LARGE);
    if ((s->flags & PIER_S_KEEP_BODY) && pier_buf_append(&rq->body, at, len) != 0)
        return NOT_KEPT(s);
    return 0;
}

/* The head is in: check what pier itself requires, route, and invite or refuse the body.
 * Returns -1 when the request was answered (and the connection is to close). */
static int on_head(struct pier_session *s) {
    struct pier_reqstate *rq = s->rq;
    struct pier_env *env = s->env;
    struct pier_request *req = &rq->req;
    struct pier_parser *ps = &s->parser;
    const struct pier_head *h = &rq->h;

    s->phase = PIER_PHASE_BODY;
    build_view(s);
    struct pier_str v;
    if (pier_request_field(req, PIER_F_REQUEST_ID, &v) && valid_request_id(v))
        req->request_id = v;
    if (ps->method == PIER_M_CONNECT)
        return FAIL(s, 501, "CONNECT is not supported", PIER_BAD_NOT_IMPLEMENTED);
    /* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host (HTTP/1.0 may have none), and
     * no request has two; either way, or with a value that is no host, the answer is 400 */
    unsigned nhost = h->count[PIER_F_HOST];
    if (nhost > 1)
        return FAIL(s, 400, "more than one Host header", PIER_BAD_MALFORMED);
    if (nhost == 0 && ps->minor >= 1)
        return FAIL(s, 400, "no Host header (an HTTP/1.1 request must have one)",
                    PIER_BAD_MALFORMED);
    if (nhost == 1 && (pier_request_field(req, PIER_F_HOST, &v), !valid_host(v)))
        return FAIL(s, 400, "invalid Host header", PIER_BAD_MALFORMED);
    int options_star = ps->method == PIER_M_OPTIONS && req->target.n == 1 && *req->target.p == '*';
    if (!options_star && split_target(rq) != 0)
        return FAIL(s, 400, "invalid request target", PIER_BAD_MALFORMED);
    int chunked = (ps->flags & PIER_P_CHUNKED) != 0;
    uint64_t length = (ps->flags & PIER_P_LENGTH) ? ps->left : 0;
    if (length > (uint64_t)env->cfg->max_body_bytes)
        return FAIL(s, 413, "request body exceeds limits.max_body_bytes", PIER_BAD_BODY_TOO_LARGE);
    int expect_continue = 0;
    if (pier_request_field(req, PIER_F_EXPECT, &v)) {
        if (!pier_str_ieq(v, "100-continue"))
            return FAIL(s, 417, "only the expectation 100-continue is supported",
                        PIER_BAD_EXPECTATION);
        /* RFC 9110 10.1.1: an HTTP/1.0 client's 100-continue is ignored */
        expect_continue = ps->minor >= 1 && (chunked || length > 0);
    }

    /* route now, so a body nobody reads is counted but not kept */
    if (!options_star)
        route_request(s);

    /* 100 Continue invites the body: only when it will be read. Any other answer (404, 405,
     * 415, a route that takes no body) is known now, so it goes at once, instead of the 100,
     * and the connection closes: the client then never sends a body that would be thrown
     * away (RFC 9110 10.1.1). */
    if (chunked)
        pier_chunked_begin(&rq->chunked, (uint32_t)env->cfg->max_header_bytes,
                           (uint64_t)env->cfg->max_body_bytes, on_body, s);
    if (expect_continue) {
        if ((s->flags & PIER_S_KEEP_BODY) && !body_type_refused(req, rq->route)) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (pier_buf_append(&env->out, cont, sizeof cont - 1) == 0)
                return 0;
            return NOT_KEPT(s);
        }
        struct pier_response res = {.body = &env->body};
        dispatch(s, &res);
        pier__emit(s, &res, 1, req->method == PIER_M_HEAD);
        s->flags |= PIER_S_RESPONDED | PIER_S_CLOSE;
        return -1;
    }
    return 0;
}

/* The message is complete: answer it. Returns 1 when the connection is to close. */
static int on_message_complete(struct pier_session *s) {
    struct pier_env *env = s->env;
    int closing = 0;
    struct pier_response res = {.body = &env->body};
    dispatch(s, &res);
    closing = (s->flags & PIER_S_CLOSE) || !(s->parser.flags & PIER_P_KEEP_ALIVE) ||
              (s->parser.flags & PIER_P_UPGRADE) ||
              atomic_load_explicit(&env->app->lifecycle, memory_order_relaxed) == PIER_DRAINING ||
              atomic_load_explicit(&env->app->close_connections, memory_order_relaxed);
    pier__emit(s, &res, closing, s->rq->req.method == PIER_M_HEAD);
    if (closing)
        s->flags |= PIER_S_CLOSE;
    /* the request is over: its state goes back to the pool */
    s->nrequests++;
    pier__reqstate_put(env, s->rq);
    s->rq = NULL;
    s->flags &= PIER_S_CLOSE;
    s->phase = PIER_PHASE_IDLE;
    pier_buf_shrink(&env->body, PIER_KEEP_BUF_BYTES);
    return closing;
}

static enum pier_bad_reason reason_of(int status) {
    switch (status) {
    case 413:
        return PIER_BAD_BODY_TOO_LARGE;
    case 414:
    case 431:
        return PIER_BAD_HEADER_TOO_LARGE;
    case 501:
    case 505:
        return PIER_BAD_NOT_IMPLEMENTED;
    default:
        return PIER_BAD_MALFORMED;
    }
}

/* Bytes of a head that began in an earlier read: append them after what was kept (at most
 * what takes the head one byte past the limit, which the parser then refuses). */
static size_t continue_head(struct pier_session *s, const char *p, const char *end) {
    struct pier_reqstate *rq = s->rq;
    size_t limit = (size_t)s->env->cfg->max_header_bytes + 1;
    size_t n = (size_t)(end - p);
    if (rq->head.len + n > limit)
        n = limit > rq->head.len ? limit - rq->head.len : 0;
    if (pier_buf_append(&rq->head, p, n) != 0)
        return (size_t)-1;
    rq->base = rq->head.data;
    return n;
}

int pier_session_feed(struct pier_session *s, const char *data, size_t len) {
    struct pier_env *env = s->env;
    const char *p = data, *end = data + len;
    uint32_t max_head = (uint32_t)env->cfg->max_header_bytes;
    env->fed = len;
    if (s->flags & PIER_S_CLOSE)
        return PIER_FEED_CLOSE;
    while (!(s->flags & PIER_S_CLOSE)) {
        struct pier_reqstate *rq = s->rq;
        struct pier_parse_out o;
        const char *from = p, *to = end;
        size_t kept = 0, added = 0;
        if (rq && s->phase == PIER_PHASE_HEADERS && rq->head.len) { /* a head from before */
            kept = rq->head.len;
            if ((added = continue_head(s, p, end)) == (size_t)-1) {
                (void)NOT_KEPT(s);
                break;
            }
            from = rq->base + kept;
            to = from + added;
        }
        int ev = rq && s->phase == PIER_PHASE_BODY && (s->parser.flags & PIER_P_CHUNKED)
                     ? pier_chunked_feed(&rq->chunked, p, end, &o)
                     : pier_parse(&s->parser, rq ? &rq->h : NULL, rq ? rq->base : NULL, from, to,
                                  max_head, &o);
        switch (ev) {
        case PIER_PARSE_MORE:
            if (rq && s->phase == PIER_PHASE_HEADERS && !kept && to > rq->base) {
                /* the head goes on in the next read: keep what came */
                rq->head_len = (uint32_t)(to - rq->base);
                if (keep_head(rq) != 0)
                    (void)NOT_KEPT(s);
            } else if (rq && s->phase == PIER_PHASE_BODY && keep_head(rq) != 0) {
                (void)NOT_KEPT(s);
            }
            return (s->flags & PIER_S_CLOSE) ? PIER_FEED_CLOSE : PIER_FEED_OK;
        case PIER_PARSE_BEGIN:
            if ((rq = s->rq = pier__reqstate_get(env)) == NULL) {
                (void)NOT_KEPT(s);
                break;
            }
            rq->start_ns = pier_now_ns();
            rq->base = o.stop;
            s->phase = PIER_PHASE_HEADERS;
            p = o.stop;
            continue;
        case PIER_PARSE_HEAD:
            rq->head_len = (uint32_t)(o.stop - rq->base);
            p = kept ? p + (size_t)(o.stop - from) : o.stop;
            if (kept)
                rq->head.len = rq->head_len; /* drop the bytes that were not the head's */
            if (on_head(s) != 0)
                break;
            continue;
        case PIER_PARSE_BODY:
            p = o.stop;
            if (on_body(s, o.data, (size_t)(o.stop - o.data)) != 0)
                break;
            continue;
        case PIER_PARSE_DONE:
            p = o.stop;
            pier_parse_body_done(&s->parser);
            if (on_message_complete(s))
                break;
            if (env->out.len >= PIER_OUT_HIGH_WATER && p < end) { /* let the writes catch up */
                env->fed = (size_t)(p - data);
                return PIER_FEED_PAUSE;
            }
            continue;
        default: /* PIER_PARSE_ERROR */
            if (s->rq == NULL && (s->rq = pier__reqstate_get(env)) == NULL) {
                s->flags |= PIER_S_CLOSE;
                break;
            }
            if (!(s->flags & PIER_S_RESPONDED))
                pier__fail(s, o.status, o.why, reason_of(o.status));
            break;
        }
    }
    return PIER_FEED_CLOSE;
}

int pier_session_timeout(struct pier_session *s) {
    /* no request under way (idle, or not one byte of one yet): nothing to answer; nginx too
     * closes a connection that never sent a request without a word */
    if (s->phase == PIER_PHASE_IDLE || s->rq == NULL || (s->flags & PIER_S_CLOSE))
        return 1;
    int in_body = s->phase == PIER_PHASE_BODY;
    pier__fail(s, 408,
               in_body ? "the request was not received within timeouts.request_ms"
                       : "the request headers were not received within timeouts.header_ms",
               in_body ? PIER_BAD_REQUEST_TIMEOUT : PIER_BAD_HEADER_TIMEOUT);
    return 1;
}

void pier_session_overload(struct pier_session *s) {
    pier__fail(s, 503, "too many connections; retry later", PIER_BAD_OVERLOAD);
}

uint64_t pier_session_request_start(const struct pier_session *s) {
    return s->rq ? s->rq->start_ns : 0;
}
