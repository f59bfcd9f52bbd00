/* fdbudget — the process's descriptors: how many are open, the limit, and how many
 * connections fit under it (limits.max_connections is lowered to what does).
 */
#include <dirent.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/resource.h>

#include "fdbudget.h"
#include "pier/log.h"
#include "worker.h"

/* Descriptors kept free beyond those open at rest: per worker, the replacement listener a
 * reload opens before the old one closes (its duplicate and its eventfd) and the one a refused
 * client holds while it gets its 503; for the process, the config file a reload reads, /proc
 * reads, a probe. */
#define FD_SPARE_PER_WORKER 3
#define FD_SPARE            16

/* Descriptors open now, counted in /proc/self/fd (-1 if it cannot be read). */
int pier_fd_count(void) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* opendir's own */
}

/* Raise the soft descriptor limit to the hard one; return it (INT32_MAX for unlimited). */
int64_t pier_fd_raise_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return INT32_MAX;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > INT32_MAX ? INT32_MAX
                                                                   : (int64_t)rl.rlim_cur;
}

/* Bound max_connections by what RLIMIT_NOFILE leaves once the descriptors open at rest (every
 * worker's loop, listener, the logs: srv->fds_at_rest, measured once the workers are up) and
 * the spares are set aside; a connection is one descriptor. Called at start and on each
 * reload (the limit may have been changed from outside with prlimit). Logged at start, and
 * on reload when the result changes. */
void pier__fd_budget_apply(struct pier__server *srv, const struct pier_config *cfg, int start) {
    int64_t nofile = pier_fd_raise_limit();
    int64_t reserved = (int64_t)srv->fds_at_rest + FD_SPARE + FD_SPARE_PER_WORKER * srv->nworkers;
    int64_t room = nofile - reserved;
    if (room < 1)
        room = 1;
    int64_t max = cfg->max_connections < room ? cfg->max_connections : room;
    int before = atomic_exchange(&srv->max_connections, (int)max);
    if (!start && before == (int)max)
        return;
    struct pier_logline l;
    if (max < cfg->max_connections)
        pier_log_begin(&l, PIER_LOG_WARN,
                       "limits.max_connections exceeds the descriptor limit; lowered");
    else
        pier_log_begin(&l, PIER_LOG_INFO, "descriptor budget");
    pier_log_int(&l, "configured", cfg->max_connections);
    pier_log_int(&l, "effective", max);
    pier_log_int(&l, "rlimit_nofile", nofile);
    pier_log_int(&l, "fds_at_rest", srv->fds_at_rest);
    pier_log_int(&l, "reserved", reserved);
    pier_log_int(&l, "workers", srv->nworkers);
    pier_log_end(&l);
}
