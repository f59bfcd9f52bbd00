/* chunked — a chunked request body, walked by llhttp; see include/pier/chunked.h.
 *
 * llhttp cannot start in the middle of a message, so it is first handed a head of pier's own
 * that announces what pier's parser decided (ANNOUNCE below). That is done once per process:
 * each body starts from a copy of the parser as the head left it (llhttp_t is a plain value; no
 * span is open there), which costs ~50 instructions instead of the ~950 of parsing the head
 * again. Every byte after it is the client's and is walked once, by llhttp. llhttp is built
 * strict (third_party/llhttp) and no lenient flag is set. What its callbacks add, each refusing
 * with a status:
 *   on_chunk_header     a chunk that would take the body past limits.max_body_bytes: 413 as
 *                       soon as its size line is read, before its data;
 *   on_chunk_extension_* extension bytes past limits.max_header_bytes: 400;
 *   on_header_*         (trailers only) the section past limits.max_header_bytes: 431; a name
 *                       that is empty, or a value folded onto the next line (obs-fold): 400 —
 *                       llhttp 8.1 accepts both;
 *   on_message_complete pauses llhttp, so the bytes after the message are pier's parser's again;
 *                       the empty line that ends the message must end in CRLF (llhttp 8.1 takes
 *                       a bare LF there): 400.
 */
#include "pier/chunked.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* The head llhttp sees first: the framing pier's parser decided, nothing else. */
static const char ANNOUNCE[] = "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";

static struct pier_chunked *of(llhttp_t *llh) {
    return llh->data;
}

/* Offset of `at` (a byte of the feed under way) from the body's first byte. */
static uint64_t offset_of(const struct pier_chunked *c, const char *at) {
    return c->fed + (uint64_t)(at - c->start);
}

static int refuse(struct pier_chunked *c, int status, const char *why) {
    c->status = status;
    c->why = why;
    return -1;
}

static int trailers_too_long(struct pier_chunked *c, const char *upto) {
    if (c->trailers && offset_of(c, upto) - (c->trailers - 1) > c->max_head)
        return refuse(c, 431, "trailer fields exceed limits.max_header_bytes");
    return 0;
}

static int on_body(llhttp_t *llh, const char *at, size_t len) {
    struct pier_chunked *c = of(llh);
    if (c->on_data(c->ctx, at, len) == 0)
        return 0;
    c->data_refused = 1;
    return -1;
}

static int on_chunk_header(llhttp_t *llh) {
    struct pier_chunked *c = of(llh);
    if (llh->content_length > c->max_body - c->body_bytes)
        return refuse(c, 413, "request body exceeds limits.max_body_bytes");
    c->body_bytes += llh->content_length;
    return 0;
}

static int extension_bytes(struct pier_chunked *c, size_t n) {
    c->ext_bytes += n;
    if (c->ext_bytes > c->max_head)
        return refuse(c, 400, "malformed request: chunk extensions exceed limits.max_header_bytes");
    return 0;
}

static int on_extension(llhttp_t *llh, const char *at, size_t len) {
    (void)at;
    return extension_bytes(of(llh), len);
}

static int on_extension_part(llhttp_t *llh) { /* the ';' or '=' before it */
    return extension_bytes(of(llh), 1);
}

/* The announcing head's own field comes through these too: only trailers count. */
static int on_trailer_name(llhttp_t *llh, const char *at, size_t len) {
    struct pier_chunked *c = of(llh);
    if (!(llh->flags & F_TRAILING))
        return 0;
    if (!c->trailers)
        c->trailers = 1 + offset_of(c, at);
    c->name_len += (uint32_t)len;
    return trailers_too_long(c, at + len);
}

static int on_trailer_name_done(llhttp_t *llh) {
    struct pier_chunked *c = of(llh);
    if (!(llh->flags & F_TRAILING))
        return 0;
    if (c->name_len == 0)
        return refuse(c, 400, "malformed request: empty trailer field name");
    c->name_len = 0;
    return 0;
}

/* A value's span ends where its line does, or where the feed does. A value that goes on after
 * its line ended is folded onto the next line. */
static int on_trailer_value(llhttp_t *llh, const char *at, size_t len) {
    struct pier_chunked *c = of(llh);
    if (!(llh->flags & F_TRAILING))
        return 0;
    if (c->value_ended)
        return refuse(c, 400,
                      "malformed request: obs-fold (a trailer line starting with whitespace)");
    if (at + len < c->end)
        c->value_ended = 1;
    return trailers_too_long(c, at + len);
}

static int on_trailer_value_done(llhttp_t *llh) {
    of(llh)->value_ended = 0;
    return 0;
}

static int on_message_complete(llhttp_t *llh) {
    (void)llh;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_chunk_extension_name = on_extension,
    .on_chunk_extension_value = on_extension,
    .on_chunk_extension_name_complete = on_extension_part,
    .on_chunk_extension_value_complete = on_extension_part,
    .on_header_field = on_trailer_name,
    .on_header_field_complete = on_trailer_name_done,
    .on_header_value = on_trailer_value,
    .on_header_value_complete = on_trailer_value_done,
    .on_message_complete = on_message_complete,
};

/* The parser as ANNOUNCE leaves it: at the first chunk's size. */
static llhttp_t announced;
static llhttp_errno_t announced_err;
static pthread_once_t announce_once = PTHREAD_ONCE_INIT;

static void announce(void) {
    static struct pier_chunked none; /* ANNOUNCE's field comes through the callbacks: ignored */
    llhttp_init(&announced, HTTP_REQUEST, &settings);
    announced.data = &none;
    announced_err = llhttp_execute(&announced, ANNOUNCE, sizeof ANNOUNCE - 1);
}

void pier_chunked_begin(struct pier_chunked *c, uint32_t max_head, uint64_t max_body,
                        pier_chunked_data_cb on_data, void *ctx) {
    pthread_once(&announce_once, announce);
    c->llh = announced;
    c->llh.data = c;
    c->on_data = on_data;
    c->ctx = ctx;
    c->fed = c->trailers = c->body_bytes = 0;
    c->max_head = max_head;
    c->max_body = max_body;
    c->ext_bytes = c->name_len = 0;
    c->value_ended = c->data_refused = 0;
    c->last = 0;
    c->status = 0;
    c->why = NULL;
    if (announced_err != HPE_OK)
        refuse(c, 500, "internal error: llhttp refused pier's chunked head");
}

/* llhttp's own refusal, in pier's words and then llhttp's. */
static int llhttp_refused(struct pier_chunked *c, struct pier_parse_out *out) {
    const char *reason = llhttp_get_error_reason(&c->llh);
    snprintf(c->msg, sizeof c->msg, "malformed request: chunked body: %s",
             reason ? reason : llhttp_errno_name(llhttp_get_errno(&c->llh)));
    out->status = 400;
    out->why = c->msg;
    return PIER_PARSE_ERROR;
}

int pier_chunked_feed(struct pier_chunked *c, const char *p, const char *end,
                      struct pier_parse_out *out) {
    out->stop = end;
    if (c->status == 0 && p < end) {
        c->start = p;
        c->end = end;
        llhttp_errno_t err = llhttp_execute(&c->llh, p, (size_t)(end - p));
        if (err == HPE_OK) {
            c->fed += (uint64_t)(end - p);
            c->last = end[-1];
            if (trailers_too_long(c, end) == 0)
                return PIER_PARSE_MORE;
        } else if (err == HPE_PAUSED) { /* the message is over, its last byte a LF */
            const char *stop = llhttp_get_error_pos(&c->llh);
            char before_lf = stop - 2 >= p ? stop[-2] : c->last;
            if (trailers_too_long(c, stop) == 0 && before_lf != '\r')
                refuse(c, 400, "malformed request: bare LF");
            if (c->status == 0) {
                out->stop = stop;
                return PIER_PARSE_DONE;
            }
        } else if (c->data_refused) {
            out->status = 0;
            out->why = NULL;
            return PIER_PARSE_ERROR;
        } else if (c->status == 0) {
            return llhttp_refused(c, out);
        }
    } else if (c->status == 0) {
        return PIER_PARSE_MORE;
    }
    out->status = c->status;
    out->why = c->why;
    return PIER_PARSE_ERROR;
}
