/* listen — the listening sockets; see src/listen.c. Private to src/ (pier__ names). */
#ifndef PIER__LISTEN_H
#define PIER__LISTEN_H

#include <stddef.h>
#include <sys/types.h>

#include "pier/config.h"

/* The socket file's mode and group. Both are set through a descriptor opened on the path
 * without following links and checked to be the very file pier bound (device and inode taken
 * right after bind), so a file put in its place by someone else is never changed. */
struct pier__unix_perms {
    mode_t mode;
    gid_t gid;
};

/* Bind and listen one socket on host:port; each of the n workers gets a duplicate (fds[]).
 * *bound_port says the port (port 0: the kernel's pick). 0, or a negative errno with err. */
int pier__listen_tcp(const char *host, int port, int n, int *fds, int *bound_port, char *err,
                     size_t errsize);
/* listen.unix_mode and listen.unix_group as numbers; (gid_t)-1: keep the group. */
int pier__unix_mode_group(const struct pier_config *cfg, mode_t *mode, gid_t *gid, char *err,
                          size_t errsize);
/* Give pier's socket file (path, dev, ino) mode and group: both or neither; *was gets what it
 * had when not NULL; `group` names the group in messages (NULL: its number). */
int pier__unix_set_perms(const char *path, dev_t dev, ino_t ino, mode_t mode, gid_t gid,
                         const char *group, struct pier__unix_perms *was, char *err,
                         size_t errsize);
/* Bind, set the permissions of and listen on cfg->listen_unix (a stale file is replaced). */
int pier__listen_unix(const struct pier_config *cfg, int *out, dev_t *dev, ino_t *ino, char *err,
                      size_t errsize);

#endif
