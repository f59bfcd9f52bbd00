/* chunked — a chunked request body, walked by llhttp.
 *
 * pier's parser (pier/parse.h) reads the head and decides the framing; when it is chunked, the
 * body's bytes go here: llhttp walks the chunk sizes, extensions, the CRLF after each chunk's
 * data, the last chunk and the trailer section, and hands the data over through a callback.
 * pier's limits and the few rules llhttp leaves to its user are enforced in llhttp's callbacks
 * (src/chunked.c says which). It never allocates and knows no socket.
 */
#ifndef PIER_CHUNKED_H
#define PIER_CHUNKED_H

#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "pier/parse.h"

/* Body bytes for the caller; nonzero refuses the request (the caller has answered it). */
typedef int (*pier_chunked_data_cb)(void *ctx, const char *at, size_t len);

struct pier_chunked {
    llhttp_t llh;
    pier_chunked_data_cb on_data;
    void *ctx;
    const char *start, *end; /* the bytes of the feed under way */
    uint64_t fed;            /* client bytes of earlier feeds */
    uint64_t trailers;       /* 1 + offset of the trailer section's first byte; 0: none yet */
    uint64_t body_bytes;     /* data bytes announced by the chunk sizes so far */
    uint64_t max_body;
    uint32_t max_head;    /* budget of the extensions, and of the trailer section */
    uint32_t ext_bytes;   /* chunk extension bytes of this body */
    uint32_t name_len;    /* of the trailer field name under way */
    uint8_t value_ended;  /* the trailer value under way reached its line's end */
    uint8_t data_refused; /* on_data refused (and the caller answered) */
    char last;            /* the last byte of the previous feed */
    int status;           /* pier's rules refused the body: 400, 413 or 431, with why */
    const char *why;
    char msg[96]; /* why, when llhttp refused */
};

/* Start a body. `max_head` is limits.max_header_bytes (extensions and trailers each get that
 * many bytes), `max_body` limits.max_body_bytes; `on_data(ctx, …)` gets every data byte, in
 * order. */
void pier_chunked_begin(struct pier_chunked *c, uint32_t max_head, uint64_t max_body,
                        pier_chunked_data_cb on_data, void *ctx);
/* Walk [p, end). Returns PIER_PARSE_MORE (all taken), PIER_PARSE_DONE (the message ends just
 * before out->stop; the rest is the next request's) or PIER_PARSE_ERROR: out->status and
 * out->why, or status 0 when on_data refused. */
int pier_chunked_feed(struct pier_chunked *c, const char *p, const char *end,
                      struct pier_parse_out *out);

#endif
