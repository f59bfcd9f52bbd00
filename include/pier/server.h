/* server — the process: a control loop for signals and lifecycle, and N worker loops.
 *
 * The main thread runs the control loop: SIGTERM/SIGINT start the drain, SIGHUP reloads the
 * config, timers bound the grace and drain periods. Each worker thread runs its own libuv
 * loop, accepts from the one listening socket they all share (each waits on it with
 * EPOLLEXCLUSIVE: a connection wakes one worker), and has its own connections, metrics block
 * and log batch, so the request path shares nothing and takes no lock. The control loop talks to
 * workers by publishing state (current config, lifecycle, replacement listeners) and waking them
 * with uv_async_send; workers read it on wake-up. What the two halves share is private to them:
 * src/worker.h.
 */
#ifndef PIER_SERVER_H
#define PIER_SERVER_H

#include <stddef.h>

#include "pier/config.h"

/* Hold SIGHUP, SIGUSR1 and SIGUSR2 until pier_server_run has installed their handlers (their
 * default action would end the process while it starts). Call first thing in main(). */
void pier_server_hold_signals(void);

/* Run until shut down. Takes ownership of `cfg` (heap-allocated). Returns the exit code. */
int pier_server_run(struct pier_config *cfg, const char *config_path, const char *const *sets,
                    size_t nsets);

#endif
