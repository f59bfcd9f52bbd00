/* config_yaml — the YAML side of the config loader (see src/config.c for the design).
 *
 * Walks libyaml's event stream, turning nested mappings into dotted keys ("listen:\n  port:
 * 8000" is listen.port), and hands each scalar, with the file:line:column it stood at, to the
 * option table's parser.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <yaml.h>

#include "config_private.h"

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
        const struct pier_option *o = pier__config_find_option(key);
        if (vev.type == YAML_MAPPING_START_EVENT) {
            if (o) {
                pier_buf_printf(w->errors, "%s: %s: expected ", where, key);
                pier__config_describe_expected(o, w->errors);
                pier_buf_puts(w->errors, ", found a mapping\n");
                w->nerrors++;
                yaml_event_delete(&vev);
                if (skip_collection(w) != 0)
                    return -1;
            } else if (!pier__config_is_section(key)) {
                pier__config_unknown_key(where, key, w->errors);
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
                pier__config_describe_expected(o, w->errors);
                pier_buf_printf(w->errors, ", found %s\n", event_kind(vev.type));
            } else if (pier__config_is_section(key)) {
                pier_buf_printf(w->errors, "%s: %s: expected a mapping of its keys, found %s\n",
                                vwhere, key, event_kind(vev.type));
            } else {
                pier__config_unknown_key(where, key, w->errors);
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
            if (pier__config_is_section(key))
                pier_buf_printf(w->errors, "%s: %s: expected a mapping of its keys, found %s\n",
                                vwhere, key, text[0] ? "a scalar" : "an empty value");
            else
                pier__config_unknown_key(where, key, w->errors);
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
                if (pier__config_parse_value(w->cfg, o, is_null ? "" : text, quoted, vwhere,
                                             w->errors) != 0)
                    w->nerrors++;
            }
        }
        yaml_event_delete(&vev);
    }
}

int pier__config_load_yaml(struct pier_config *cfg, const char *file, pier_buf_t *errors) {
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
