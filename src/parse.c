/* parse — the request's bytes, once; see include/pier/parse.h. */
#include "pier/parse.h"

#include <string.h>

/* Byte classes. TCHAR: RFC 9110 token. VALUE: field-value bytes (VCHAR, obs-text, SP, HTAB).
 * TARGET: request-target bytes but '?' and '#' (VCHAR, obs-text: no whitespace, no control). */
enum { C_TCHAR = 1, C_VALUE = 2, C_TARGET = 4 };
static const uint8_t cls[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, /* */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* */
    2, 7, 6, 3, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6, /*  !"#$%&'()*+,-./ */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 2, /* 0-9 :;<=>? */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, /* @A-O */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7, /* P-Z[\]^_ */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, /* `a-o */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0, /* p-z{|}~ DEL */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* obs-text */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* */
};

enum state {
    S_START,    /* before a request: empty lines are skipped */
    S_START_LF, /* CR of an empty line before the request */
    S_METHOD,
    S_TARGET,
    S_VERSION,
    S_LINE_LF, /* CR of the request line or of a field line */
    S_FIELD,   /* start of a field line, or of the empty line ending the head */
    S_NAME,
    S_OWS,     /* whitespace after the colon */
    S_VALUE,   /* a field value, up to CR */
    S_END_LF,  /* CR of the empty line */
    S_LENGTH,  /* Content-Length body (none: left is 0) */
    S_CHUNKED, /* a chunked body: llhttp's to walk (src/chunked.c) until pier_parse_body_done */
    S_ERROR,
};

static const struct {
    const char *name;
    uint8_t len, id;
} methods[] = {
    /* the common ones first: a GET is found by the first compare */
    {"GET", 3, 1},           {"HEAD", 4, 2},      {"POST", 4, 3},         {"PUT", 3, 4},
    {"DELETE", 6, 0},        {"OPTIONS", 7, 6},   {"PATCH", 5, 28},       {"CONNECT", 7, 5},
    {"TRACE", 5, 7},         {"COPY", 4, 8},      {"LOCK", 4, 9},         {"MKCOL", 5, 10},
    {"MOVE", 4, 11},         {"PROPFIND", 8, 12}, {"PROPPATCH", 9, 13},   {"SEARCH", 6, 14},
    {"UNLOCK", 6, 15},       {"BIND", 4, 16},     {"REBIND", 6, 17},      {"UNBIND", 6, 18},
    {"ACL", 3, 19},          {"REPORT", 6, 20},   {"MKACTIVITY", 10, 21}, {"CHECKOUT", 8, 22},
    {"MERGE", 5, 23},        {"M-SEARCH", 8, 24}, {"NOTIFY", 6, 25},      {"SUBSCRIBE", 9, 26},
    {"UNSUBSCRIBE", 11, 27}, {"PURGE", 5, 29},    {"MKCALENDAR", 10, 30}, {"LINK", 4, 31},
    {"UNLINK", 6, 32},       {"SOURCE", 6, 33},
};
#define NMETHODS (sizeof methods / sizeof methods[0])

const char *pier_method_name(int method) {
    for (size_t i = 0; i < NMETHODS; i++)
        if (methods[i].id == method)
            return methods[i].name;
    return "-";
}

int pier_method_id(const char *p, size_t n) {
    for (size_t i = 0; i < NMETHODS; i++)
        if (methods[i].len == n && memcmp(methods[i].name, p, n) == 0)
            return methods[i].id;
    return PIER_METHOD_UNKNOWN;
}

/* A token `p` of length n equal to the lower-case `lit`, ignoring case? Only for tokens:
 * setting bit 5 maps a tchar onto a lower-case letter only when it is that letter's capital. */
static int token_is(const char *p, size_t n, const char *lit, size_t lit_n) {
    if (n != lit_n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)p[i] | 0x20) != (unsigned char)lit[i])
            return 0;
    return 1;
}
#define TOKEN_IS(p, n, lit) token_is((p), (n), (lit), sizeof(lit) - 1)

static enum pier_field field_of(const char *p, size_t n) {
    switch (n) {
    case 4:
        return TOKEN_IS(p, n, "host") ? PIER_F_HOST : PIER_F_OTHER;
    case 6:
        return TOKEN_IS(p, n, "expect") ? PIER_F_EXPECT : PIER_F_OTHER;
    case 7:
        return TOKEN_IS(p, n, "upgrade") ? PIER_F_UPGRADE : PIER_F_OTHER;
    case 10:
        return TOKEN_IS(p, n, "connection") ? PIER_F_CONNECTION : PIER_F_OTHER;
    case 12:
        return TOKEN_IS(p, n, "content-type")   ? PIER_F_CONTENT_TYPE
               : TOKEN_IS(p, n, "x-request-id") ? PIER_F_REQUEST_ID
                                                : PIER_F_OTHER;
    case 14:
        return TOKEN_IS(p, n, "content-length") ? PIER_F_CONTENT_LENGTH : PIER_F_OTHER;
    case 17:
        return TOKEN_IS(p, n, "transfer-encoding") ? PIER_F_TRANSFER_ENCODING : PIER_F_OTHER;
    default:
        return PIER_F_OTHER;
    }
}

/* Connection: a comma-separated list of tokens; close, keep-alive and upgrade matter. */
static unsigned connection_flags(const char *p, size_t n) {
    unsigned close = 0, keep = 0, upgrade = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
            i++;
        size_t start = i;
        while (i < n && p[i] != ',' && p[i] != ' ' && p[i] != '\t')
            i++;
        const char *t = p + start;
        size_t tn = i - start;
        close |= TOKEN_IS(t, tn, "close");
        keep |= TOKEN_IS(t, tn, "keep-alive");
        upgrade |= TOKEN_IS(t, tn, "upgrade");
    }
    return (close ? 1u : 0u) | (keep ? 2u : 0u) | (upgrade ? 4u : 0u);
}

/* Content-Length: 1*DIGIT, at most 18 digits (no sign, no list, no overflow). */
static int parse_length(const char *p, size_t n, uint64_t *out) {
    if (n == 0 || n > 18)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)p[i] - '0';
        if (d > 9)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

void pier_parse_init(struct pier_parser *ps) {
    memset(ps, 0, sizeof *ps);
}

void pier_parse_body_done(struct pier_parser *ps) {
    ps->state = S_START;
}

/* The head is over: decide the body's framing and the connection's fate. */
static int head_done(struct pier_parser *ps, struct pier_head *h, const char *base,
                     struct pier_parse_out *out) {
    unsigned conn = 0;
    if (h->first[PIER_F_CONNECTION]) {
        /* every Connection field counts */
        for (uint32_t i = h->first[PIER_F_CONNECTION] - 1u; i < h->nfields; i++)
            if (field_of(base + h->names[i].off, h->names[i].len) == PIER_F_CONNECTION)
                conn |= connection_flags(base + h->values[i].off, h->values[i].len);
    }
    if (ps->minor >= 1 ? !(conn & 1) : (conn & 2) && !(conn & 1))
        ps->flags |= PIER_P_KEEP_ALIVE;
    if ((conn & 4) && h->first[PIER_F_UPGRADE])
        ps->flags |= PIER_P_UPGRADE;
    if (h->first[PIER_F_TRANSFER_ENCODING]) {
        const struct pier_span *v = &h->values[h->first[PIER_F_TRANSFER_ENCODING] - 1];
        if (ps->minor == 0)
            return out->why = "Transfer-Encoding is not allowed in an HTTP/1.0 request", 400;
        if (ps->flags & PIER_P_LENGTH)
            return out->why = "Content-Length with Transfer-Encoding", 400;
        if (h->count[PIER_F_TRANSFER_ENCODING] > 1)
            return out->why = "more than one Transfer-Encoding field", 400;
        if (!TOKEN_IS(base + v->off, v->len, "chunked"))
            return out->why = "only the chunked transfer coding is supported", 501;
        ps->flags |= PIER_P_CHUNKED;
        ps->state = S_CHUNKED;
        return 0;
    }
    ps->state = S_LENGTH;
    return 0;
}

/* take the byte and go to `state` (a block, so that its continue is the parsing loop's) */
#define NEXT(state)                                                                                \
    {                                                                                              \
        p++;                                                                                       \
        st = (state);                                                                              \
        continue;                                                                                  \
    }

/* past the bytes of class `bit` */
#define SKIP(bit)                                                                                  \
    while (p < end && (cls[(unsigned char)*p] & (bit)))                                            \
    p++

#define FAIL(code, text)                                                                           \
    do {                                                                                           \
        out->status = (code);                                                                      \
        out->why = (text);                                                                         \
        goto fail;                                                                                 \
    } while (0)

int pier_parse(struct pier_parser *ps, struct pier_head *h, const char *base, const char *p,
               const char *end, uint32_t max_head, struct pier_parse_out *out) {
    unsigned st = ps->state;
    const char *mark; /* start of the token under way, in the states that need it */
    for (;;) {
        switch (st) {
        case S_START:
            if (p == end)
                goto more;
            if (*p == '\r')
                NEXT(S_START_LF);
            ps->flags = 0;
            ps->left = 0;
            ps->state = S_METHOD;
            out->stop = p;
            return PIER_PARSE_BEGIN;
        case S_METHOD:
            /* from base: the method is all that was read of this request */
            SKIP(C_TCHAR);
            if (p == end)
                goto more_head;
            if (*p != ' ')
                FAIL(400, "malformed request: invalid method");
            if (p == base)
                FAIL(400, "malformed request: empty method");
            ps->method = (uint8_t)pier_method_id(base, (size_t)(p - base));
            /* a token that is no method pier knows: 501 whatever follows (an RTSP line too),
             * but for PRI, which starts the HTTP/2 preface and gets 505 from its version */
            if (ps->method == PIER_METHOD_UNKNOWN && (p - base != 3 || memcmp(base, "PRI", 3) != 0))
                FAIL(501, "unknown method");
            h->target.off = (uint32_t)(p + 1 - base);
            p++;
            st = S_TARGET;
            continue;
        case S_TARGET:
            SKIP(C_TARGET);
            if (p == end)
                goto more_head;
            if (*p == '?') { /* the first one starts the query; later ones are part of it */
                if (!h->query)
                    h->query = (uint32_t)(p + 1 - base);
                p++;
                continue;
            }
            if (*p == '#') /* RFC 9112 3.2: a client strips the fragment before sending */
                FAIL(400, "the request target must not contain a fragment (#)");
            h->target.len = (uint32_t)(p - base) - h->target.off;
            if (*p != ' ' || h->target.len == 0)
                FAIL(400, *p == '\n'   ? "malformed request: bare LF"
                          : *p == '\r' ? "malformed request: no HTTP version"
                                       : "malformed request: invalid request target");
            p++;
            st = S_VERSION;
            continue;
        case S_VERSION:
            /* "HTTP/" DIGIT "." DIGIT CR: read up to CR, then check the 8 bytes */
            while (p < end && ((cls[(unsigned char)*p] & C_TCHAR) || *p == '/'))
                p++;
            if (p == end)
                goto more_head;
            mark = base + h->target.off + h->target.len + 1;
            if (*p != '\r' || p - mark != 8 || memcmp(mark, "HTTP/", 5) != 0 ||
                (unsigned)(mark[5] - '0') > 9 || mark[6] != '.' || (unsigned)(mark[7] - '0') > 9)
                FAIL(400, *p == '\n' ? "malformed request: bare LF"
                                     : "malformed request: invalid HTTP version");
            if (mark[5] != '1' || mark[7] > '1')
                FAIL(505, "only HTTP/1.0 and HTTP/1.1 are supported");
            if (ps->method == PIER_METHOD_UNKNOWN)
                FAIL(501, "unknown method");
            ps->minor = (uint8_t)(mark[7] - '0');
            p++;
            if ((uint64_t)(p - base) > max_head)
                goto head_too_large;
            st = S_LINE_LF;
            continue;
        case S_FIELD:
            if (p == end)
                goto more_head;
            if (*p == '\r')
                NEXT(S_END_LF);
            if (!(cls[(unsigned char)*p] & C_TCHAR))
                FAIL(400,
                     *p == ' ' || *p == '\t'
                         ? "malformed request: obs-fold (a header line starting with whitespace)"
                     : *p == '\n' ? "malformed request: bare LF"
                                  : "malformed request: invalid character in a header name");
            if (h->nfields == PIER_MAX_HEADERS)
                FAIL(431, "too many header fields");
            h->names[h->nfields].off = (uint32_t)(p - base);
            st = S_NAME;
            continue;
        case S_NAME:
            SKIP(C_TCHAR);
            if (p == end)
                goto more_head;
            if (*p != ':')
                FAIL(400, *p == '\n' ? "malformed request: bare LF"
                                     : "malformed request: invalid character in a header name");
            h->names[h->nfields].len = (uint32_t)(p - base) - h->names[h->nfields].off;
            p++;
            st = S_OWS;
            continue;
        case S_OWS:
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            if (p == end)
                goto more_head;
            h->values[h->nfields].off = (uint32_t)(p - base);
            st = S_VALUE;
            continue;
        case S_VALUE: {
            SKIP(C_VALUE);
            if (p == end)
                goto more_head;
            if (*p != '\r')
                FAIL(400, *p == '\n' ? "malformed request: bare LF"
                                     : "malformed request: control character");
            uint32_t i = h->nfields, off = h->values[i].off;
            mark = base + off;
            const char *vend = p;
            while (vend > mark && (vend[-1] == ' ' || vend[-1] == '\t'))
                vend--;
            h->values[i].len = (uint32_t)(vend - mark);
            enum pier_field f = field_of(base + h->names[i].off, h->names[i].len);
            if (f != PIER_F_OTHER) {
                if (!h->first[f])
                    h->first[f] = (uint8_t)(i + 1);
                h->count[f]++;
                if (f == PIER_F_CONTENT_LENGTH) {
                    if (h->count[f] > 1)
                        FAIL(400, "malformed request: more than one Content-Length");
                    if (parse_length(mark, h->values[i].len, &ps->left) != 0)
                        FAIL(400, "malformed request: invalid Content-Length");
                    ps->flags |= PIER_P_LENGTH;
                }
            }
            h->nfields++;
            NEXT(S_LINE_LF);
        }
        case S_START_LF: /* an empty line before the request */
        case S_LINE_LF:  /* the end of the request line or of a field line */
        case S_END_LF:   /* the end of the head */
            if (p == end) {
                if (st == S_START_LF)
                    goto more;
                goto more_head;
            }
            if (*p++ != '\n')
                FAIL(400, "malformed request: bare CR");
            if (st == S_START_LF) {
                st = S_START;
                continue;
            }
            if (st == S_LINE_LF) {
                ps->flags |= PIER_P_FIELDS;
                st = S_FIELD;
                continue;
            }
            if ((uint64_t)(p - base) > max_head)
                goto head_too_large;
            if ((out->status = head_done(ps, h, base, out)) != 0)
                goto fail;
            out->stop = p;
            return PIER_PARSE_HEAD;
        case S_LENGTH: {
            if (ps->left == 0) {
                ps->state = S_START;
                out->stop = p;
                return PIER_PARSE_DONE;
            }
            if (p == end)
                goto more;
            size_t n = (size_t)(end - p) < ps->left ? (size_t)(end - p) : (size_t)ps->left;
            ps->left -= n;
            ps->state = (uint8_t)st;
            out->data = p;
            out->stop = p + n;
            return PIER_PARSE_BODY;
        }
        default: /* S_ERROR; S_CHUNKED, whose bytes are not this parser's */
            out->status = 400;
            out->why = "malformed request";
            return PIER_PARSE_ERROR;
        }
    }
more_head:
    if ((uint64_t)(p - base) > max_head)
        goto head_too_large;
more:
    ps->state = (uint8_t)st;
    out->stop = p;
    return PIER_PARSE_MORE;
head_too_large:
    /* the target is what is too long while the request line lasts, as nginx answers */
    if (ps->flags & PIER_P_FIELDS)
        FAIL(431, "request line and headers exceed limits.max_header_bytes");
    FAIL(414, "request line exceeds limits.max_header_bytes");
fail:
    ps->state = S_ERROR;
    out->stop = p;
    return PIER_PARSE_ERROR;
}
