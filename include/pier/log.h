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

enum pier_log_level { PIER_LOG_DEBUG, PIER_LOG_INFO, PIER_LOG_WARN, PIER_LOG_ERROR };
enum pier_log_format { PIER_LOG_FORMAT_JSON, PIER_LOG_FORMAT_TEXT };

#define PIER_LOG_LINE_MAX 2048

struct pier_logline {
    size_t len;
    int level;
    int format;
    int truncated;
    char data[PIER_LOG_LINE_MAX];
};

void pier_log_configure(int level, int format);
/* Write "2026-11-26T03:47:44.123Z" (24 bytes, UTC, now) at out; returns its end. */
char *pier_log_timestamp(char *out);
int pier_log_format(void);
/* "debug", "info", "warn" or "error" */
const char *pier_log_level_name(int level);
int pier_log_enabled(int level);
/* Send log output to fd instead of stdout (tests, fuzzers). */
void pier_log_set_fd(int fd);

/* The keys and messages are nearly always literals: the inline wrappers below measure them
 * where the compiler can (strlen of a literal is a constant), not on every line. */
void pier_log_begin_n(struct pier_logline *l, int level, const char *msg, size_t msg_len);
void pier_log_strn_k(struct pier_logline *l, const char *key, size_t key_len, const char *value,
                     size_t len);
void pier_log_int_k(struct pier_logline *l, const char *key, size_t key_len, int64_t value);

static inline void pier_log_begin(struct pier_logline *l, int level, const char *msg) {
    pier_log_begin_n(l, level, msg, __builtin_strlen(msg));
}
static inline void pier_log_strn(struct pier_logline *l, const char *key, const char *value,
                                 size_t len) {
    pier_log_strn_k(l, key, __builtin_strlen(key), value, len);
}
static inline void pier_log_str(struct pier_logline *l, const char *key, const char *value) {
    pier_log_strn_k(l, key, __builtin_strlen(key), value ? value : "",
                    value ? __builtin_strlen(value) : 0);
}
static inline void pier_log_int(struct pier_logline *l, const char *key, int64_t value) {
    pier_log_int_k(l, key, __builtin_strlen(key), value);
}
void pier_log_end(struct pier_logline *l);
void pier_log_end_batch(struct pier_logline *l, pier_buf_t *batch);
void pier_log_flush_batch(pier_buf_t *batch);

/* One-line convenience for messages without fields. */
void pier_log_msg(int level, const char *msg);

#endif
