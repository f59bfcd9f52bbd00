/* session — HTTP/1.1 over an in-memory byte stream; see include/pier/session.h.
 *
 * llhttp sets no leniency flag, so Content-Length with Transfer-Encoding and duplicate
 * lengths are parse errors. But llhttp as built here (and as distributions ship it) is not
 * compiled in its strict mode, and even that accepts obs-fold, some bare LFs, empty header
 * names and chunk data not followed by CRLF: shapes a front proxy may frame differently. So
 * the session re-reads the line structure of every request head and chunked body itself
 * (the framing check below) and rejects what RFC 9112 forbids. On top of that it enforces
 * pier's own limits and rules: header bytes, header count, body size (from Content-Length
 * before any body byte is read, or as a chunked body grows), CONNECT, transfer codings other
 * than chunked, Transfer-Encoding in HTTP/1.0, Expect.
 *
 * Every answer goes through emit(): one place writes the status line, Date, Content-Length,
 * X-Request-Id and Connection headers, counts the request in the metrics and writes the
 * access-log line. An early error marks the request RESPONDED and the connection CLOSE; the
 * parser is then paused and the rest of the input is ignored.
 */
#include "pier/session.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "pier/log.h"
#include "pier/router.h"

#define POOL_MAX       64
#define KEEP_BUF_BYTES (64 * 1024) /* request buffers bigger than this are not pooled */

struct hdr_span {
    uint32_t name_off, name_len, value_off, value_len;
};

struct pier_reqstate {
    struct pier_reqstate *next;
    pier_buf_t head; /* the target, then header names and values, copied */
    pier_buf_t body;
    uint32_t url_len;
    uint32_t field_off, value_off;
    uint32_t nhdr;
    uint32_t trailer_bytes;
    uint32_t head_bytes;   /* request line and header bytes as sent, counted by scan() */
    uint32_t method_bytes; /* method bytes llhttp reported in earlier feeds */
    uint64_t body_bytes;
    uint64_t start_ns;
    int route;
    struct hdr_span spans[PIER_MAX_HEADERS];
    struct pier_header views[PIER_MAX_HEADERS];
    struct pier_request req;
    char rid[33];
    char allow[80];
};

/* ---- environment --------------------------------------------------------------------- */

void pier_env_init(struct pier_env *env, const struct pier_config *cfg, struct pier_app *app,
                   struct pier_metrics *metrics) {
    memset(env, 0, sizeof *env);
    env->cfg = cfg;
    env->app = app;
    env->metrics = metrics;
    pier_buf_init(&env->out);
    pier_buf_init(&env->body);
    pier_buf_init(&env->logbatch);
    if (getrandom(env->rng, sizeof env->rng, 0) != (ssize_t)sizeof env->rng) {
        env->rng[0] = (uint64_t)pier_now_ns() ^ (uint64_t)(uintptr_t)env;
        env->rng[1] = 0x9e3779b97f4a7c15u ^ (uint64_t)time(NULL);
    }
    env->rng[0] |= 1;
    env->date_sec = -1;
}

static void reqstate_free(struct pier_reqstate *rq) {
    pier_buf_free(&rq->head);
    pier_buf_free(&rq->body);
    free(rq);
}

void pier_env_destroy(struct pier_env *env) {
    pier_env_flush_log(env);
    while (env->pool) {
        struct pier_reqstate *rq = env->pool;
        env->pool = rq->next;
        reqstate_free(rq);
    }
    pier_buf_free(&env->out);
    pier_buf_free(&env->body);
    pier_buf_free(&env->logbatch);
}

void pier_env_flush_log(struct pier_env *env) {
    pier_log_flush_batch(&env->logbatch);
}

/* xorshift128+: request ids need to be unique, not secret; seeded from getrandom(2). */
static uint64_t env_rand(struct pier_env *env) {
    uint64_t s1 = env->rng[0];
    const uint64_t s0 = env->rng[1];
    env->rng[0] = s0;
    s1 ^= s1 << 23;
    env->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return env->rng[1] + s0;
}

static struct pier_reqstate *reqstate_get(struct pier_env *env) {
    struct pier_reqstate *rq = env->pool;
    if (rq) {
        env->pool = rq->next;
        env->pool_len--;
    } else {
        rq = calloc(1, sizeof *rq);
        if (rq == NULL)
            return NULL;
        pier_buf_init(&rq->head);
        pier_buf_init(&rq->body);
    }
    pier_buf_reset(&rq->head);
    pier_buf_reset(&rq->body);
    rq->url_len = rq->field_off = rq->value_off = rq->nhdr = rq->trailer_bytes = 0;
    rq->head_bytes = rq->method_bytes = 0;
    rq->body_bytes = 0;
    rq->route = PIER_ROUTE_NONE;
    rq->rid[0] = '\0';
    rq->allow[0] = '\0';
    memset(&rq->req, 0, sizeof rq->req);
    rq->next = NULL;
    return rq;
}

static void reqstate_put(struct pier_env *env, struct pier_reqstate *rq) {
    pier_buf_shrink(&rq->head, KEEP_BUF_BYTES);
    pier_buf_shrink(&rq->body, KEEP_BUF_BYTES);
    if (env->pool_len >= POOL_MAX) {
        reqstate_free(rq);
        return;
    }
    rq->next = env->pool;
    env->pool = rq;
    env->pool_len++;
}

/* ---- responses ----------------------------------------------------------------------- */

static void format_peer(const struct pier_peer *p, char *out, size_t size) {
    char ip[INET6_ADDRSTRLEN] = "-";
    if (p->family == 1) {
        snprintf(out, size, "unix");
        return;
    }
    if (p->family == 4)
        inet_ntop(AF_INET, p->addr, ip, sizeof ip);
    else if (p->family == 6)
        inet_ntop(AF_INET6, p->addr, ip, sizeof ip);
    if (p->family == 6)
        snprintf(out, size, "[%s]:%u", ip, p->port);
    else
        snprintf(out, size, "%s:%u", ip, p->port);
}

static struct pier_str request_id(struct pier_session *s) {
    struct pier_reqstate *rq = s->rq;
    if (rq && rq->req.request_id.n)
        return rq->req.request_id;
    char *out = rq ? rq->rid : s->env->rid_fallback;
    static const char hex[] = "0123456789abcdef";
    uint64_t a = env_rand(s->env), b = env_rand(s->env);
    for (int i = 0; i < 16; i++) {
        out[i] = hex[(a >> (i * 4)) & 15];
        out[16 + i] = hex[(b >> (i * 4)) & 15];
    }
    out[32] = '\0';
    struct pier_str id = {out, 32};
    if (rq)
        rq->req.request_id = id;
    return id;
}

/* emit()'s writers: the caller reserved the room. EMIT_FIXED_ROOM covers every literal of
 * the head plus three numbers of 20 digits; the variable parts are added to it. */
#define EMIT_FIXED_ROOM 320
#define PUT(p, lit)     (memcpy((p), (lit), sizeof(lit) - 1), (p) += sizeof(lit) - 1)

static char *put_mem(char *p, const void *src, size_t n) {
    if (n)
        memcpy(p, src, n);
    return p + n;
}

static char *put_u64(char *p, uint64_t v) {
    char tmp[20];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return put_mem(p, tmp + i, sizeof tmp - i);
}

/* Serialize `res` into env->out, then count and log the request. */
static void emit(struct pier_session *s, struct pier_response *res, int closing, int head_only) {
    struct pier_env *env = s->env;
    pier_buf_t *o = &env->out;
    struct pier_reqstate *rq = s->rq;
    int status = res->status;

    time_t now = time(NULL);
    if (now != env->date_sec) {
        pier_http_date(now, env->date);
        env->date_sec = now;
    }
    /* The head is written straight into room reserved once: one bounds check per response
     * instead of one per piece. */
    struct pier_str rid = request_id(s);
    const char *reason = pier_status_text(status);
    size_t reason_n = strlen(reason);
    size_t ctype_n = res->content_type ? strlen(res->content_type) : 0;
    size_t allow_n = strnlen(res->allow, sizeof res->allow);
    size_t body_n = head_only ? 0 : res->body->len;
    if (pier_buf_reserve(o, EMIT_FIXED_ROOM + reason_n + ctype_n + rid.n + allow_n + body_n) != 0) {
        s->flags |= PIER_S_CLOSE; /* out of memory: no answer, close the connection */
        goto count;
    }
    char *p = o->data + o->len;
    PUT(p, "HTTP/1.1 ");
    p = put_u64(p, (uint64_t)status);
    *p++ = ' ';
    p = put_mem(p, reason, reason_n);
    PUT(p, "\r\nDate: ");
    p = put_mem(p, env->date, 29);
    if (res->content_type) {
        PUT(p, "\r\nContent-Type: ");
        p = put_mem(p, res->content_type, ctype_n);
    }
    if (status != 204 && status >= 200) {
        PUT(p, "\r\nContent-Length: ");
        p = put_u64(p, res->body->len);
    }
    PUT(p, "\r\nX-Request-Id: ");
    p = put_mem(p, rid.p, rid.n);
    if (allow_n) {
        PUT(p, "\r\nAllow: ");
        p = put_mem(p, res->allow, allow_n);
    }
    if (res->retry_after) {
        PUT(p, "\r\nRetry-After: ");
        p = put_u64(p, res->retry_after);
    }
    if (res->no_store)
        PUT(p, "\r\nCache-Control: no-store");
    if (closing)
        PUT(p, "\r\nConnection: close\r\n\r\n");
    else if (s->parser.http_major == 1 && s->parser.http_minor == 0)
        PUT(p, "\r\nConnection: keep-alive\r\n\r\n");
    else
        PUT(p, "\r\n\r\n");
    p = put_mem(p, res->body->data, body_n);
    o->len = (size_t)(p - o->data);

count:;
    /* count and log */
    uint64_t now_ns = pier_now_ns();
    uint64_t dur = rq && rq->start_ns ? now_ns - rq->start_ns : 0;
    int route = rq && rq->route >= 0 ? rq->route : PIER_METRIC_ROUTES - 1;
    int midx =
        pier_metrics_method_index(rq && (s->flags & PIER_S_IN_MESSAGE) ? s->parser.method : -1);
    pier_metrics_observe(env->metrics, route, midx, status, dur);

    if (env->cfg->log_access && pier_log_enabled(PIER_LOG_INFO)) {
        struct pier_logline l;
        pier_log_begin(&l, PIER_LOG_INFO, "request");
        if (rq && rq->req.method_name) {
            pier_log_str(&l, "method", rq->req.method_name);
            pier_log_strn(&l, "path", rq->req.path.p, rq->req.path.n);
        } else if (rq && (s->flags & PIER_S_IN_MESSAGE)) {
            pier_log_str(&l, "method", llhttp_method_name((llhttp_method_t)s->parser.method));
            size_t n = rq->url_len;
            const char *q = memchr(rq->head.data ? rq->head.data : "", '?', n);
            pier_log_strn(&l, "path", rq->head.data ? rq->head.data : "",
                          q ? (size_t)(q - rq->head.data) : n);
        } else {
            pier_log_str(&l, "method", "-");
            pier_log_str(&l, "path", "-");
        }
        pier_log_int(&l, "status", status);
        pier_log_int(&l, "bytes", head_only ? 0 : (int64_t)res->body->len);
        pier_log_int(&l, "duration_us", (int64_t)(dur / 1000));
        if (s->peer_text_len == 0) {
            format_peer(&s->peer, s->peer_text, sizeof s->peer_text);
            s->peer_text_len = (uint8_t)strlen(s->peer_text);
        }
        pier_log_strn(&l, "remote", s->peer_text, s->peer_text_len);
        pier_log_strn(&l, "request_id", rid.p, rid.n);
        pier_log_end_batch(&l, &env->logbatch);
        if (env->logbatch.len > 32 * 1024)
            pier_env_flush_log(env);
    }
}

/* Answer the current request with an error and close the connection afterwards. */
static void fail(struct pier_session *s, int status, const char *message,
                 enum pier_bad_reason reason) {
    struct pier_response res = {.body = &s->env->body};
    pier_response_error(&res, status, message);
    if (status == 503)
        res.retry_after = 1;
    if (reason < PIER_BAD_REASONS)
        pier_counter_add(&s->env->metrics->bad[reason], 1);
    emit(s, &res, 1, s->rq && s->rq->req.method == HTTP_HEAD && s->rq->req.method_name);
    s->flags |= PIER_S_RESPONDED | PIER_S_CLOSE;
}

/* Copy request bytes into one of the request's buffers. Out of memory the request cannot be
 * read whole: 503 and close, never a truncated head or body passed on. Returns 0 or
 * HPE_PAUSED. */
static int keep_bytes(struct pier_session *s, pier_buf_t *b, const char *at, size_t len) {
    if (pier_buf_append(b, at, len) == 0)
        return 0;
    fail(s, 503, "out of memory: the request could not be kept", PIER_BAD_OVERLOAD);
    return HPE_PAUSED;
}

/* ---- framing check -------------------------------------------------------------------- */

/* scan() walks the bytes llhttp parses, from the request target to the end of the head, and
 * through a chunked body's framing (chunk data itself is skipped: llhttp hands it to on_body),
 * and checks the line structure RFC 9112 requires: every line ends in CRLF (no bare CR or
 * LF), no field line starts with whitespace (obs-fold), field names are tokens, no control
 * bytes but HTAB, and chunk data is followed by CRLF. It runs lazily: at on_headers_complete
 * (up to the end of the head), at on_body and on_message_complete of a chunked request, and
 * at the end of each feed; its state between feeds is one byte in the session. */
enum scan_state {
    SC_OFF,       /* not checking: between requests, or in a Content-Length body */
    SC_LINE,      /* the request line after the target, or a field value */
    SC_LF,        /* CR at the end of a line: LF must follow */
    SC_BOL,       /* start of a field line, or of the empty line that ends the section */
    SC_NAME,      /* a field name, up to ':' */
    SC_END_LF,    /* CR of the empty line: LF ends the head (or the trailers) */
    SC_SIZE0,     /* a chunk size line: first hex digit */
    SC_SIZE,      /* more hex digits, ';' or CR */
    SC_EXT,       /* chunk extension, up to CR (llhttp checks its grammar) */
    SC_SIZE_LF,   /* CR after the chunk size line: LF must follow */
    SC_DATA_WAIT, /* chunk data follows; on_body reports it */
    SC_DATA,      /* chunk data seen: CR LF must follow when it ends */
    SC_DATA_LF,   /* CR after chunk data: LF must follow */
};
#define SC_STATE   0x0f
#define SC_TRAILER 0x10 /* the field lines are trailers: the empty line ends the message */
#define SC_ZERO    0x20 /* the chunk size read so far is all zeros: the last chunk */

enum { SCAN_MORE, SCAN_WAIT, SCAN_HEAD_END, SCAN_MSG_END, SCAN_BAD };

static int is_tchar(unsigned char c) {
    /* RFC 9110 token: ALPHA DIGIT ! # $ % & ' * + - . ^ _ ` | ~ */
    static const uint32_t map[8] = {0, 0x03ff6cfa, 0xc7fffffe, 0x57ffffff, 0, 0, 0, 0};
    return (map[c >> 5] >> (c & 31)) & 1;
}

static int is_hex(unsigned char c) {
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* Check from s->env->scan_at up to `end`. Stops after the end of a head (SCAN_HEAD_END), of a
 * chunked message (SCAN_MSG_END), or before chunk data (SCAN_WAIT); *why says what is wrong
 * when it returns SCAN_BAD. */
static int scan(struct pier_session *s, const char *end, const char **why) {
    const char *p = s->env->scan_at;
    unsigned st = s->scan & SC_STATE, fl = s->scan & ~SC_STATE & 0xffu;
    int rc = SCAN_MORE;
    int in_head = st != SC_OFF && st < SC_SIZE0 && !(fl & SC_TRAILER);
    unsigned char c = 0;
    for (; p < end; p++) {
        c = (unsigned char)*p;
        switch (st) {
        case SC_LINE:
            if (c == '\r')
                st = SC_LF;
            else if ((c < 0x20 && c != '\t') || c == 0x7f)
                goto bad_byte;
            break;
        case SC_NAME:
            if (c == ':')
                st = SC_LINE;
            else if (!is_tchar(c))
                goto bad_name;
            break;
        case SC_LF:
        case SC_SIZE_LF:
        case SC_DATA_LF:
        case SC_END_LF:
            if (c != '\n') {
                *why = "bare CR";
                goto bad;
            }
            if (st == SC_LF) {
                st = SC_BOL;
            } else if (st == SC_DATA_LF) {
                st = SC_SIZE0;
            } else if (st == SC_SIZE_LF && !(fl & SC_ZERO)) {
                st = SC_DATA_WAIT;
                p++;
                rc = SCAN_WAIT;
                goto out;
            } else if (st == SC_SIZE_LF) { /* the last chunk: trailers follow */
                st = SC_BOL;
                fl = SC_TRAILER;
            } else { /* the empty line: the head or the trailers are over */
                rc = (fl & SC_TRAILER) ? SCAN_MSG_END : SCAN_HEAD_END;
                st = SC_OFF;
                fl = 0;
                p++;
                goto out;
            }
            break;
        case SC_BOL:
            if (c == '\r') {
                st = SC_END_LF;
            } else if (c == ' ' || c == '\t') {
                *why = "obs-fold (a header line starting with whitespace)";
                goto bad;
            } else if (is_tchar(c)) {
                st = SC_NAME;
            } else {
                goto bad_name;
            }
            break;
        case SC_SIZE0:
        case SC_SIZE:
            if (is_hex(c)) {
                if (st == SC_SIZE0)
                    fl |= SC_ZERO;
                if (c != '0')
                    fl &= ~(unsigned)SC_ZERO;
                st = SC_SIZE;
            } else if (st == SC_SIZE && c == ';') {
                st = SC_EXT;
            } else if (st == SC_SIZE && c == '\r') {
                st = SC_SIZE_LF;
            } else {
                *why = "invalid chunk size";
                goto bad;
            }
            break;
        case SC_EXT:
            if (c == '\r') {
                st = SC_SIZE_LF;
            } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
                goto bad_byte;
            } else if (s->rq && ++s->rq->trailer_bytes > (uint64_t)s->env->cfg->max_header_bytes) {
                /* extensions are parsed and dropped: bound them like trailers */
                *why = "chunk extensions exceed limits.max_header_bytes";
                goto bad;
            }
            break;
        case SC_DATA:
            if (c != '\r') {
                *why = "chunk data not followed by CRLF";
                goto bad;
            }
            st = SC_DATA_LF;
            break;
        case SC_DATA_WAIT: /* bytes where llhttp saw no chunk data: the caller decides */
            rc = SCAN_WAIT;
            goto out;
        default:
            goto out;
        }
    }
out:
    if (in_head && s->rq) /* a call that starts in the head ends with it at the latest */
        s->rq->head_bytes += (uint32_t)(p - s->env->scan_at);
    s->env->scan_at = p;
    s->scan = (uint8_t)(st | fl);
    return rc;
bad_byte:
    *why = c == '\n' ? "bare LF" : "control character";
    goto bad;
bad_name:
    *why = c == '\n' ? "bare LF" : "invalid character in a header name";
bad:
    s->env->scan_at = p;
    s->scan = SC_OFF;
    return SCAN_BAD;
}

/* Answer 400 for a framing error found by scan(). Returns HPE_PAUSED for callbacks. */
static int framing_error(struct pier_session *s, const char *why) {
    s->scan = SC_OFF;
    if (s->flags & PIER_S_RESPONDED)
        return HPE_PAUSED;
    char msg[128];
    snprintf(msg, sizeof msg, "malformed request: %s", why ? why : "inconsistent framing");
    fail(s, 400, msg, PIER_BAD_MALFORMED);
    return HPE_PAUSED;
}

/* The head went past limits.max_header_bytes: 414 while still in the request line (the
 * target is what is too long, as nginx answers when a request line outgrows its buffer),
 * 431 once header fields have started. */
static void head_too_large(struct pier_session *s, const char *why_fields) {
    if (!(s->flags & PIER_S_IN_FIELDS))
        fail(s, 414, "request line exceeds limits.max_header_bytes", PIER_BAD_HEADER_TOO_LARGE);
    else
        fail(s, 431, why_fields, PIER_BAD_HEADER_TOO_LARGE);
}

/* Past limits.max_header_bytes, counting every byte of the request line and the headers as
 * sent (whitespace llhttp skips included)? Then 414 or 431. */
static int head_bytes_over(struct pier_session *s) {
    if (s->rq == NULL || s->rq->head_bytes <= (uint64_t)s->env->cfg->max_header_bytes)
        return 0;
    head_too_large(s, "request line and headers exceed limits.max_header_bytes");
    return 1;
}

/* ---- request assembly ---------------------------------------------------------------- */

static struct pier_session *of(llhttp_t *p) {
    return (struct pier_session *)p->data;
}

static int head_too_big(struct pier_session *s) {
    struct pier_reqstate *rq = s->rq;
    size_t used = rq->head.len + 4u * rq->nhdr + 16u;
    if (used <= (size_t)s->env->cfg->max_header_bytes)
        return 0;
    head_too_large(s, "request line and headers exceed limits.max_header_bytes");
    return 1;
}

static int on_message_begin(llhttp_t *p) {
    struct pier_session *s = of(p);
    if (s->rq == NULL && (s->rq = reqstate_get(s->env)) == NULL) {
        fail(s, 503, "out of memory", PIER_BAD_OVERLOAD);
        return HPE_PAUSED;
    }
    s->rq->start_ns = pier_now_ns();
    s->flags = (uint16_t)((s->flags & PIER_S_CLOSE) | PIER_S_IN_MESSAGE);
    s->phase = PIER_PHASE_HEADERS;
    return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t len) {
    (void)at;
    of(p)->rq->method_bytes += (uint32_t)len;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
    struct pier_session *s = of(p);
    if (s->rq->head.len == 0) { /* the target's first bytes: check the head from here */
        s->scan = SC_LINE;
        s->env->scan_at = at;
    }
    if (keep_bytes(s, &s->rq->head, at, len) != 0)
        return HPE_PAUSED;
    return head_too_big(s) ? HPE_PAUSED : 0;
}

static int on_url_complete(llhttp_t *p) {
    struct pier_session *s = of(p);
    s->rq->url_len = (uint32_t)s->rq->head.len;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
    struct pier_session *s = of(p);
    struct pier_reqstate *rq = s->rq;
    if (s->phase == PIER_PHASE_BODY) { /* trailer fields: counted, not kept */
        rq->trailer_bytes += (uint32_t)len;
        goto trailer;
    }
    if (!(s->flags & PIER_S_IN_FIELD)) {
        _Static_assert(PIER_MAX_HEADERS == 64, "the message below names the limit");
        if (rq->nhdr >= PIER_MAX_HEADERS) { /* this field would be one too many */
            s->flags |= PIER_S_IN_FIELDS;
            head_too_large(s, "more than 64 header fields");
            return HPE_PAUSED;
        }
        s->flags |= PIER_S_IN_FIELD | PIER_S_IN_FIELDS;
        rq->field_off = (uint32_t)rq->head.len;
    }
    if (keep_bytes(s, &rq->head, at, len) != 0)
        return HPE_PAUSED;
    return head_too_big(s) ? HPE_PAUSED : 0;
trailer:
    if (rq->trailer_bytes > (uint64_t)s->env->cfg->max_header_bytes) {
        fail(s, 431, "trailer fields exceed limits.max_header_bytes", PIER_BAD_HEADER_TOO_LARGE);
        return HPE_PAUSED;
    }
    return 0;
}

static int on_header_field_complete(llhttp_t *p) {
    struct pier_session *s = of(p);
    s->flags &= (uint16_t)~PIER_S_IN_FIELD;
    if (s->phase != PIER_PHASE_BODY)
        s->rq->value_off = (uint32_t)s->rq->head.len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
    struct pier_session *s = of(p);
    struct pier_reqstate *rq = s->rq;
    if (s->phase == PIER_PHASE_BODY) {
        rq->trailer_bytes += (uint32_t)len;
        if (rq->trailer_bytes > (uint64_t)s->env->cfg->max_header_bytes) {
            fail(s, 431, "trailer fields exceed limits.max_header_bytes",
                 PIER_BAD_HEADER_TOO_LARGE);
            return HPE_PAUSED;
        }
        return 0;
    }
    if (keep_bytes(s, &rq->head, at, len) != 0)
        return HPE_PAUSED;
    return head_too_big(s) ? HPE_PAUSED : 0;
}

static int on_header_value_complete(llhttp_t *p) {
    struct pier_session *s = of(p);
    struct pier_reqstate *rq = s->rq;
    if (s->phase == PIER_PHASE_BODY)
        return 0;
    struct hdr_span *h = &rq->spans[rq->nhdr++];
    h->name_off = rq->field_off;
    h->name_len = rq->value_off - rq->field_off;
    h->value_off = rq->value_off;
    uint32_t end = (uint32_t)rq->head.len;
    while (end > h->value_off && (rq->head.data[end - 1] == ' ' || rq->head.data[end - 1] == '\t'))
        end--;
    h->value_len = end - h->value_off;
    return head_too_big(s) ? HPE_PAUSED : 0;
}

/* Split the request target into path and query; absolute-form loses its authority. */
static int split_target(struct pier_request *req) {
    const char *t = req->target.p;
    size_t n = req->target.n;
    const char *path = t;
    if (n == 0)
        return -1;
    if (t[0] != '/') {
        const char *sep = n > 3 ? memmem(t, n, "://", 3) : NULL;
        if (sep == NULL)
            return -1;
        const char *auth = sep + 3;
        path = memchr(auth, '/', n - (size_t)(auth - t));
        if (path == NULL) { /* "http://host" means "/" */
            req->path.p = "/";
            req->path.n = 1;
            req->query.p = "";
            req->query.n = 0;
            return 0;
        }
    }
    size_t rest = n - (size_t)(path - t);
    const char *q = memchr(path, '?', rest);
    req->path.p = path;
    req->path.n = q ? (size_t)(q - path) : rest;
    req->query.p = q ? q + 1 : "";
    req->query.n = q ? rest - req->path.n - 1 : 0;
    return 0;
}

static int valid_request_id(struct pier_str v) {
    if (v.n == 0 || v.n > PIER_REQUEST_ID_MAX)
        return 0;
    for (size_t i = 0; i < v.n; i++)
        if ((unsigned char)v.p[i] < 0x20 || (unsigned char)v.p[i] > 0x7e)
            return 0;
    return 1;
}

static void dispatch(struct pier_session *s, struct pier_response *res);

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
    rq->route = pier_router_match(pier_routes, pier_routes_count, req->method_name, path,
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

/* RFC 9110 7.2: Host is uri-host [ ":" port ]: a reg-name, an IPv4 address or an IP literal
 * in brackets, so these characters and nothing else (empty is allowed: no authority). */
static int valid_host(struct pier_str v) {
    for (size_t i = 0; i < v.n; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("-._~!$&'()*+,;=:[]%", c)))
            return 0;
    }
    return 1;
}

/* llhttp also knows RTSP's methods (DESCRIBE … FLUSH) and takes them in RTSP/ request lines;
 * to HTTP, and so to pier, they are methods like any token it does not implement: 501. Told by
 * the method llhttp stored, not by the words of its error. */
static int is_rtsp_method(int method) {
    return method >= HTTP_DESCRIBE && method <= HTTP_FLUSH;
}

static int on_headers_complete(llhttp_t *p) {
    struct pier_session *s = of(p);
    struct pier_reqstate *rq = s->rq;
    struct pier_env *env = s->env;
    const struct pier_config *cfg = env->cfg;
    struct pier_request *req = &rq->req;

    s->phase = PIER_PHASE_BODY;
    for (uint32_t i = 0; i < rq->nhdr; i++) {
        rq->views[i].name.p = rq->head.data + rq->spans[i].name_off;
        rq->views[i].name.n = rq->spans[i].name_len;
        rq->views[i].value.p = rq->head.data + rq->spans[i].value_off;
        rq->views[i].value.n = rq->spans[i].value_len;
    }
    req->method = p->method;
    req->method_name = llhttp_method_name((llhttp_method_t)p->method);
    req->target.p = rq->head.data ? rq->head.data : "";
    req->target.n = rq->url_len;
    req->http_major = p->http_major;
    req->http_minor = p->http_minor;
    req->headers = rq->views;
    req->nheaders = rq->nhdr;
    req->cfg = cfg;
    req->app = env->app;

    struct pier_str v;
    if (pier_request_header(req, "X-Request-Id", &v) && valid_request_id(v))
        req->request_id = v;

    const char *why = NULL;
    if (scan(s, s->env->scan_end, &why) != SCAN_HEAD_END)
        return framing_error(s, why);
    if (head_bytes_over(s))
        return HPE_PAUSED;
    if (p->flags & F_CHUNKED)
        s->scan = SC_SIZE0;

    if (p->method == HTTP_CONNECT) {
        fail(s, 501, "CONNECT is not supported", PIER_BAD_NOT_IMPLEMENTED);
        return HPE_PAUSED;
    }
    if (is_rtsp_method(p->method)) { /* a whole RTSP request line */
        fail(s, 501, "unknown method", PIER_BAD_NOT_IMPLEMENTED);
        return HPE_PAUSED;
    }
    if (p->http_major != 1) {
        fail(s, 505, "only HTTP/1.0 and HTTP/1.1 are supported", PIER_BAD_NOT_IMPLEMENTED);
        return HPE_PAUSED;
    }
    /* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host (HTTP/1.0 may have none), and
     * no request has two; either way, or with a value that is no host, the answer is 400 */
    struct pier_str host = {NULL, 0};
    unsigned nhost = 0;
    for (size_t i = 0; i < req->nheaders; i++)
        if (pier_str_ieq(req->headers[i].name, "Host"))
            host = req->headers[i].value, nhost++;
    if (nhost > 1 || (nhost == 0 && p->http_minor >= 1) || (nhost == 1 && !valid_host(host))) {
        fail(s, 400,
             nhost > 1    ? "more than one Host header"
             : nhost == 0 ? "no Host header (an HTTP/1.1 request must have one)"
                          : "invalid Host header",
             PIER_BAD_MALFORMED);
        return HPE_PAUSED;
    }
    if (pier_request_header(req, "Transfer-Encoding", &v) && !pier_str_ieq(v, "chunked")) {
        fail(s, 501, "only the chunked transfer coding is supported", PIER_BAD_NOT_IMPLEMENTED);
        return HPE_PAUSED;
    }
    if (p->http_minor == 0 && pier_request_header(req, "Transfer-Encoding", &v)) {
        /* RFC 9112 6.1: HTTP/1.0 framing with a transfer coding is faulty */
        fail(s, 400, "Transfer-Encoding is not allowed in an HTTP/1.0 request", PIER_BAD_MALFORMED);
        return HPE_PAUSED;
    }
    /* RFC 9112 3.2: the request target has no fragment; a client strips it before sending */
    if (memchr(req->target.p, '#', req->target.n)) {
        fail(s, 400, "the request target must not contain a fragment (#)", PIER_BAD_MALFORMED);
        return HPE_PAUSED;
    }
    int options_star = p->method == HTTP_OPTIONS && req->target.n == 1 && req->target.p[0] == '*';
    if (!options_star && split_target(req) != 0) {
        fail(s, 400, "invalid request target", PIER_BAD_MALFORMED);
        return HPE_PAUSED;
    }
    int chunked = (p->flags & F_CHUNKED) != 0;
    int has_length = (p->flags & F_CONTENT_LENGTH) != 0;
    if (has_length && p->content_length > (uint64_t)cfg->max_body_bytes) {
        fail(s, 413, "request body exceeds limits.max_body_bytes", PIER_BAD_BODY_TOO_LARGE);
        return HPE_PAUSED;
    }
    int expect_continue = 0;
    if (pier_request_header(req, "Expect", &v)) {
        if (!pier_str_ieq(v, "100-continue")) {
            fail(s, 417, "only the expectation 100-continue is supported", PIER_BAD_EXPECTATION);
            return HPE_PAUSED;
        }
        /* RFC 9110 10.1.1: an HTTP/1.0 client's 100-continue is ignored */
        expect_continue = p->http_minor >= 1 && (chunked || (has_length && p->content_length > 0));
    }

    /* route now, so a body nobody reads is counted but not kept */
    if (!options_star)
        route_request(s);

    /* 100 Continue invites the body: only when it will be read. Any other answer (404, 405,
     * 415, a route that takes no body) is known now, so it goes at once, instead of the 100,
     * and the connection closes: the client then never sends a body that would be thrown
     * away (RFC 9110 10.1.1). */
    if (expect_continue) {
        if ((s->flags & PIER_S_KEEP_BODY) && !body_type_refused(req, rq->route)) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            return keep_bytes(s, &env->out, cont, sizeof cont - 1);
        }
        struct pier_response res = {.body = &env->body};
        dispatch(s, &res);
        emit(s, &res, 1, req->method == HTTP_HEAD);
        s->flags |= PIER_S_RESPONDED | PIER_S_CLOSE;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    struct pier_session *s = of(p);
    struct pier_reqstate *rq = s->rq;
    if (s->scan != SC_OFF) { /* chunked: the framing before this data must be whole */
        const char *why = NULL;
        int r = scan(s, at, &why);
        unsigned st = s->scan & SC_STATE;
        if (r == SCAN_BAD || s->env->scan_at != at || (st != SC_DATA_WAIT && st != SC_DATA))
            return framing_error(s, why);
        s->env->scan_at = at + len;
        s->scan = SC_DATA;
    }
    rq->body_bytes += len;
    if (rq->body_bytes > (uint64_t)s->env->cfg->max_body_bytes) {
        fail(s, 413, "request body exceeds limits.max_body_bytes", PIER_BAD_BODY_TOO_LARGE);
        return HPE_PAUSED;
    }
    if (s->flags & PIER_S_KEEP_BODY)
        return keep_bytes(s, &rq->body, at, len);
    return 0;
}

static void dispatch(struct pier_session *s, struct pier_response *res) {
    struct pier_reqstate *rq = s->rq;
    struct pier_request *req = &rq->req;
    if (req->method == HTTP_OPTIONS) {
        int star = req->target.n == 1 && req->target.p[0] == '*';
        if (star || rq->route == PIER_ROUTE_WRONG_METHOD) {
            pier_response_begin(res, 204, NULL);
            snprintf(res->allow, sizeof res->allow, "%s",
                     star ? "GET, HEAD, POST, OPTIONS" : rq->allow);
            return;
        }
    }
    if (rq->route == PIER_ROUTE_NONE) {
        pier_response_error(res, 404, "no such route");
        return;
    }
    if (rq->route == PIER_ROUTE_WRONG_METHOD) {
        pier_response_error(res, 405, "method not allowed for this route");
        snprintf(res->allow, sizeof res->allow, "%s", rq->allow);
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

static int on_message_complete(llhttp_t *p) {
    struct pier_session *s = of(p);
    struct pier_env *env = s->env;
    int paused = 0;
    if (s->scan != SC_OFF) { /* chunked: the last chunk and the trailers must be whole */
        const char *why = NULL;
        if (scan(s, s->env->scan_end, &why) != SCAN_MSG_END)
            paused = framing_error(s, why) != 0;
    }
    if (!(s->flags & PIER_S_RESPONDED)) {
        struct pier_response res = {.body = &env->body};
        dispatch(s, &res);
        int closing =
            (s->flags & PIER_S_CLOSE) || !llhttp_should_keep_alive(p) || p->upgrade ||
            atomic_load_explicit(&env->app->lifecycle, memory_order_relaxed) == PIER_DRAINING ||
            atomic_load_explicit(&env->app->close_connections, memory_order_relaxed);
        emit(s, &res, closing, s->rq->req.method == HTTP_HEAD);
        if (closing) {
            s->flags |= PIER_S_CLOSE;
            paused = 1;
        }
    }
    /* the request is over: its state goes back to the pool */
    s->nrequests++;
    reqstate_put(env, s->rq);
    s->rq = NULL;
    s->flags &= (uint16_t)PIER_S_CLOSE;
    s->phase = PIER_PHASE_IDLE;
    pier_buf_shrink(&env->body, KEEP_BUF_BYTES);
    if (!paused && env->out.len >= PIER_OUT_HIGH_WATER) { /* let the writes catch up */
        s->flags |= PIER_S_FULL;
        paused = 1;
    }
    return paused ? HPE_PAUSED : 0;
}

/* The parser callbacks. A constant, so every worker shares it without a first-use
 * initialisation (llhttp_settings_init only zeroes the struct; unnamed callbacks stay NULL). */
static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void pier_session_init(struct pier_session *s, struct pier_env *env) {
    memset(s, 0, sizeof *s);
    s->env = env;
    llhttp_init(&s->parser, HTTP_REQUEST, &parser_settings);
    s->parser.data = s;
    s->phase = PIER_PHASE_HEADERS;
}

void pier_session_reset(struct pier_session *s) {
    if (s->rq) {
        reqstate_put(s->env, s->rq);
        s->rq = NULL;
    }
}

static void parse_error(struct pier_session *s, llhttp_errno_t err) {
    if (s->flags & PIER_S_RESPONDED)
        return;
    if (s->rq == NULL)
        s->rq = reqstate_get(s->env);
    if (err == HPE_PAUSED_H2_UPGRADE) { /* the HTTP/2 connection preface */
        fail(s, 505, "only HTTP/1.0 and HTTP/1.1 are supported", PIER_BAD_NOT_IMPLEMENTED);
        return;
    }
    char msg[160];
    const char *reason = llhttp_get_error_reason(&s->parser);
    snprintf(msg, sizeof msg, "malformed request: %s", reason ? reason : llhttp_errno_name(err));
    fail(s, 400, msg, PIER_BAD_MALFORMED);
}

/* llhttp knows a fixed list of methods and stops at the first byte that leaves it. A method
 * is any token (RFC 9110 9.1): when the bytes from there to the first SP are token characters
 * after a non-empty start, the method is one pier does not implement (501); anything else is
 * a malformed request line (400). The rest of the token may come in later feeds (the flag
 * PIER_S_METHOD); it counts against limits.max_header_bytes like the request line it is. */
static void method_rest(struct pier_session *s, const char *p, const char *end, int empty) {
    struct pier_reqstate *rq = s->rq;
    for (; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == ' ' && !empty) {
            fail(s, 501, "unknown method", PIER_BAD_NOT_IMPLEMENTED);
            return;
        }
        if (!is_tchar(c)) {
            fail(s, 400, "malformed request: invalid method", PIER_BAD_MALFORMED);
            return;
        }
        empty = 0;
        if (++rq->method_bytes > (uint64_t)s->env->cfg->max_header_bytes) {
            head_too_large(s, "");
            return;
        }
    }
    s->flags |= PIER_S_METHOD;
}

static int is_method_char(const char *p) {
    return (*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_';
}

int pier_session_feed(struct pier_session *s, const char *data, size_t len) {
    s->env->fed = len;
    if (s->flags & PIER_S_CLOSE)
        return 1;
    if (s->flags & PIER_S_METHOD) {
        method_rest(s, data, data + len, 0);
        return (s->flags & PIER_S_CLOSE) ? 1 : 0;
    }
    s->env->scan_at = data;
    s->env->scan_end = data + len;
    llhttp_errno_t err = llhttp_execute(&s->parser, data, len);
    if (err == HPE_OK && s->scan != SC_OFF && !(s->flags & PIER_S_CLOSE)) {
        /* a head or a chunked body goes on in the next read: check what came so far */
        const char *why = NULL;
        int r = scan(s, s->env->scan_end, &why);
        if (r != SCAN_MORE && !(r == SCAN_WAIT && s->env->scan_at == s->env->scan_end))
            framing_error(s, why);
        else
            head_bytes_over(s);
    }
    if (err == HPE_OK)
        return (s->flags & PIER_S_CLOSE) ? 1 : 0;
    if (err == HPE_PAUSED && (s->flags & PIER_S_FULL) && !(s->flags & PIER_S_CLOSE)) {
        /* stopped at a request boundary; the next feed starts with the next request */
        s->flags &= (uint16_t)~PIER_S_FULL;
        s->env->fed = (size_t)(llhttp_get_error_pos(&s->parser) - data);
        llhttp_resume(&s->parser);
        return PIER_FEED_PAUSE;
    }
    if (err == HPE_INVALID_METHOD && s->rq && !(s->flags & PIER_S_RESPONDED)) {
        /* what llhttp took so far were method letters: before pos in this feed, or earlier */
        const char *pos = llhttp_get_error_pos(&s->parser);
        int empty = s->rq->method_bytes == 0 && (pos == data || !is_method_char(pos - 1));
        s->flags &= (uint16_t)~PIER_S_IN_MESSAGE; /* llhttp's method is none: log "-" */
        method_rest(s, pos, data + len, empty);
        return (s->flags & PIER_S_CLOSE) ? 1 : 0;
    }
    if (err == HPE_INVALID_CONSTANT && !(s->flags & PIER_S_RESPONDED) &&
        is_rtsp_method(s->parser.method)) {
        /* an RTSP method, and then no RTSP/ after it (HTTP/, or garbage): unknown to pier */
        if (s->rq == NULL)
            s->rq = reqstate_get(s->env);
        fail(s, 501, "unknown method", PIER_BAD_NOT_IMPLEMENTED);
        return 1;
    }
    if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE)
        parse_error(s, err);
    s->flags |= PIER_S_CLOSE;
    return 1;
}

int pier_session_timeout(struct pier_session *s) {
    /* no request under way (idle, or not one byte of one yet): nothing to answer; nginx too
     * closes a connection that never sent a request without a word */
    if (s->phase == PIER_PHASE_IDLE || s->rq == NULL || (s->flags & PIER_S_CLOSE))
        return 1;
    int in_body = s->phase == PIER_PHASE_BODY;
    if (s->rq == NULL)
        s->rq = reqstate_get(s->env);
    fail(s, 408,
         in_body ? "the request was not received within timeouts.request_ms"
                 : "the request headers were not received within timeouts.header_ms",
         in_body ? PIER_BAD_REQUEST_TIMEOUT : PIER_BAD_HEADER_TIMEOUT);
    return 1;
}

void pier_session_overload(struct pier_session *s) {
    fail(s, 503, "too many connections; retry later", PIER_BAD_OVERLOAD);
}

uint64_t pier_session_request_start(const struct pier_session *s) {
    return s->rq ? s->rq->start_ns : 0;
}
