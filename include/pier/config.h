/* config — pier's settings: one option table, loaded from YAML, environment and command line.
 *
 * Every option is one row of pier_options[] (src/config.c): key, type, default, bounds, help.
 * The YAML loader, the PIER_* environment overrides, --set, --check-config, --help and the
 * config table in docs/configuration.md all walk that table, so adding an option is one row plus
 * one field. Values are applied in the order defaults < file < environment < command line, and
 * every error names where the value came from (file:line:column, variable or flag), the key, what
 * was expected and what was found.
 */
#ifndef PIER_CONFIG_H
#define PIER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "pier/log.h"
#include "pier/buf.h"

struct pier_config {
    char environment[32];
    char listen_host[64];
    int64_t listen_port;
    char listen_unix[108]; /* sockaddr_un.sun_path: "" = no Unix socket */
    char listen_unix_mode[8];
    char listen_unix_group[64];
    char prefix[128];
    int64_t workers; /* 0 = auto: one per CPU */
    int64_t log_level;
    int64_t log_format;
    int64_t log_access;
    int64_t metrics_enabled;
    char metrics_token_file[256];
    int64_t max_connections;
    int64_t max_header_bytes;
    int64_t max_body_bytes;
    int64_t header_ms;
    int64_t request_ms;
    int64_t idle_ms;
    int64_t grace_ms;
    int64_t drain_ms;
    /* Derived, not options. */
    size_t prefix_len;
    /* The bearer token read from metrics_token_file when the config is loaded ("" for none). */
    char metrics_token[256];
    size_t metrics_token_len;
    char source[512]; /* the file read, or "" for defaults only */
};

enum pier_opt_type {
    PIER_OPT_INT,
    PIER_OPT_BOOL,
    PIER_OPT_ENUM,
    PIER_OPT_STRING,
    PIER_OPT_WORKERS
};

/* What a reload does with an option (redis' standardConfig flags). */
enum pier_opt_flags {
    PIER_OPT_RESTART = 1 << 0, /* a reload keeps the running value and says a restart is needed */
};

/* The hook that puts a changed option into effect on reload (src/server.c maps each to its
 * function). NONE: workers read it from the config they switch to; nothing else to do. */
enum pier_apply {
    PIER_APPLY_NONE,
    PIER_APPLY_LISTEN,     /* open the new listeners before the old ones close */
    PIER_APPLY_LOG,        /* the logger's level and format */
    PIER_APPLY_UNIX_PERMS, /* chmod/chgrp the listen.unix socket in place */
    PIER_APPLY_LIMITS,     /* max_connections against the descriptor budget */
    PIER_APPLY_COUNT
};

struct pier_option {
    const char *key;
    enum pier_opt_type type;
    size_t offset;
    size_t size; /* strings: the field's size */
    const char *def;
    int64_t min, max;
    const char *const *choices; /* enums: NULL-terminated */
    /* strings: extra check; returns NULL when fine, else what was expected */
    const char *(*validate)(const char *value);
    const char *help;
    unsigned flags;        /* enum pier_opt_flags */
    enum pier_apply apply; /* what a reload runs when the value changed */
};

extern const struct pier_option pier_options[];
extern const size_t pier_options_count;

/* Load defaults, then `file` (may be NULL), then PIER_* variables from the environment, then
 * `sets` ("key=value" strings). Returns 0, or -22 (EINVAL) with one message per line appended
 * to `errors` (every error found, not just the first). */
int pier_config_load(struct pier_config *cfg, const char *file, const char *const *sets,
                     size_t nsets, pier_buf_t *errors);

/* The file pier should read when none is given: PIER_CONFIG, else PIER_ENV resolved in
 * PIER_CONFIG_DIR (default /etc/pier), else NULL (defaults only). `out` must hold PATH_MAX. */
const char *pier_config_default_path(char *out, size_t size);

/* Workers to start: the configured number, or the CPU count for auto. */
int pier_config_workers(const struct pier_config *cfg);

/* The environment variable of an option: PIER_ + key upper-cased, dots as underscores. */
void pier_config_env_name(const char *key, char *out, size_t size);
/* Write an option's current value as text. */
void pier_config_format_value(const struct pier_config *cfg, const struct pier_option *opt,
                              pier_buf_t *out);
/* Append "key: old -> new" for each option that differs, comma-separated. Returns how many. */
int pier_config_diff(const struct pier_config *a, const struct pier_config *b, pier_buf_t *out);
/* 1 when option `o` differs between a and b. */
int pier_config_differs(const struct pier_config *a, const struct pier_config *b,
                        const struct pier_option *o);
/* Copy option `o`'s value from src to dst. */
void pier_config_copy_value(struct pier_config *dst, const struct pier_config *src,
                            const struct pier_option *o);
/* The keys a reload cannot change (PIER_OPT_RESTART), comma-separated. */
void pier_config_write_restart_keys(pier_buf_t *out);
/* Help text (for --help) and the markdown table of docs/configuration.md, both from the option
 * table. */
void pier_config_write_help(pier_buf_t *out);
void pier_config_write_markdown(pier_buf_t *out);

#endif
