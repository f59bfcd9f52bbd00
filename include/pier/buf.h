/* buf — a growable byte buffer.
 *
 * Used for everything pier assembles: response heads and bodies, copied request heads,
 * log lines. The buffer keeps its capacity between uses (pier_buf_reset), so a buffer
 * that lives as long as its owner costs no allocation on the request path once warm.
 */
#ifndef PIER_BUF_H
#define PIER_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pier_buf {
    char *data;
    size_t len;
    size_t cap;
    int oom; /* set once an append failed: the content is truncated */
} pier_buf_t;

void pier_buf_init(pier_buf_t *b);
void pier_buf_free(pier_buf_t *b);
static inline void pier_buf_reset(pier_buf_t *b) {
    b->len = 0;
    b->oom = 0;
}
/* Make room for at least `extra` more bytes; 0 or UV_ENOMEM-style -12. */
int pier_buf_reserve(pier_buf_t *b, size_t extra);
int pier_buf_append(pier_buf_t *b, const void *data, size_t len);
int pier_buf_puts(pier_buf_t *b, const char *s);
int pier_buf_putc(pier_buf_t *b, char c);
int pier_buf_printf(pier_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int pier_buf_vprintf(pier_buf_t *b, const char *fmt, va_list ap);
int pier_buf_put_u64(pier_buf_t *b, uint64_t v);
/* Append s as a JSON string literal, quotes included; bytes outside printable ASCII are
 * written as \u00XX so the output is always valid JSON whatever the input. */
int pier_buf_put_json_str(pier_buf_t *b, const char *s, size_t len);
/* Release the memory if it has grown past `keep` bytes (bounds what a big request leaves). */
void pier_buf_shrink(pier_buf_t *b, size_t keep);

#endif
