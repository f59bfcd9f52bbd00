/* config — the option table and the loaders that walk it.
 *
 * pier_options[] is the single description of every setting. A value arrives as text from
 * one of four places — the row's default, a YAML scalar, a PIER_* variable, a --set flag —
 * and goes through the same parse_value() whatever its origin, so "what is a valid port"
 * is written once. The YAML loader walks libyaml's event stream, turning nested mappings into
 * dotted keys ("listen:\n  port: 8000" is listen.port) and remembering where each scalar
 * stood, so a message can say file:line:column. Errors are collected, not fatal at the first
 * one: an operator fixing a file wants the whole list, like `nginx -t`.
 */
#include "pier/config.h"
#include "pier/net.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

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

static const struct pier_option *find_option(const char *key) {
    for (size_t i = 0; i < pier_options_count; i++)
        if (strcmp(pier_options[i].key, key) == 0)
            return &pier_options[i];
    return NULL;
}

/* Is `key` a section ("listen", "log") that some option lives in? */
static int is_section(const char *key) {
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

static void describe_expected(const struct pier_option *o, pier_buf_t *out) {
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
static int parse_value(struct pier_config *cfg, const struct pier_option *o, const char *text,
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
        describe_expected(o, errors);
    if (text[0] == '\0')
        pier_buf_puts(errors, ", found an empty value\n");
    else {
        pier_buf_puts(errors, ", found ");
        pier_buf_put_json_str(errors, text, strlen(text) > 80 ? 80 : strlen(text));
        pier_buf_putc(errors, '\n');
    }
    return -22;
}

static void unknown_key(const char *where, const char *key, pier_buf_t *errors) {
    const char *s = suggest_key(key);
    pier_buf_printf(errors, "%s: unknown key \"%s\"", where, key);
    if (s)
        pier_buf_printf(errors, " (did you mean \"%s\"?)", s);
    pier_buf_putc(errors, '\n');
}

/* ---- YAML ---------------------------------------------------------------------------- */

struct yaml_walk {
    yaml_parser_t parser;
    const char *file;
    struct pier_config *cfg;
    pier_buf_t *errors;
    int nerrors;
    unsigned char seen[64]; /* which options the file set, to catch duplicates */
    size_t seen_line[64];
};

static void yaml_where(struct yaml_walk *w, const yaml_mark_t *m, char *out, size_t size) {
    snprintf(out, size, "%s:%zu:%zu", w->file, m->line + 1, m->column + 1);
}

static const char *event_kind(yaml_event_type_t t) {
    switch (t) {
    case YAML_SEQUENCE_START_EVENT:
        return "a list";
    case YAML_MAPPING_START_EVENT:
        return "a mapping";
    case YAML_ALIAS_EVENT:
        return "an alias";
    default:
        return "a scalar";
    }
}

static int next_event(struct yaml_walk *w, yaml_event_t *ev) {
    if (yaml_parser_parse(&w->parser, ev))
        return 0;
    const yaml_mark_t *m = &w->parser.problem_mark;
    pier_buf_printf(w->errors, "%s:%zu:%zu: YAML syntax error: %s", w->file, m->line + 1,
                    m->column + 1, w->parser.problem ? w->parser.problem : "unknown problem");
    if (w->parser.context)
        pier_buf_printf(w->errors, " (%s at line %zu)", w->parser.context,
                        w->parser.context_mark.line + 1);
    pier_buf_putc(w->errors, '\n');
    w->nerrors++;
    return -1;
}

/* Skip the rest of a collection whose start event was just read. */
static int skip_collection(struct yaml_walk *w) {
    int depth = 1;
    while (depth > 0) {
        yaml_event_t ev;
        if (next_event(w, &ev) != 0)
            return -1;
        if (ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT)
            depth++;
        else if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT)
            depth--;
        yaml_event_delete(&ev);
    }
    return 0;
}

/* Walk a mapping whose MAPPING_START was just read; keys are prefixed with `section`. */
static int walk_mapping(struct yaml_walk *w, const char *section) {
    for (;;) {
        yaml_event_t kev, vev;
        char where[600], key[256];
        if (next_event(w, &kev) != 0)
            return -1;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            return 0;
        }
        yaml_where(w, &kev.start_mark, where, sizeof where);
        if (kev.type != YAML_SCALAR_EVENT) {
            pier_buf_printf(w->errors, "%s: expected a key, found %s\n", where,
                            event_kind(kev.type));
            w->nerrors++;
            int rc = kev.type == YAML_ALIAS_EVENT ? 0 : skip_collection(w);
            yaml_event_delete(&kev);
            if (rc != 0)
                return -1;
            /* and its value */
            if (next_event(w, &vev) != 0)
                return -1;
            rc = (vev.type == YAML_MAPPING_START_EVENT || vev.type == YAML_SEQUENCE_START_EVENT)
                     ? skip_collection(w)
                     : 0;
            yaml_event_delete(&vev);
            if (rc != 0)
                return -1;
            continue;
        }
        snprintf(key, sizeof key, "%s%s%s", section, section[0] ? "." : "",
                 (const char *)kev.data.scalar.value);
        yaml_event_delete(&kev);

        if (next_event(w, &vev) != 0)
            return -1;
        const struct pier_option *o = find_option(key);
        if (vev.type == YAML_MAPPING_START_EVENT) {
            if (o) {
                pier_buf_printf(w->errors, "%s: %s: expected ", where, key);
                describe_expected(o, w->errors);
                pier_buf_puts(w->errors, ", found a mapping\n");
                w->nerrors++;
                yaml_event_delete(&vev);
                if (skip_collection(w) != 0)
                    return -1;
            } else if (!is_section(key)) {
                unknown_key(where, key, w->errors);
                w->nerrors++;
                yaml_event_delete(&vev);
                if (skip_collection(w) != 0)
                    return -1;
            } else {
                yaml_event_delete(&vev);
                if (walk_mapping(w, key) != 0)
                    return -1;
            }
            continue;
        }
        if (vev.type != YAML_SCALAR_EVENT) {
            char vwhere[600];
            yaml_where(w, &vev.start_mark, vwhere, sizeof vwhere);
            if (o) {
                pier_buf_printf(w->errors, "%s: %s: expected ", vwhere, key);
                describe_expected(o, w->errors);
                pier_buf_printf(w->errors, ", found %s\n", event_kind(vev.type));
            } else if (is_section(key)) {
                pier_buf_printf(w->errors, "%s: %s: expected a mapping of its keys, found %s\n",
                                vwhere, key, event_kind(vev.type));
            } else {
                unknown_key(where, key, w->errors);
            }
            w->nerrors++;
            int rc = vev.type == YAML_SEQUENCE_START_EVENT ? skip_collection(w) : 0;
            yaml_event_delete(&vev);
            if (rc != 0)
                return -1;
            continue;
        }
        char vwhere[600];
        yaml_where(w, &vev.start_mark, vwhere, sizeof vwhere);
        const char *text = (const char *)vev.data.scalar.value;
        int quoted = vev.data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                     vev.data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
        if (o == NULL) {
            if (is_section(key))
                pier_buf_printf(w->errors, "%s: %s: expected a mapping of its keys, found %s\n",
                                vwhere, key, text[0] ? "a scalar" : "an empty value");
            else
                unknown_key(where, key, w->errors);
            w->nerrors++;
        } else {
            size_t idx = (size_t)(o - pier_options);
            if (w->seen[idx]) {
                pier_buf_printf(w->errors, "%s: %s: set twice (first at line %zu)\n", where, key,
                                w->seen_line[idx]);
                w->nerrors++;
            } else {
                w->seen[idx] = 1;
                w->seen_line[idx] = vev.start_mark.line + 1;
                /* "~", "null" and an empty plain scalar mean no value in YAML */
                int is_null = !quoted && (strcmp(text, "~") == 0 || strcmp(text, "null") == 0);
                if (parse_value(w->cfg, o, is_null ? "" : text, quoted, vwhere, w->errors) != 0)
                    w->nerrors++;
            }
        }
        yaml_event_delete(&vev);
    }
}

static int load_yaml(struct pier_config *cfg, const char *file, pier_buf_t *errors) {
    FILE *fp = fopen(file, "rb");
    if (fp == NULL) {
        pier_buf_printf(errors, "%s: cannot open: %s\n", file, strerror(errno));
        return 1;
    }
    struct yaml_walk w;
    memset(&w, 0, sizeof w);
    w.file = file;
    w.cfg = cfg;
    w.errors = errors;
    if (!yaml_parser_initialize(&w.parser)) {
        fclose(fp);
        pier_buf_printf(errors, "%s: cannot start the YAML parser\n", file);
        return 1;
    }
    yaml_parser_set_input_file(&w.parser, fp);

    yaml_event_t ev;
    int documents = 0;
    int done = 0;
    while (!done) {
        if (next_event(&w, &ev) != 0)
            break;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            if (documents == 0) {
                pier_buf_printf(errors, "%s: the file is empty: expected a mapping of settings\n",
                                file);
                w.nerrors++;
            }
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++documents > 1) {
                pier_buf_printf(errors, "%s:%zu:%zu: expected one YAML document, found another\n",
                                file, ev.start_mark.line + 1, ev.start_mark.column + 1);
                w.nerrors++;
                done = 1;
            }
            break;
        case YAML_MAPPING_START_EVENT:
            yaml_event_delete(&ev);
            if (walk_mapping(&w, "") != 0)
                done = 1;
            continue;
        case YAML_SCALAR_EVENT:
            if (ev.data.scalar.length == 0 && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
                pier_buf_printf(errors, "%s: the file is empty: expected a mapping of settings\n",
                                file);
            } else {
                pier_buf_printf(errors,
                                "%s:%zu:%zu: expected a mapping of settings, found a "
                                "scalar\n",
                                file, ev.start_mark.line + 1, ev.start_mark.column + 1);
            }
            w.nerrors++;
            break;
        case YAML_SEQUENCE_START_EVENT:
            pier_buf_printf(errors, "%s:%zu:%zu: expected a mapping of settings, found a list\n",
                            file, ev.start_mark.line + 1, ev.start_mark.column + 1);
            w.nerrors++;
            yaml_event_delete(&ev);
            if (skip_collection(&w) != 0)
                done = 1;
            continue;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&w.parser);
    fclose(fp);
    return w.nerrors;
}

/* ---- the loader ---------------------------------------------------------------------- */

/* metrics.token_file: the secret itself never sits in the config, only the path of a file
 * (a mounted Docker or Kubernetes secret). Read it whole now, so a missing or bad file is a
 * config error (at start, --check-config, or a reload that keeps the old config), never a
 * scrape that fails later. One trailing newline (or CRLF) is dropped, as `echo >file` adds it;
 * the token is sent in a header, so it must be visible ASCII without spaces. */
static int load_token(struct pier_config *cfg, pier_buf_t *errors) {
    const char *file = cfg->metrics_token_file;
    const char *why = NULL;
    char buf[sizeof cfg->metrics_token + 1];
    size_t n = 0;
    struct stat st;
    FILE *fp = fopen(file, "rb");
    if (fp == NULL || fstat(fileno(fp), &st) != 0) {
        pier_buf_printf(errors, "metrics.token_file: cannot read %s: %s\n", file, strerror(errno));
        if (fp)
            fclose(fp);
        return -1;
    }
    if (!S_ISREG(st.st_mode))
        why = "is not a regular file";
    else {
        n = fread(buf, 1, sizeof buf, fp);
        if (ferror(fp))
            why = "cannot be read";
    }
    fclose(fp);
    if (why == NULL && n > 0 && buf[n - 1] == '\n')
        n -= 1 + (n > 1 && buf[n - 2] == '\r');
    if (why == NULL && n == 0)
        why = "is empty: expected a token";
    if (why == NULL && n >= sizeof cfg->metrics_token)
        why = "holds more than 255 bytes: expected a token";
    for (size_t i = 0; why == NULL && i < n; i++)
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f)
            why = "holds a space or control character: expected visible ASCII";
    if (why) {
        pier_buf_printf(errors, "metrics.token_file: %s %s\n", file, why);
        return -1;
    }
    memcpy(cfg->metrics_token, buf, n);
    cfg->metrics_token[n] = '\0';
    cfg->metrics_token_len = n;
    return 0;
}

int pier_config_load(struct pier_config *cfg, const char *file, const char *const *sets,
                     size_t nsets, pier_buf_t *errors) {
    int nerrors = 0;
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < pier_options_count; i++) {
        if (parse_value(cfg, &pier_options[i], pier_options[i].def, 0, "default", errors) != 0)
            nerrors++; /* a bad row in the table: caught by the unit tests */
    }
    if (file) {
        snprintf(cfg->source, sizeof cfg->source, "%s", file);
        nerrors += load_yaml(cfg, file, errors);
    }
    for (size_t i = 0; i < pier_options_count; i++) {
        char name[96], where[128];
        pier_config_env_name(pier_options[i].key, name, sizeof name);
        const char *v = getenv(name);
        if (v == NULL)
            continue;
        snprintf(where, sizeof where, "environment %s", name);
        if (parse_value(cfg, &pier_options[i], v, 0, where, errors) != 0)
            nerrors++;
    }
    for (size_t i = 0; i < nsets; i++) {
        const char *eq = strchr(sets[i], '=');
        char key[128];
        if (eq == NULL || eq == sets[i] || (size_t)(eq - sets[i]) >= sizeof key) {
            pier_buf_printf(errors, "--set %s: expected KEY=VALUE\n", sets[i]);
            nerrors++;
            continue;
        }
        memcpy(key, sets[i], (size_t)(eq - sets[i]));
        key[eq - sets[i]] = '\0';
        const struct pier_option *o = find_option(key);
        if (o == NULL) {
            unknown_key("--set", key, errors);
            nerrors++;
            continue;
        }
        if (parse_value(cfg, o, eq + 1, 0, "--set", errors) != 0)
            nerrors++;
    }
    cfg->prefix_len = strlen(cfg->prefix);
    if (cfg->metrics_token_file[0] && load_token(cfg, errors) != 0)
        nerrors++;
    return nerrors ? -22 : 0;
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
            describe_expected(o, out);
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
            describe_expected(o, out);
        pier_buf_printf(out, " | `%s` | %s | %s |\n", env,
                        o->flags & PIER_OPT_RESTART ? "needs a restart" : "applies", o->help);
    }
}
