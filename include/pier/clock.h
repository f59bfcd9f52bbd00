/* clock — the monotonic clock pier times requests and deadlines with. */
#ifndef PIER_CLOCK_H
#define PIER_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t pier_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
