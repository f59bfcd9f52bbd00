/* parse — one pass over an HTTP/1.1 request's head: the request line and the field lines, and
 * the framing they announce.
 *
 * It is the only walk over the head: each byte is classified once (one 256-entry table) and
 * checked against RFC 9112 there — CRLF line ends only, no obs-fold, token field names, no
 * control bytes — while the spans of the method, the target and each field are recorded as
 * offsets from the request's first byte and the fields the session acts on are recognised by
 * name (a token, so nobody compares header names again). It is resumable at any byte: a head
 * split across reads goes on where it stopped. It never allocates and knows no socket.
 *
 * The body: a Content-Length body is counted off here (PIER_PARSE_BODY); a chunked one is
 * llhttp's to walk (pier/chunked.h), and the parser waits for pier_parse_body_done.
 */
#ifndef PIER_PARSE_H
#define PIER_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define PIER_MAX_HEADERS 64

/* The fields the session itself acts on. */
enum pier_field {
    PIER_F_OTHER,
    PIER_F_HOST,
    PIER_F_CONTENT_LENGTH,
    PIER_F_TRANSFER_ENCODING,
    PIER_F_CONNECTION,
    PIER_F_UPGRADE,
    PIER_F_EXPECT,
    PIER_F_CONTENT_TYPE,
    PIER_F_REQUEST_ID,
    PIER_F_COUNT
};

struct pier_span {
    uint32_t off, len;
};

/* A request head as offsets from its first byte (the method's). */
struct pier_head {
    struct pier_span target;
    uint32_t query; /* offset of the byte after the target's first '?'; 0: no query */
    uint32_t nfields;
    struct pier_span names[PIER_MAX_HEADERS], values[PIER_MAX_HEADERS];
    uint8_t first[PIER_F_COUNT]; /* 1 + index of the first field of each kind; 0: none */
    uint8_t count[PIER_F_COUNT];
};

/* Methods pier knows the name of: HTTP's in llhttp's table, with llhttp's numbers. */
enum pier_method {
    PIER_M_DELETE = 0,
    PIER_M_GET = 1,
    PIER_M_HEAD = 2,
    PIER_M_POST = 3,
    PIER_M_PUT = 4,
    PIER_M_CONNECT = 5,
    PIER_M_OPTIONS = 6,
    PIER_M_PATCH = 28,
    PIER_METHOD_UNKNOWN = 255
};
const char *pier_method_name(int method);
/* The method called p[0..n), or PIER_METHOD_UNKNOWN. */
int pier_method_id(const char *p, size_t n);

/* The parser's state between reads: 16 bytes in every connection. */
struct pier_parser {
    uint8_t state;
    uint8_t flags;  /* enum pier_parse_flags */
    uint8_t method; /* llhttp_method_t, or PIER_METHOD_UNKNOWN */
    uint8_t minor;  /* HTTP/1.minor */
    uint64_t left;  /* Content-Length body bytes left */
};

enum pier_parse_flags {
    PIER_P_KEEP_ALIVE = 1 << 0, /* the connection may carry another request */
    PIER_P_UPGRADE = 1 << 1,    /* Connection: upgrade with an Upgrade field */
    PIER_P_CHUNKED = 1 << 2,    /* the body is chunked: its bytes go to pier_chunked_feed */
    PIER_P_LENGTH = 1 << 3,     /* a Content-Length field was seen (left holds it until the body) */
    PIER_P_FIELDS = 1 << 4,     /* past the request line: an oversized head is 431, not 414 */
};

enum pier_parse_event {
    PIER_PARSE_MORE,  /* every byte taken; send more */
    PIER_PARSE_BEGIN, /* a request starts at *stop (leading empty lines were skipped) */
    PIER_PARSE_HEAD,  /* the head ends just before *stop */
    PIER_PARSE_BODY,  /* Content-Length body bytes: [out->data, *stop) */
    PIER_PARSE_DONE,  /* the message ends just before *stop */
    PIER_PARSE_ERROR, /* out->status and out->why say what; the parser stays in error */
};

struct pier_parse_out {
    const char *stop; /* where the next call starts */
    const char *data; /* PIER_PARSE_BODY: the first body byte */
    int status;       /* PIER_PARSE_ERROR: 400, 414, 431, 501 or 505 */
    const char *why;
};

void pier_parse_init(struct pier_parser *ps);
/* Parse [p, end). `base` is the request's first byte (from PIER_PARSE_BEGIN on), where the
 * head's offsets count from; the head's bytes must stay contiguous from base to p. `max_head`
 * bounds the head. */
int pier_parse(struct pier_parser *ps, struct pier_head *h, const char *base, const char *p,
               const char *end, uint32_t max_head, struct pier_parse_out *out);
/* A chunked body (PIER_P_CHUNKED) was read to its end elsewhere: the next request may begin. */
void pier_parse_body_done(struct pier_parser *ps);

#endif
