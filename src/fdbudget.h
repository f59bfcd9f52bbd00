/* fdbudget — descriptors: counted, their limit raised, the connection budget; see
 * src/fdbudget.c. Private to src/ (metrics.c counts descriptors too). */
#ifndef PIER__FDBUDGET_H
#define PIER__FDBUDGET_H

#include <stdint.h>

struct pier__server;
struct pier_config;

/* Descriptors open now, counted in /proc/self/fd (-1 if it cannot be read). */
int pier_fd_count(void);
/* Raise the soft descriptor limit to the hard one; return it (INT32_MAX for unlimited). */
int64_t pier_fd_raise_limit(void);
/* Bound max_connections by what the descriptor limit leaves; logged at start and on change. */
void pier__fd_budget_apply(struct pier__server *srv, const struct pier_config *cfg, int start);

#endif
