/* log — see include/pier/log.h.
 *
 * Lines go out with write(2) under one mutex so lines from different workers never
 * interleave; the mutex is taken once per batch, not once per request.
 */
#include "pier/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "pier/fmt.h"

static atomic_int log_level = PIER_LOG_INFO;
static atomic_int log_format = PIER_LOG_FORMAT_JSON;
static atomic_int log_fd = STDOUT_FILENO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_upper[] = {"DEBUG", "INFO", "WARN", "ERROR"};
static const char *const level_lower[] = {"debug", "info", "warn", "error"};

const char *pier_log_level_name(int level) {
    return level_lower[level >= 0 && level <= PIER_LOG_ERROR ? level : PIER_LOG_INFO];
}

void pier_log_configure(int level, int format) {
    atomic_store_explicit(&log_level, level, memory_order_relaxed);
    atomic_store_explicit(&log_format, format, memory_order_relaxed);
}

int pier_log_format(void) {
    return atomic_load_explicit(&log_format, memory_order_relaxed);
}

int pier_log_enabled(int level) {
    return level >= atomic_load_explicit(&log_level, memory_order_relaxed);
}

void pier_log_set_fd(int fd) {
    atomic_store(&log_fd, fd);
}

static void put(struct pier_logline *l, const char *s, size_t n) {
    /* keep 2 bytes for the closing "}\n" */
    if (l->len + n + 2 > sizeof l->data) {
        n = sizeof l->data - 2 > l->len ? sizeof l->data - 2 - l->len : 0;
        l->truncated = 1;
    }
    memcpy(l->data + l->len, s, n);
    l->len += n;
}

/* Escaped into the line where the worst case (6 bytes a byte) fits, else in small pieces
 * that put() truncates. */
static void put_escaped(struct pier_logline *l, const char *s, size_t n) {
    while (n > 0 && !l->truncated) {
        size_t take = (sizeof l->data - 2 - l->len) / 6;
        if (take == 0) {
            char tmp[6 * 16];
            take = n < 16 ? n : 16;
            put(l, tmp, (size_t)(pier_fmt_json_chars(tmp, s, take) - tmp));
        } else {
            take = take < n ? take : n;
            l->len = (size_t)(pier_fmt_json_chars(l->data + l->len, s, take) - l->data);
        }
        s += take;
        n -= take;
    }
}

/* "2026-11-26T03:47:44.123Z", with the part up to the seconds cached per thread. */
char *pier_log_timestamp(char *out) {
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[24];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = ts.tv_sec;
    }
    memcpy(out, cached, 19);
    int ms = (int)(ts.tv_nsec / 1000000);
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    return out + 24;
}

void pier_log_begin_n(struct pier_logline *l, int level, const char *msg, size_t msg_len) {
    char ts[24];
    size_t n = (size_t)(pier_log_timestamp(ts) - ts);
    l->len = 0;
    l->level = level;
    l->truncated = 0;
    l->format = atomic_load_explicit(&log_format, memory_order_relaxed);
    if (l->format == PIER_LOG_FORMAT_JSON) {
        put(l, "{\"ts\":\"", 7);
        put(l, ts, n);
        put(l, "\",\"level\":\"", 11);
        const char *name = pier_log_level_name(level);
        put(l, name, strlen(name));
        put(l, "\",\"msg\":\"", 9);
        put_escaped(l, msg, msg_len);
        put(l, "\"", 1);
    } else {
        put(l, ts, n);
        put(l, " ", 1);
        const char *name = level_upper[level >= 0 && level <= 3 ? level : 1];
        put(l, name, strlen(name));
        put(l, "     ", 6 - strlen(name));
        put(l, msg, msg_len);
    }
}

/* ,"key": (then a quote for a string) in JSON, or " key=" in text */
static void put_key(struct pier_logline *l, const char *key, size_t key_len, int string) {
    if (l->format == PIER_LOG_FORMAT_JSON) {
        put(l, ",\"", 2);
        put(l, key, key_len);
        put(l, "\":\"", string ? 3 : 2);
    } else {
        put(l, " ", 1);
        put(l, key, key_len);
        put(l, "=", 1);
    }
}

void pier_log_strn_k(struct pier_logline *l, const char *key, size_t key_len, const char *value,
                     size_t len) {
    put_key(l, key, key_len, 1);
    /* text: quoted when empty or holding a space */
    int quote = l->format == PIER_LOG_FORMAT_JSON || len == 0 || memchr(value, ' ', len) != NULL;
    if (quote && l->format != PIER_LOG_FORMAT_JSON)
        put(l, "\"", 1);
    put_escaped(l, value, len);
    if (quote)
        put(l, "\"", 1);
}

void pier_log_int_k(struct pier_logline *l, const char *key, size_t key_len, int64_t value) {
    char num[1 + PIER_FMT_U64_MAX], *p = num;
    if (value < 0)
        *p++ = '-';
    p = pier_fmt_u64(p, value < 0 ? 0 - (uint64_t)value : (uint64_t)value);
    put_key(l, key, key_len, 0);
    put(l, num, (size_t)(p - num));
}

static void finish(struct pier_logline *l) {
    /* put() always leaves room for these two bytes */
    if (l->format == PIER_LOG_FORMAT_JSON)
        l->data[l->len++] = '}';
    l->data[l->len++] = '\n';
}

static void write_all(const char *p, size_t n) {
    int fd = atomic_load(&log_fd);
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere to report a failing log: drop the line */
        }
        p += w;
        n -= (size_t)w;
    }
}

void pier_log_end(struct pier_logline *l) {
    if (!pier_log_enabled(l->level))
        return;
    finish(l);
    pthread_mutex_lock(&log_lock);
    write_all(l->data, l->len);
    pthread_mutex_unlock(&log_lock);
}

void pier_log_end_batch(struct pier_logline *l, pier_buf_t *batch) {
    if (!pier_log_enabled(l->level))
        return;
    finish(l);
    pier_buf_append(batch, l->data, l->len);
}

void pier_log_flush_batch(pier_buf_t *batch) {
    if (batch->len == 0)
        return;
    pthread_mutex_lock(&log_lock);
    write_all(batch->data, batch->len);
    pthread_mutex_unlock(&log_lock);
    pier_buf_reset(batch);
}

void pier_log_msg(int level, const char *msg) {
    if (!pier_log_enabled(level))
        return;
    struct pier_logline l;
    pier_log_begin(&l, level, msg);
    pier_log_end(&l);
}
