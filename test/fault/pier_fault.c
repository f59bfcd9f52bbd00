/* pier_fault — an LD_PRELOAD library the integration tests use to make faults happen on purpose.
 *
 * Allocation failure: PIER_FAULT_CALLOC=conn fails calloc()s of one connection's size
 * (struct pier__conn, from src/worker.h, so the shim follows the struct); PIER_FAULT_CALLOC=N
 * fails calloc()s of N bytes. PIER_FAULT_NTH=k (default 1) makes the k-th such call the
 * first to fail, PIER_FAULT_TIMES=t (default 1) how many in a row fail. Calls of other sizes
 * pass through untouched.
 *
 * A slow worker: PIER_FAULT_WAKE_DELAY_MS=ms makes every read of an eventfd by a thread other
 * than the main one sleep that long first — a worker woken by the control thread (reload,
 * drain) takes that long to notice, which opens race windows a test wants to hit every time.
 *
 * A buffer that cannot grow: PIER_FAULT_REALLOC_MIN=bytes fails realloc()s to at least that
 * many bytes; PIER_FAULT_REALLOC_NTH=k (default 1) makes the k-th such call the first to fail,
 * PIER_FAULT_REALLOC_TIMES=t (default 1) how many in a row fail.
 *
 * An accept error: PIER_FAULT_ACCEPT_ERRNO=e makes accept4() fail with errno e, without taking
 * the pending connection, on its first PIER_FAULT_ACCEPT_TIMES (default 1) calls.
 *
 * A slow start-up: PIER_FAULT_BIND_DELAY_MS=ms makes every bind() sleep that long first, after
 * writing "pier_fault: bind delayed" to stderr — a window, announced, in which a test can
 * signal pier while it starts.
 *
 * Not linked with a sanitizer: under an ASan pier it is loaded with
 * ASAN_OPTIONS=verify_asan_link_order=0 and forwards to ASan's allocator.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "worker.h"

static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static size_t realloc_min;
static long realloc_from = 1, realloc_times = 1;
static atomic_long reallocs;
static ssize_t (*real_read)(int, void *, size_t);
static size_t fail_size;
static long fail_from = 1, fail_times = 1;
static atomic_long seen;
static long wake_delay_ms;
static long bind_delay_ms;
static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int accept_errno;
static long accept_times = 1;
static atomic_long accepts;

/* dlsym may itself call calloc before real_calloc is known: serve those from here. */
static char early[4096];
static size_t early_used;

__attribute__((constructor)) static void fault_init(void) {
    real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    real_read = (ssize_t(*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    real_accept4 = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    const char *v = getenv("PIER_FAULT_CALLOC");
    if (v && strcmp(v, "conn") == 0)
        fail_size = sizeof(struct pier__conn);
    else if (v)
        fail_size = (size_t)strtoull(v, NULL, 10);
    if ((v = getenv("PIER_FAULT_NTH")) != NULL)
        fail_from = atol(v);
    if ((v = getenv("PIER_FAULT_TIMES")) != NULL)
        fail_times = atol(v);
    if ((v = getenv("PIER_FAULT_WAKE_DELAY_MS")) != NULL)
        wake_delay_ms = atol(v);
    if ((v = getenv("PIER_FAULT_BIND_DELAY_MS")) != NULL)
        bind_delay_ms = atol(v);
    if ((v = getenv("PIER_FAULT_REALLOC_MIN")) != NULL)
        realloc_min = (size_t)strtoull(v, NULL, 10);
    if ((v = getenv("PIER_FAULT_REALLOC_NTH")) != NULL)
        realloc_from = atol(v);
    if ((v = getenv("PIER_FAULT_REALLOC_TIMES")) != NULL)
        realloc_times = atol(v);
    if ((v = getenv("PIER_FAULT_ACCEPT_ERRNO")) != NULL)
        accept_errno = atoi(v);
    if ((v = getenv("PIER_FAULT_ACCEPT_TIMES")) != NULL)
        accept_times = atol(v);
}

void *calloc(size_t n, size_t size) {
    if (real_calloc == NULL) {
        size_t want = (n * size + 15) & ~(size_t)15;
        if (early_used + want > sizeof early)
            return NULL;
        void *p = early + early_used;
        early_used += want;
        return p; /* zeroed: static storage */
    }
    if (fail_size != 0 && n * size == fail_size) {
        long k = atomic_fetch_add(&seen, 1) + 1;
        if (k >= fail_from && k < fail_from + fail_times) {
            char msg[96];
            int len =
                snprintf(msg, sizeof msg, "pier_fault: calloc(%zu, %zu) #%ld fails\n", n, size, k);
            if (write(STDERR_FILENO, msg, (size_t)len) < 0) { /* best effort */
            }
            return NULL;
        }
    }
    return real_calloc(n, size);
}

void *realloc(void *p, size_t size) {
    if (real_realloc == NULL) { /* called before fault_init ran */
        static _Thread_local int resolving;
        if (resolving)
            return NULL; /* dlsym's own call, if it makes one */
        resolving = 1;
        real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
        resolving = 0;
        if (real_realloc == NULL)
            return NULL;
    }
    if (realloc_min != 0 && size >= realloc_min) {
        long k = atomic_fetch_add(&reallocs, 1) + 1;
        if (k >= realloc_from && k < realloc_from + realloc_times) {
            char msg[96];
            int len = snprintf(msg, sizeof msg, "pier_fault: realloc(%zu) #%ld fails\n", size, k);
            if (write(STDERR_FILENO, msg, (size_t)len) < 0) { /* best effort */
            }
            return NULL;
        }
    }
    return real_realloc(p, size);
}

static int is_eventfd(int fd) {
    char path[64], target[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0)
        return 0;
    target[n] = '\0';
    return strcmp(target, "anon_inode:[eventfd]") == 0;
}

ssize_t read(int fd, void *buf, size_t count) {
    if (wake_delay_ms > 0 && syscall(SYS_gettid) != getpid() && is_eventfd(fd)) {
        struct timespec ts = {wake_delay_ms / 1000, (wake_delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return real_read(fd, buf, count);
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    if (bind_delay_ms > 0) {
        static const char msg[] = "pier_fault: bind delayed\n";
        if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) { /* best effort */
        }
        struct timespec ts = {bind_delay_ms / 1000, (bind_delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return real_bind(fd, addr, len);
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    if (accept_errno != 0 && atomic_fetch_add(&accepts, 1) < accept_times) {
        char msg[64];
        int n =
            snprintf(msg, sizeof msg, "pier_fault: accept4 fails with errno %d\n", accept_errno);
        if (write(STDERR_FILENO, msg, (size_t)n) < 0) { /* best effort */
        }
        errno = accept_errno;
        return -1;
    }
    return real_accept4(fd, addr, len, flags);
}
