/* config — the option table and the loaders that walk it.
 *
 * pier_options[] is the single description of every setting. A value arrives as text from
 * one of four places — the row's default, a YAML scalar, a PIER_* variable, a --set flag —
 * and goes through the same pier__config_parse_value() whatever its origin, so "what is a valid
 * port" is written once. The YAML loader walks libyaml's event stream, turning nested mappings into
 * dotted keys ("listen:\n  port: 8000" is listen.port) and remembering where each scalar
 * stood, so a message can say file:line:column. Errors are collected, not fatal at the first
 * one: an operator fixing a file wants the whole list, like `nginx -t`.
 */
#include "pier/config.h"
#include "pier/net.h"

#include "config_private.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"json", "text", NULL};

static const char *validate_prefix(const char *v) {
    if (v[0] == '\0')
        return NULL; /* no prefix: routes live at the root */
    if (v[0] != '/')
        return "a path prefix starting with \"/\" (like \"/prod\"), or \"\" for none";
    size_t n = strlen(v);
    if (v[n - 1] == '/')
        return "a path prefix not ending with \"/\" (like \"/prod\")";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#' || c == '%' || c == '{' || c == '}')
            return "a path prefix of plain path characters (letters, digits, - _ . ~ /)";
        if (c == '/' && i > 0 && v[i - 1] == '/')
            return "a path prefix without empty segments (\"//\")";
    }
    return NULL;
}

static const char *validate_host(const char *v) {
    struct sockaddr_storage ss;
    socklen_t len;
    if (pier_net_addr(v, 0, &ss, &len) == 0)
        return NULL;
    return "an IPv4 or IPv6 address (like 127.0.0.1, 0.0.0.0 or ::)";
}

static const char *validate_unix_path(const char *v) {
    if (v[0] == '\0')
        return NULL; /* no Unix socket */
    if (v[0] != '/')
        return "an absolute path for the socket (like /run/pier/pier.sock), or \"\" for none";
    if (v[strlen(v) - 1] == '/')
        return "a socket path, not a directory (like /run/pier/pier.sock)";
    return NULL;
}

static const char *validate_mode(const char *v) {
    size_t n = strlen(v);
    int ok = n >= 3 && n <= 4 && (n == 3 || v[0] == '0');
    for (size_t i = 0; ok && i < n; i++)
        ok = v[i] >= '0' && v[i] <= '7';
    return ok ? NULL : "an octal permission mode like 0660 (owner, group, others)";
}

static const char *validate_group(const char *v) {
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return "a group name or number (like www-data or 33), or \"\" to keep pier's own";
    return NULL;
}

static const char *validate_name(const char *v) {
    if (v[0] == '\0')
        return "a non-empty name (like prod or staging)";
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return "a name of letters, digits, - _ and .";
    return NULL;
}

/* A row: key, type, field, default, bounds, choices, validator, help; OPT_RELOAD adds what a
 * reload does with it (flags, apply hook). Plain OPT rows apply on reload with no hook: the
 * workers read them from the config they switch to. */
#define OPT_RELOAD(k, t, field, def, mn, mx, ch, val, help, flags, apply)                          \
    {                                                                                              \
        k, t, offsetof(struct pier_config, field), sizeof(((struct pier_config *)0)->field), def,  \
            mn, mx, ch, val, help, flags, apply                                                    \
    }
#define OPT(k, t, field, def, mn, mx, ch, val, help)                                               \
    OPT_RELOAD(k, t, field, def, mn, mx, ch, val, help, 0, PIER_APPLY_NONE)

const struct pier_option pier_options[] = {
    OPT("environment", PIER_OPT_STRING, environment, "development", 0, 0, NULL, validate_name,
        "Name of this deployment, reported by /health, /version and metrics."),
    OPT_RELOAD("listen.host", PIER_OPT_STRING, listen_host, "127.0.0.1", 0, 0, NULL, validate_host,
               "Address to listen on (an IP literal; 0.0.0.0 for every IPv4 address).", 0,
               PIER_APPLY_LISTEN),
    OPT_RELOAD("listen.port", PIER_OPT_INT, listen_port, "8000", 0, 65535, NULL, NULL,
               "TCP port to listen on; 0 picks a free one (the listening log line says which).", 0,
               PIER_APPLY_LISTEN),
    OPT_RELOAD(
        "listen.unix", PIER_OPT_STRING, listen_unix, "", 0, 0, NULL, validate_unix_path,
        "Also listen on this Unix socket path (for a proxy on the same host); \"\" for none. "
        "TCP keeps listening for probes and scrapes.",
        PIER_OPT_RESTART, PIER_APPLY_NONE),
    OPT_RELOAD("listen.unix_mode", PIER_OPT_STRING, listen_unix_mode, "0660", 0, 0, NULL,
               validate_mode,
               "Permissions of the Unix socket; a proxy needs write access to connect.", 0,
               PIER_APPLY_UNIX_PERMS),
    OPT_RELOAD(
        "listen.unix_group", PIER_OPT_STRING, listen_unix_group, "", 0, 0, NULL, validate_group,
        "Group given to the Unix socket (pier must be a member); \"\" keeps the one it gets.", 0,
        PIER_APPLY_UNIX_PERMS),
    OPT("prefix", PIER_OPT_STRING, prefix, "", 0, 0, NULL, validate_prefix,
        "Path prefix every route lives under, like /prod; \"\" for none."),
    OPT_RELOAD("workers", PIER_OPT_WORKERS, workers, "1", 1, 256, NULL, NULL,
               "Event-loop threads, each with its own listener; auto = one per CPU.",
               PIER_OPT_RESTART, PIER_APPLY_NONE),
    OPT_RELOAD("log.level", PIER_OPT_ENUM, log_level, "info", 0, 0, log_levels, NULL,
               "Least severe level written: debug, info, warn or error.", 0, PIER_APPLY_LOG),
    OPT_RELOAD("log.format", PIER_OPT_ENUM, log_format, "json", 0, 0, log_formats, NULL,
               "json (one object per line) or text.", 0, PIER_APPLY_LOG),
    OPT("log.access", PIER_OPT_BOOL, log_access, "true", 0, 0, NULL, NULL,
        "Write one access-log line per request (at info level)."),
    OPT("metrics.enabled", PIER_OPT_BOOL, metrics_enabled, "true", 0, 0, NULL, NULL,
        "Serve Prometheus metrics at {prefix}/metrics."),
    OPT("metrics.token_file", PIER_OPT_STRING, metrics_token_file, "", 0, 0, NULL, NULL,
        "File holding a bearer token that {prefix}/metrics then requires (Authorization: Bearer); "
        "\"\" for none. Read at start and on every reload."),
    OPT_RELOAD("limits.max_connections", PIER_OPT_INT, max_connections, "10000", 1, 1000000, NULL,
               NULL,
               "Open client connections at most; past it new ones get 503 and are closed (bounded "
               "by the descriptor limit: see the log's descriptor budget).",
               0, PIER_APPLY_LIMITS),
    OPT("limits.max_header_bytes", PIER_OPT_INT, max_header_bytes, "69632", 1024, 1048576, NULL,
        NULL,
        "Request line plus headers at most, in bytes: a longer request line gets 414, more "
        "headers 431. 68 KiB: all that config/nginx forwards."),
    OPT("limits.max_body_bytes", PIER_OPT_INT, max_body_bytes, "1048576", 0, 1073741824, NULL, NULL,
        "Request body at most, in bytes; more gets 413."),
    OPT("timeouts.header_ms", PIER_OPT_INT, header_ms, "10000", 100, 3600000, NULL, NULL,
        "Time for a request's line and headers to arrive; then 408."),
    OPT("timeouts.request_ms", PIER_OPT_INT, request_ms, "30000", 100, 3600000, NULL, NULL,
        "Time for a whole request (headers and body) to arrive; then 408."),
    OPT("timeouts.idle_ms", PIER_OPT_INT, idle_ms, "75000", 100, 3600000, NULL, NULL,
        "An idle keep-alive connection is closed after this; keep it above the proxy's "
        "upstream keepalive_timeout."),
    OPT("shutdown.grace_ms", PIER_OPT_INT, grace_ms, "0", 0, 600000, NULL, NULL,
        "After SIGTERM, keep serving (health says fail) this long so load balancers notice."),
    OPT("shutdown.drain_ms", PIER_OPT_INT, drain_ms, "10000", 0, 600000, NULL, NULL,
        "Then wait at most this long for in-flight requests before cutting connections."),
};
const size_t pier_options_count = sizeof pier_options / sizeof pier_options[0];

void pier_config_env_name(const char *key, char *out, size_t size) {
    size_t n = (size_t)snprintf(out, size, "PIER_");
    for (const char *p = key; *p && n + 1 < size; p++)
        out[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    out[n < size ? n : size - 1] = '\0';
}

const struct pier_option *pier__config_find_option(const char *key) {
    for (size_t i = 0; i < pier_options_count; i++)
        if (strcmp(pier_options[i].key, key) == 0)
            return &pier_options[i];
    return NULL;
}

/* Is `key` a section ("listen", "log") that some option lives in? */
int pier__config_is_section(const char *key) {
    size_t n = strlen(key);
    for (size_t i = 0; i < pier_options_count; i++)
        if (strncmp(pier_options[i].key, key, n) == 0 && pier_options[i].key[n] == '.')
            return 1;
    return 0;
}

static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return SIZE_MAX;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The known key closest to `key`, if it is close enough to be a likely typo. */
static const char *suggest_key(const char *key) {
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < pier_options_count; i++) {
        size_t d = edit_distance(key, pier_options[i].key);
        /* also compare the last segment alone: "port" for "listen.port" */
        const char *dot = strrchr(pier_options[i].key, '.');
        if (dot && strchr(key, '.') == NULL) {
            size_t d2 = edit_distance(key, dot + 1);
            if (d2 < d)
                d = d2;
        }
        if (d < best_d) {
            best_d = d;
            best = pier_options[i].key;
        }
    }
    size_t limit = strlen(key) / 3 + 1;
    return best_d <= (limit > 3 ? 3 : limit) ? best : NULL;
}

void pier__config_describe_expected(const struct pier_option *o, pier_buf_t *out) {
    switch (o->type) {
    case PIER_OPT_INT:
        pier_buf_printf(out, "an integer from %lld to %lld", (long long)o->min, (long long)o->max);
        break;
    case PIER_OPT_WORKERS:
        pier_buf_printf(out, "\"auto\" or an integer from %lld to %lld", (long long)o->min,
                        (long long)o->max);
        break;
    case PIER_OPT_BOOL:
        pier_buf_puts(out, "true or false");
        break;
    case PIER_OPT_ENUM:
        pier_buf_puts(out, "one of ");
        for (int i = 0; o->choices[i]; i++)
            pier_buf_printf(out, "%s%s", i ? ", " : "", o->choices[i]);
        break;
    case PIER_OPT_STRING:
        pier_buf_printf(out, "a string of at most %zu characters", o->size - 1);
        break;
    }
}

/* Parse `text` for option `o` into cfg. On error, append "where: key: expected X, found Y". */
int pier__config_parse_value(struct pier_config *cfg, const struct pier_option *o, const char *text,
                             int quoted, const char *where, pier_buf_t *errors) {
    char *field = (char *)cfg + o->offset;
    int64_t *num = (int64_t *)(void *)field;
    const char *expected_extra = NULL;

    if (o->type == PIER_OPT_STRING) {
        size_t n = strlen(text);
        if (n >= o->size)
            goto bad;
        if (o->validate && (expected_extra = o->validate(text)) != NULL)
            goto bad;
        memcpy(field, text, n + 1);
        return 0;
    }
    if (quoted)
        goto bad; /* "8000" is a string in YAML: say so rather than guess */
    if (o->type == PIER_OPT_BOOL) {
        static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no",
                                                                               "off"};
        for (int i = 0; i < 3; i++) {
            if (strcasecmp(text, yes[i]) == 0) {
                *num = 1;
                return 0;
            }
            if (strcasecmp(text, no[i]) == 0) {
                *num = 0;
                return 0;
            }
        }
        goto bad;
    }
    if (o->type == PIER_OPT_ENUM) {
        for (int i = 0; o->choices[i]; i++) {
            if (strcasecmp(text, o->choices[i]) == 0) {
                *num = i;
                return 0;
            }
        }
        goto bad;
    }
    if (o->type == PIER_OPT_WORKERS && strcasecmp(text, "auto") == 0) {
        *num = 0;
        return 0;
    }
    {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (text[0] == '\0' || *end != '\0' || errno != 0 || v < o->min || v > o->max)
            goto bad;
        *num = v;
        return 0;
    }
bad:
    pier_buf_printf(errors, "%s: %s: expected ", where, o->key);
    if (expected_extra)
        pier_buf_puts(errors, expected_extra);
    else
        pier__config_describe_expected(o, errors);
    if (text[0] == '\0')
        pier_buf_puts(errors, ", found an empty value\n");
    else {
        pier_buf_puts(errors, ", found ");
        pier_buf_put_json_str(errors, text, strlen(text) > 80 ? 80 : strlen(text));
        pier_buf_putc(errors, '\n');
    }
    return -22;
}

void pier__config_unknown_key(const char *where, const char *key, pier_buf_t *errors) {
    const char *s = suggest_key(key);
    pier_buf_printf(errors, "%s: unknown key \"%s\"", where, key);
    if (s)
        pier_buf_printf(errors, " (did you mean \"%s\"?)", s);
    pier_buf_putc(errors, '\n');
}

const char *pier_config_default_path(char *out, size_t size) {
    const char *p = getenv("PIER_CONFIG");
    if (p && p[0]) {
        snprintf(out, size, "%s", p);
        return out;
    }
    const char *env = getenv("PIER_ENV");
    if (env && env[0]) {
        const char *dir = getenv("PIER_CONFIG_DIR");
        snprintf(out, size, "%s/%s.yaml", dir && dir[0] ? dir : "/etc/pier", env);
        return out;
    }
    return NULL;
}

int pier_config_workers(const struct pier_config *cfg) {
    if (cfg->workers > 0)
        return (int)cfg->workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

void pier_config_format_value(const struct pier_config *cfg, const struct pier_option *o,
                              pier_buf_t *out) {
    const char *field = (const char *)cfg + o->offset;
    int64_t num = 0;
    if (o->type != PIER_OPT_STRING)
        memcpy(&num, field, sizeof num);
    switch (o->type) {
    case PIER_OPT_STRING:
        pier_buf_puts(out, field);
        break;
    case PIER_OPT_BOOL:
        pier_buf_puts(out, num ? "true" : "false");
        break;
    case PIER_OPT_ENUM:
        pier_buf_puts(out, o->choices[num]);
        break;
    case PIER_OPT_WORKERS:
        if (num == 0) {
            pier_buf_puts(out, "auto");
            break;
        }
        /* fall through */
    case PIER_OPT_INT:
        pier_buf_printf(out, "%lld", (long long)num);
        break;
    }
}

static size_t value_size(const struct pier_option *o) {
    return o->type == PIER_OPT_STRING ? o->size : sizeof(int64_t);
}

int pier_config_differs(const struct pier_config *a, const struct pier_config *b,
                        const struct pier_option *o) {
    const char *fa = (const char *)a + o->offset, *fb = (const char *)b + o->offset;
    if (o->type == PIER_OPT_STRING)
        return strcmp(fa, fb) != 0;
    return memcmp(fa, fb, value_size(o)) != 0;
}

void pier_config_copy_value(struct pier_config *dst, const struct pier_config *src,
                            const struct pier_option *o) {
    memcpy((char *)dst + o->offset, (const char *)src + o->offset, value_size(o));
}

void pier_config_write_restart_keys(pier_buf_t *out) {
    int n = 0;
    for (size_t i = 0; i < pier_options_count; i++)
        if (pier_options[i].flags & PIER_OPT_RESTART)
            pier_buf_printf(out, "%s%s", n++ ? ", " : "", pier_options[i].key);
}

int pier_config_diff(const struct pier_config *a, const struct pier_config *b, pier_buf_t *out) {
    int n = 0;
    pier_buf_t va, vb;
    pier_buf_init(&va);
    pier_buf_init(&vb);
    for (size_t i = 0; i < pier_options_count; i++) {
        pier_buf_reset(&va);
        pier_buf_reset(&vb);
        pier_config_format_value(a, &pier_options[i], &va);
        pier_config_format_value(b, &pier_options[i], &vb);
        if (va.len == vb.len && (va.len == 0 || memcmp(va.data, vb.data, va.len) == 0))
            continue;
        pier_buf_printf(out, "%s%s: %.*s -> %.*s", n ? ", " : "", pier_options[i].key, (int)va.len,
                        va.data ? va.data : "", (int)vb.len, vb.data ? vb.data : "");
        n++;
    }
    pier_buf_free(&va);
    pier_buf_free(&vb);
    return n;
}

void pier_config_write_help(pier_buf_t *out) {
    for (size_t i = 0; i < pier_options_count; i++) {
        const struct pier_option *o = &pier_options[i];
        char env[96];
        pier_config_env_name(o->key, env, sizeof env);
        pier_buf_printf(out, "  %-26s default %s%s%s  (env %s)\n      %s\n", o->key,
                        o->type == PIER_OPT_STRING ? "\"" : "", o->def,
                        o->type == PIER_OPT_STRING ? "\"" : "", env, o->help);
        if (o->type == PIER_OPT_INT || o->type == PIER_OPT_WORKERS || o->type == PIER_OPT_ENUM) {
            pier_buf_puts(out, "      accepts ");
            pier__config_describe_expected(o, out);
            pier_buf_putc(out, '\n');
        }
        if (o->flags & PIER_OPT_RESTART)
            pier_buf_puts(out,
                          "      a reload keeps the running value: changing it needs a restart\n");
    }
}

void pier_config_write_markdown(pier_buf_t *out) {
    pier_buf_puts(out, "| key | default | accepts | environment | on reload | what it does |\n");
    pier_buf_puts(out, "|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < pier_options_count; i++) {
        const struct pier_option *o = &pier_options[i];
        char env[96];
        pier_config_env_name(o->key, env, sizeof env);
        pier_buf_printf(out, "| `%s` | `%s` | ", o->key, o->def[0] ? o->def : "\"\"");
        if (o->type == PIER_OPT_STRING && o->validate == validate_prefix)
            pier_buf_puts(out, "`\"\"` or a path like `/prod`");
        else if (o->type == PIER_OPT_STRING && o->validate == validate_host)
            pier_buf_puts(out, "an IP address");
        else if (o->type == PIER_OPT_STRING && o->validate == validate_unix_path)
            pier_buf_puts(out, "`\"\"` or an absolute path");
        else if (o->type == PIER_OPT_STRING && o->validate == validate_mode)
            pier_buf_puts(out, "an octal mode like `0660`");
        else if (o->type == PIER_OPT_STRING && o->validate == validate_group)
            pier_buf_puts(out, "`\"\"`, a group name or number");
        else
            pier__config_describe_expected(o, out);
        pier_buf_printf(out, " | `%s` | %s | %s |\n", env,
                        o->flags & PIER_OPT_RESTART ? "needs a restart" : "applies", o->help);
    }
}
