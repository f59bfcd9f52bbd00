/* respond — the response writer: every answer pier gives goes through pier__emit.
 *
 * One place writes the status line, Date, Content-Type, Content-Length, X-Request-Id and
 * Connection, counts the request in the metrics and writes the access-log line. The head is
 * written into room reserved once, from pieces whose lengths are known at compile time.
 */
#include <arpa/inet.h>
#include <string.h>

#include "pier/clock.h"
#include "pier/fmt.h"
#include "pier/log.h"
#include "pier/router.h"
#include "request.h"

/* xorshift128+: request ids need to be unique, not secret; seeded from getrandom(2). */
static uint64_t env_rand(struct pier_env *env) {
    uint64_t s1 = env->rng[0];
    const uint64_t s0 = env->rng[1];
    env->rng[0] = s0;
    s1 ^= s1 << 23;
    env->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return env->rng[1] + s0;
}

static struct pier_str request_id(struct pier_session *s) {
    struct pier_reqstate *rq = s->rq;
    if (rq && rq->req.request_id.n)
        return rq->req.request_id;
    char *out = rq ? rq->rid : s->env->rid_fallback;
    pier_fmt_hex64(out, env_rand(s->env));
    pier_fmt_hex64(out + 16, env_rand(s->env));
    out[32] = '\0';
    struct pier_str id = {out, 32};
    if (rq)
        rq->req.request_id = id;
    return id;
}

/* "a.b.c.d:port", "[v6]:port" or "unix" at out (64 bytes); IPv4 by hand, as it is what a
 * proxy in front sends */
static char *format_peer(const struct pier_peer *p, char *out) {
    if (p->family == 1)
        return pier_fmt_lit(out, "unix");
    if (p->family == 4) {
        for (int i = 0; i < 4; i++) {
            out = pier_fmt_u64(out, p->addr[i]);
            *out++ = i < 3 ? '.' : ':';
        }
    } else if (p->family == 6) {
        *out++ = '[';
        if (inet_ntop(AF_INET6, p->addr, out, INET6_ADDRSTRLEN) != NULL)
            out += strlen(out);
        out = pier_fmt_lit(out, "]:");
    } else {
        return pier_fmt_lit(out, "-");
    }
    return pier_fmt_u64(out, p->port);
}

/* The status line and the name of the header that always follows it, per status. */
static struct pier_str status_head(int status) {
#define LINE(code, text)                                                                           \
    case code:                                                                                     \
        return (struct pier_str){"HTTP/1.1 " #code " " text "\r\nDate: ",                          \
                                 sizeof("HTTP/1.1 " #code " " text "\r\nDate: ") - 1};
    switch (status) {
        PIER_STATUSES(LINE)
    default:
        return status_head(500);
    }
#undef LINE
}

#define LOG_PATH_MAX 1024 /* bytes of a path an access line shows */

/* The method and path the access line shows: the routed request's, or for a request refused
 * after its request line, its method and its target up to any '?'. */
static void logged_request(struct pier_session *s, struct pier_str *method, struct pier_str *path) {
    struct pier_reqstate *rq = s->rq;
    *method = (struct pier_str){"-", 1};
    *path = (struct pier_str){"-", 1};
    if (rq && rq->req.method_name) {
        *method = (struct pier_str){rq->req.method_name, strlen(rq->req.method_name)}; /* <12 */
        *path = rq->req.path;
    } else if (rq && rq->h.target.len && s->parser.method != PIER_METHOD_UNKNOWN) {
        const char *t = rq->base + rq->h.target.off;
        const char *q = memchr(t, '?', rq->h.target.len);
        const char *name = pier_method_name(s->parser.method);
        *method = (struct pier_str){name, strlen(name)};
        *path = (struct pier_str){t, q ? (size_t)(q - t) : rq->h.target.len};
    }
    if (path->n > LOG_PATH_MAX)
        path->n = LOG_PATH_MAX;
}

/* The access line, JSON: written straight into the batch from fixed pieces, with the same
 * fields in the same order as pier_log_* would write them. */
static void log_request_json(struct pier_session *s, int status, uint64_t bytes, uint64_t dur,
                             struct pier_str rid) {
    struct pier_str method, path;
    logged_request(s, &method, &path);
    pier_buf_t *b = &s->env->logbatch;
    if (pier_buf_reserve(b, 320 + 6 * (path.n + rid.n)) != 0)
        return;
    char *o = b->data + b->len;
    o = pier_fmt_lit(o, "{\"ts\":\"");
    o = pier_log_timestamp(o);
    o = pier_fmt_lit(o, "\",\"level\":\"info\",\"msg\":\"request\",\"method\":\"");
    o = pier_fmt_mem(o, method.p, method.n); /* a name from the method table */
    o = pier_fmt_lit(o, "\",\"path\":\"");
    o = pier_fmt_json_chars(o, path.p, path.n);
    o = pier_fmt_lit(o, "\",\"status\":");
    o = pier_fmt_u64(o, (uint64_t)status);
    o = pier_fmt_lit(o, ",\"bytes\":");
    o = pier_fmt_u64(o, bytes);
    o = pier_fmt_lit(o, ",\"duration_us\":");
    o = pier_fmt_u64(o, dur / 1000);
    o = pier_fmt_lit(o, ",\"remote\":\"");
    o = format_peer(&s->peer, o);
    o = pier_fmt_lit(o, "\",\"request_id\":\"");
    o = pier_fmt_json_chars(o, rid.p, rid.n);
    o = pier_fmt_lit(o, "\"}\n");
    b->len = (size_t)(o - b->data);
}

/* The access line in the text format, through the general log writer. */
static void log_request_text(struct pier_session *s, int status, uint64_t bytes, uint64_t dur,
                             struct pier_str rid) {
    struct pier_str method, path;
    logged_request(s, &method, &path);
    char peer[64];
    struct pier_logline l;
    pier_log_begin(&l, PIER_LOG_INFO, "request");
    pier_log_strn(&l, "method", method.p, method.n);
    pier_log_strn(&l, "path", path.p, path.n);
    pier_log_int(&l, "status", status);
    pier_log_int(&l, "bytes", (int64_t)bytes);
    pier_log_int(&l, "duration_us", (int64_t)(dur / 1000));
    pier_log_strn(&l, "remote", peer, (size_t)(format_peer(&s->peer, peer) - peer));
    pier_log_strn(&l, "request_id", rid.p, rid.n);
    pier_log_end_batch(&l, &s->env->logbatch);
}

/* Room for every literal of the head plus three numbers of 20 digits; the variable parts are
 * added to it. */
#define EMIT_FIXED_ROOM 320
#define PUT(p, lit)     ((p) = pier_fmt_mem((p), (lit), sizeof(lit) - 1))

void pier__emit(struct pier_session *s, struct pier_response *res, int closing, int head_only) {
    struct pier_env *env = s->env;
    pier_buf_t *o = &env->out;
    struct pier_reqstate *rq = s->rq;
    int status = res->status;

    time_t now = time(NULL);
    if (now != env->date_sec) {
        pier_http_date(now, env->date);
        env->date_sec = now;
    }
    struct pier_str rid = request_id(s);
    struct pier_str line = status_head(status);
    size_t ctype_n = res->content_type_len;
    size_t allow_n = strnlen(res->allow, sizeof res->allow);
    size_t body_n = head_only ? 0 : res->body->len;
    if (pier_buf_reserve(o, EMIT_FIXED_ROOM + line.n + ctype_n + rid.n + allow_n + body_n) != 0) {
        s->flags |= PIER_S_CLOSE; /* out of memory: no answer, close the connection */
        goto count;
    }
    char *p = pier_fmt_mem(o->data + o->len, line.p, line.n);
    p = pier_fmt_mem(p, env->date, 29);
    if (res->content_type) {
        PUT(p, "\r\nContent-Type: ");
        p = pier_fmt_mem(p, res->content_type, ctype_n);
    }
    if (status != 204 && status >= 200) {
        PUT(p, "\r\nContent-Length: ");
        p = pier_fmt_u64(p, res->body->len);
    }
    PUT(p, "\r\nX-Request-Id: ");
    p = pier_fmt_mem(p, rid.p, rid.n);
    if (allow_n) {
        PUT(p, "\r\nAllow: ");
        p = pier_fmt_mem(p, res->allow, allow_n);
    }
    if (res->retry_after) {
        PUT(p, "\r\nRetry-After: ");
        p = pier_fmt_u64(p, res->retry_after);
    }
    if (res->no_store)
        PUT(p, "\r\nCache-Control: no-store");
    if (closing)
        PUT(p, "\r\nConnection: close\r\n\r\n");
    else if (s->parser.minor == 0)
        PUT(p, "\r\nConnection: keep-alive\r\n\r\n");
    else
        PUT(p, "\r\n\r\n");
    p = pier_fmt_mem(p, res->body->data, body_n);
    o->len = (size_t)(p - o->data);

count:;
    uint64_t dur = rq && rq->start_ns ? pier_now_ns() - rq->start_ns : 0;
    int route = rq && rq->route >= 0 ? rq->route : PIER_METRIC_ROUTES - 1;
    int midx = pier_metrics_method_index(rq && rq->h.target.len ? s->parser.method : -1);
    pier_metrics_observe(env->metrics, route, midx, status, dur);
    if (env->cfg->log_access && pier_log_enabled(PIER_LOG_INFO)) {
        uint64_t bytes = head_only ? 0 : res->body->len;
        if (pier_log_format() == PIER_LOG_FORMAT_JSON)
            log_request_json(s, status, bytes, dur, rid);
        else
            log_request_text(s, status, bytes, dur, rid);
        if (env->logbatch.len > 32 * 1024)
            pier_env_flush_log(env);
    }
}

void pier__fail(struct pier_session *s, int status, const char *message,
                enum pier_bad_reason reason) {
    struct pier_response res = {.body = &s->env->body};
    pier_response_error(&res, status, message);
    if (status == 503)
        res.retry_after = 1;
    if (reason < PIER_BAD_REASONS)
        pier_counter_add(&s->env->metrics->bad[reason], 1);
    struct pier_reqstate *rq = s->rq;
    pier__emit(s, &res, 1, rq && rq->req.method == PIER_M_HEAD && rq->req.method_name);
    s->flags |= PIER_S_RESPONDED | PIER_S_CLOSE;
}
