/* log — structured log lines on stdout, JSON (default) or text.
 *
 * A line is built field by field into a fixed buffer owned by the caller (no allocation),
 * then either written at once (pier_log_end: lifecycle events, errors) or appended to a
 * batch the caller flushes later (pier_log_end_batch: the per-worker access log, flushed
 * every 100 ms and at exit, so logging costs one write(2) per batch, not per request).
 * Level and format are process-wide and change on config reload.
 */
#ifndef PIER_LOG_H
#define PIER_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "pier/buf.h"
#include "pier/config.h"

#define PIER_LOG_LINE_MAX 2048

struct pier_logline {
    size_t len;
    int level;
    int format;
    int truncated;
    char data[PIER_LOG_LINE_MAX];
};

void pier_log_configure(int level, int format);
int pier_log_enabled(int level);
/* Send log output to fd instead of stdout (tests, fuzzers). */
void pier_log_set_fd(int fd);

void pier_log_begin(struct pier_logline *l, int level, const char *msg);
void pier_log_str(struct pier_logline *l, const char *key, const char *value);
void pier_log_strn(struct pier_logline *l, const char *key, const char *value, size_t len);
void pier_log_int(struct pier_logline *l, const char *key, int64_t value);
void pier_log_end(struct pier_logline *l);
void pier_log_end_batch(struct pier_logline *l, pier_buf_t *batch);
void pier_log_flush_batch(pier_buf_t *batch);

/* One-line convenience for messages without fields. */
void pier_log_msg(int level, const char *msg);

#endif
