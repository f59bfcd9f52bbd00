/* buf — growable byte buffers; see include/pier/buf.h. */
#include "pier/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pier/fmt.h"

void pier_buf_init(pier_buf_t *b) {
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

void pier_buf_free(pier_buf_t *b) {
    free(b->data);
    pier_buf_init(b);
}

int pier_buf_reserve(pier_buf_t *b, size_t extra) {
    if (b->cap - b->len >= extra)
        return 0;
    size_t want = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        b->oom = 1;
        return -12;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int pier_buf_append(pier_buf_t *b, const void *data, size_t len) {
    if (len == 0)
        return 0;
    if (pier_buf_reserve(b, len) != 0)
        return -12;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int pier_buf_puts(pier_buf_t *b, const char *s) {
    return pier_buf_append(b, s, strlen(s));
}

int pier_buf_putc(pier_buf_t *b, char c) {
    if (pier_buf_reserve(b, 1) != 0)
        return -12;
    b->data[b->len++] = c;
    return 0;
}

int pier_buf_vprintf(pier_buf_t *b, const char *fmt, va_list ap) {
    va_list again;
    va_copy(again, ap);
    size_t room = b->cap - b->len;
    int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
    if (n < 0) {
        va_end(again);
        return -22;
    }
    if ((size_t)n >= room) {
        if (pier_buf_reserve(b, (size_t)n + 1) != 0) {
            va_end(again);
            return -12;
        }
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
    }
    va_end(again);
    b->len += (size_t)n;
    return 0;
}

int pier_buf_printf(pier_buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = pier_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int pier_buf_put_u64(pier_buf_t *b, uint64_t v) {
    if (pier_buf_reserve(b, PIER_FMT_U64_MAX) != 0)
        return -12;
    b->len = (size_t)(pier_fmt_u64(b->data + b->len, v) - b->data);
    return 0;
}

int pier_buf_put_json_str(pier_buf_t *b, const char *s, size_t len) {
    if (len > (SIZE_MAX - 2) / 6 || pier_buf_reserve(b, 6 * len + 2) != 0)
        return -12;
    char *p = b->data + b->len;
    *p++ = '"';
    p = pier_fmt_json_chars(p, s, len);
    *p++ = '"';
    b->len = (size_t)(p - b->data);
    return 0;
}

void pier_buf_shrink(pier_buf_t *b, size_t keep) {
    if (b->cap > keep) {
        pier_buf_free(b);
    }
}
