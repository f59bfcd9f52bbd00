/* config_load — pier_config_load: defaults, then the YAML file, then PIER_* variables, then
 * --set flags, each through the option table's one parser (src/config.c); then the metrics
 * token file. Errors are collected, not fatal at the first one.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_private.h"

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
        if (pier__config_parse_value(cfg, &pier_options[i], pier_options[i].def, 0, "default",
                                     errors) != 0)
            nerrors++; /* a bad row in the table: caught by the unit tests */
    }
    if (file) {
        snprintf(cfg->source, sizeof cfg->source, "%s", file);
        nerrors += pier__config_load_yaml(cfg, file, errors);
    }
    for (size_t i = 0; i < pier_options_count; i++) {
        char name[96], where[128];
        pier_config_env_name(pier_options[i].key, name, sizeof name);
        const char *v = getenv(name);
        if (v == NULL)
            continue;
        snprintf(where, sizeof where, "environment %s", name);
        if (pier__config_parse_value(cfg, &pier_options[i], v, 0, where, errors) != 0)
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
        const struct pier_option *o = pier__config_find_option(key);
        if (o == NULL) {
            pier__config_unknown_key("--set", key, errors);
            nerrors++;
            continue;
        }
        if (pier__config_parse_value(cfg, o, eq + 1, 0, "--set", errors) != 0)
            nerrors++;
    }
    cfg->prefix_len = strlen(cfg->prefix);
    if (cfg->metrics_token_file[0] && load_token(cfg, errors) != 0)
        nerrors++;
    return nerrors ? -22 : 0;
}
