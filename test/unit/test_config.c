/* Unit tests for the config loader: defaults, every error case, precedence. */
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "pier/config.h"

static char tmpdir[] = "/tmp/pier-unit-XXXXXX";

static const char *write_file(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

/* Load `text`; return the error text (static) or NULL when it loaded. */
static const char *load(struct pier_config *cfg, const char *text) {
    static char errs[4096];
    pier_buf_t e;
    pier_buf_init(&e);
    int rc = pier_config_load(cfg, text ? write_file("c.yaml", text) : NULL, NULL, 0, &e);
    snprintf(errs, sizeof errs, "%.*s", (int)e.len, e.data ? e.data : "");
    pier_buf_free(&e);
    return rc == 0 ? NULL : errs;
}

/* Load defaults plus one --set; return the error text (static) or NULL. */
static const char *load_set(struct pier_config *cfg, const char *set) {
    static char errs[4096];
    pier_buf_t e;
    pier_buf_init(&e);
    int rc = pier_config_load(cfg, NULL, &set, 1, &e);
    snprintf(errs, sizeof errs, "%.*s", (int)e.len, e.data ? e.data : "");
    pier_buf_free(&e);
    return rc == 0 ? NULL : errs;
}

static const char *value_text(const struct pier_config *cfg, const struct pier_option *o) {
    static char text[600];
    pier_buf_t b;
    pier_buf_init(&b);
    pier_config_format_value(cfg, o, &b);
    snprintf(text, sizeof text, "%.*s", (int)b.len, b.data ? b.data : "");
    pier_buf_free(&b);
    return text;
}

/* Every row of the option table, as the loader treats it: its default is what a config
 * without the key gets (and reads back the same), every value inside the bounds or among the
 * choices loads and reads back, every value outside is refused with a message naming the
 * key. */
static void test_every_option(void) {
    struct pier_config d, c;
    CHECK(load(&d, NULL) == NULL);
    for (size_t i = 0; i < pier_options_count; i++) {
        const struct pier_option *o = &pier_options[i];
        char set[600];
        char def[600];
        snprintf(def, sizeof def, "%s", value_text(&d, o));
        if (strcmp(def, o->def) != 0 && !(o->type == PIER_OPT_WORKERS))
            fprintf(stderr, "%s: default %s reads back as %s\n", o->key, o->def, def);
        CHECK(o->type == PIER_OPT_WORKERS || strcmp(def, o->def) == 0);
        snprintf(set, sizeof set, "%s=%s", o->key, o->def);
        CHECK(load_set(&c, set) == NULL);
        CHECK(strcmp(value_text(&c, o), def) == 0);
        switch (o->type) {
        case PIER_OPT_INT:
        case PIER_OPT_WORKERS: {
            const long long in[] = {o->min, o->max}, out[] = {o->min - 1, o->max + 1};
            for (int k = 0; k < 2; k++) {
                snprintf(set, sizeof set, "%s=%lld", o->key, in[k]);
                CHECK(load_set(&c, set) == NULL);
                char want[32];
                snprintf(want, sizeof want, "%lld", in[k]);
                CHECK(strcmp(value_text(&c, o), want) == 0);
                snprintf(set, sizeof set, "%s=%lld", o->key, out[k]);
                CHECK_STR_CONTAINS(load_set(&c, set), o->key);
            }
            snprintf(set, sizeof set, "%s=12abc", o->key);
            CHECK_STR_CONTAINS(load_set(&c, set), "found \"12abc\"");
            break;
        }
        case PIER_OPT_ENUM:
            for (const char *const *ch = o->choices; *ch; ch++) {
                snprintf(set, sizeof set, "%s=%s", o->key, *ch);
                CHECK(load_set(&c, set) == NULL);
                CHECK(strcmp(value_text(&c, o), *ch) == 0);
            }
            snprintf(set, sizeof set, "%s=none-of-them", o->key);
            CHECK_STR_CONTAINS(load_set(&c, set), "expected one of");
            break;
        case PIER_OPT_BOOL:
            snprintf(set, sizeof set, "%s=false", o->key);
            CHECK(load_set(&c, set) == NULL);
            CHECK(strcmp(value_text(&c, o), "false") == 0);
            snprintf(set, sizeof set, "%s=maybe", o->key);
            CHECK_STR_CONTAINS(load_set(&c, set), o->key);
            break;
        case PIER_OPT_STRING:
            break; /* each string's validator is checked in test_errors */
        }
    }
    /* workers: auto is the CPU count */
    CHECK(load_set(&c, "workers=auto") == NULL);
    CHECK(c.workers == 0 && pier_config_workers(&c) >= 1);
}

static void test_file_values(void) {
    struct pier_config c;
    CHECK(load(&c, "listen:\n  port: 9001\n  host: \"::1\"\nprefix: /staging\nlog:\n  level: "
                   "debug\n  format: text\nworkers: auto\nlog_ignored_comment: 1\n") != NULL);
    CHECK(load(&c, "listen:\n  port: 9001\n  host: \"::1\"\nprefix: /staging\nlog:\n  level: "
                   "DEBUG\n  format: text\nworkers: auto\n") == NULL);
    CHECK(c.listen_port == 9001);
    CHECK(strcmp(c.listen_host, "::1") == 0);
    CHECK(strcmp(c.prefix, "/staging") == 0 && c.prefix_len == 8);
    CHECK(c.log_level == PIER_LOG_DEBUG);
    CHECK(c.log_format == PIER_LOG_FORMAT_TEXT);
    CHECK(c.workers == 0 && pier_config_workers(&c) >= 1);
}

static void test_errors(void) {
    struct pier_config c;
    CHECK_STR_CONTAINS(load(&c, "listen:\n  prot: 1\n"),
                       "c.yaml:2:3: unknown key \"listen.prot\" (did you mean \"listen.port\"?)");
    CHECK_STR_CONTAINS(
        load(&c, "listen:\n  port: 65536\n"),
        "c.yaml:2:9: listen.port: expected an integer from 0 to 65535, found \"65536\"");
    CHECK_STR_CONTAINS(load(&c, "listen:\n  port: 12abc\n"), "found \"12abc\"");
    CHECK_STR_CONTAINS(load(&c, "listen:\n  port:\n"), "found an empty value");
    CHECK_STR_CONTAINS(load(&c, "prefix: staging\n"), "starting with \"/\"");
    CHECK_STR_CONTAINS(load(&c, "prefix: /staging/\n"), "not ending with \"/\"");
    CHECK_STR_CONTAINS(load(&c, "prefix: /a//b\n"), "without empty segments");
    CHECK_STR_CONTAINS(load(&c, "listen:\n  host: example.com\n"), "an IPv4 or IPv6 address");
    CHECK_STR_CONTAINS(load(&c, "log:\n  level: loud\n"),
                       "expected one of debug, info, warn, error");
    CHECK_STR_CONTAINS(load(&c, "workers: many\n"), "\"auto\" or an integer from 1 to 256");
    CHECK_STR_CONTAINS(load(&c, "metrics: yes\n"), "metrics: expected a mapping of its keys");
    CHECK_STR_CONTAINS(load(&c, ""), "the file is empty");
    CHECK_STR_CONTAINS(load(&c, "just a string\n"),
                       "expected a mapping of settings, found a scalar");
    CHECK_STR_CONTAINS(load(&c, "a: [1\n"), "YAML syntax error");
    CHECK_STR_CONTAINS(load(&c, "prefix: /a\n---\nprefix: /b\n"), "expected one YAML document");
    CHECK_STR_CONTAINS(load(&c, "listen:\n  port: 1\nlisten:\n  port: 2\n"), "set twice");
    CHECK_STR_CONTAINS(load(&c, "x: &a 1\ny: *a\n"), "unknown key");
    /* several errors are all reported */
    const char *e = load(&c, "listen:\n  port: x\nprefix: y\n");
    CHECK_STR_CONTAINS(e, "listen.port");
    CHECK_STR_CONTAINS(e, "prefix");
}

static void test_precedence(void) {
    struct pier_config c;
    pier_buf_t e;
    pier_buf_init(&e);
    const char *f = write_file("p.yaml", "listen:\n  port: 1000\nprefix: /file\n");
    setenv("PIER_LISTEN_PORT", "2000", 1);
    CHECK(pier_config_load(&c, f, NULL, 0, &e) == 0);
    CHECK(c.listen_port == 2000);
    CHECK(strcmp(c.prefix, "/file") == 0);
    const char *sets[] = {"listen.port=3000", "log.level=warn"};
    CHECK(pier_config_load(&c, f, sets, 2, &e) == 0);
    CHECK(c.listen_port == 3000);
    CHECK(c.log_level == PIER_LOG_WARN);
    const char *bad[] = {"listen.port"};
    CHECK(pier_config_load(&c, f, bad, 1, &e) != 0);
    CHECK_STR_CONTAINS(e.data, "--set listen.port: expected KEY=VALUE");
    unsetenv("PIER_LISTEN_PORT");
    pier_buf_free(&e);
}

static void test_env_name_and_diff(void) {
    char name[64];
    pier_config_env_name("timeouts.idle_ms", name, sizeof name);
    CHECK(strcmp(name, "PIER_TIMEOUTS_IDLE_MS") == 0);
    struct pier_config a, b;
    CHECK(load(&a, "prefix: /a\n") == NULL);
    CHECK(load(&b, "prefix: /b\nlog:\n  level: debug\n") == NULL);
    pier_buf_t d;
    pier_buf_init(&d);
    CHECK(pier_config_diff(&a, &b, &d) == 2);
    pier_buf_putc(&d, '\0');
    CHECK_STR_CONTAINS(d.data, "prefix: /a -> /b");
    CHECK_STR_CONTAINS(d.data, "log.level: info -> debug");
    pier_buf_free(&d);
}

static void test_default_path(void) {
    char buf[512];
    unsetenv("PIER_CONFIG");
    unsetenv("PIER_ENV");
    CHECK(pier_config_default_path(buf, sizeof buf) == NULL);
    setenv("PIER_ENV", "staging", 1);
    CHECK(strcmp(pier_config_default_path(buf, sizeof buf), "/etc/pier/staging.yaml") == 0);
    setenv("PIER_CONFIG_DIR", "/cfg", 1);
    CHECK(strcmp(pier_config_default_path(buf, sizeof buf), "/cfg/staging.yaml") == 0);
    setenv("PIER_CONFIG", "/x.yaml", 1);
    CHECK(strcmp(pier_config_default_path(buf, sizeof buf), "/x.yaml") == 0);
    unsetenv("PIER_CONFIG");
    unsetenv("PIER_ENV");
    unsetenv("PIER_CONFIG_DIR");
}

int main(void) {
    if (mkdtemp(tmpdir) == NULL)
        return 2;
    test_every_option();
    test_file_values();
    test_errors();
    test_precedence();
    test_env_name_and_diff();
    test_default_path();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_report("config");
}
