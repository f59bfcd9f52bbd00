/* main — the command line: run, check a config, probe, print help and version.
 * Everything a command does lives in its module; this file only parses argv. */
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pier/build_info.h"
#include "pier/config.h"
#include "pier/probe.h"
#include "pier/server.h"

static void usage(FILE *out) {
    pier_buf_t b;
    pier_buf_init(&b);
    pier_config_write_help(&b);
    fprintf(out,
            "pier %s — a small, fast HTTP service\n\n"
            "Usage:\n"
            "  pier [--config FILE] [--set KEY=VALUE]...   run the service\n"
            "  pier --check-config FILE [--set KEY=VALUE]... validate a config and exit\n"
            "  pier --probe [URL] [--timeout-ms N]          GET URL (default: the active config's\n"
            "                                               /health/ready); exit 0 on 2xx, else 1\n"
            "  pier --version | --help\n\n"
            "Which config file: --config, else $PIER_CONFIG, else $PIER_ENV.yaml in\n"
            "$PIER_CONFIG_DIR (default /etc/pier), else the defaults below.\n"
            "Values apply in the order: defaults < file < PIER_* environment < --set.\n\n"
            "Config keys (YAML nesting: listen.port is `listen:` then `  port:`):\n%.*s\n"
            "Signals: SIGTERM/SIGINT drain and exit (a second one exits at once); SIGHUP\n"
            "re-reads the config file and keeps the old config if the new one is invalid.\n",
            PIER_VERSION, (int)b.len, b.data ? b.data : "");
    pier_buf_free(&b);
}

static void print_errors(const char *file, const pier_buf_t *errors) {
    fprintf(stderr, "%.*s", (int)errors->len, errors->data ? errors->data : "");
    size_t n = 0;
    for (size_t i = 0; i < errors->len; i++)
        n += errors->data[i] == '\n';
    fprintf(stderr, "pier: %s: %zu error%s; not started\n", file ? file : "configuration", n,
            n == 1 ? "" : "s");
}

static int run(int argc, char **argv, const char **sets);

int main(int argc, char **argv) {
    pier_server_hold_signals();
    /* --set values are collected here; one owner, freed on every path */
    const char **sets = calloc((size_t)argc, sizeof *sets);
    if (sets == NULL)
        return 1;
    int rc = run(argc, argv, sets);
    free(sets);
    return rc;
}

static int run(int argc, char **argv, const char **sets) {
    const char *config = NULL, *check = NULL, *probe_url = NULL;
    int probe = 0, probe_timeout = 2000;
    size_t nsets = 0;
    char pathbuf[PATH_MAX];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = NULL;
#define TAKES(name)                                                                                \
    (strcmp(a, name) == 0                                                                          \
         ? (i + 1 < argc ? (v = argv[++i], 1) : (missing = name, 0))                               \
         : (strncmp(a, name "=", sizeof(name)) == 0 ? (v = a + sizeof(name), 1) : 0))
        const char *missing = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("pier %s (commit %s, built %s)\n", PIER_VERSION, PIER_COMMIT, PIER_BUILD_TIME);
            return 0;
        } else if (strcmp(a, "--config-table") == 0) {
            pier_buf_t b;
            pier_buf_init(&b);
            pier_config_write_markdown(&b);
            fwrite(b.data, 1, b.len, stdout);
            pier_buf_free(&b);
            return 0;
        } else if (TAKES("--config") || (missing == NULL && TAKES("-c"))) {
            config = v;
        } else if (missing == NULL && TAKES("--check-config")) {
            check = v;
        } else if (missing == NULL && TAKES("--set")) {
            sets[nsets++] = v;
        } else if (missing == NULL && TAKES("--timeout-ms")) {
            probe_timeout = atoi(v);
        } else if (missing == NULL && strcmp(a, "--probe") == 0) {
            probe = 1;
            if (i + 1 < argc && strncmp(argv[i + 1], "http", 4) == 0)
                probe_url = argv[++i];
        } else {
            if (missing)
                fprintf(stderr, "pier: %s needs a value\n", missing);
            else
                fprintf(stderr, "pier: unknown argument %s (see pier --help)\n", a);
            return 2;
        }
#undef TAKES
    }

    pier_buf_t errors;
    pier_buf_init(&errors);
    struct pier_config *cfg = malloc(sizeof *cfg);
    if (cfg == NULL)
        return 1;

    if (check) {
        int bad = pier_config_load(cfg, check, sets, nsets, &errors) != 0;
        if (bad)
            print_errors(check, &errors);
        pier_buf_free(&errors);
        if (bad) {
            free(cfg);
            return 1;
        }
        printf("pier: %s is valid: environment %s, listen %s:%lld%s%s, prefix \"%s\", log %s, "
               "workers %d\n",
               check, cfg->environment, cfg->listen_host, (long long)cfg->listen_port,
               cfg->listen_unix[0] ? " and unix:" : "", cfg->listen_unix, cfg->prefix,
               pier_log_level_name((int)cfg->log_level), pier_config_workers(cfg));
        pier_buf_t keys;
        pier_buf_init(&keys);
        pier_config_write_restart_keys(&keys);
        printf("pier: a reload applies every key but: %.*s (needs a restart)\n", (int)keys.len,
               keys.data ? keys.data : "");
        pier_buf_free(&keys);
        free(cfg);
        return 0;
    }

    if (config == NULL)
        config = pier_config_default_path(pathbuf, sizeof pathbuf);

    if (probe) {
        char url[1200], why[1400];
        if (probe_url == NULL) {
            if (pier_config_load(cfg, config, sets, nsets, &errors) != 0) {
                print_errors(config, &errors);
                pier_buf_free(&errors);
                free(cfg);
                return 1;
            }
            const char *host = cfg->listen_host;
            if (strcmp(host, "0.0.0.0") == 0)
                host = "127.0.0.1";
            else if (strcmp(host, "::") == 0)
                host = "::1";
            int v6 = strchr(host, ':') != NULL;
            snprintf(url, sizeof url, "http://%s%s%s:%lld%s/health/ready", v6 ? "[" : "", host,
                     v6 ? "]" : "", (long long)cfg->listen_port, cfg->prefix);
            probe_url = url;
        }
        int rc = pier_probe(probe_url, probe_timeout > 0 ? probe_timeout : 2000, why, sizeof why);
        fprintf(rc == 0 ? stdout : stderr, "pier probe: %s\n", why);
        free(cfg);
        pier_buf_free(&errors);
        return rc;
    }

    if (pier_config_load(cfg, config, sets, nsets, &errors) != 0) {
        print_errors(config, &errors);
        pier_buf_free(&errors);
        free(cfg);
        return 1;
    }
    pier_buf_free(&errors);
#ifdef __GLIBC__
    /* Big request bodies are allocated and freed whole. Fix glibc's mmap threshold so such
     * blocks always come from mmap and go back to the system when freed; left dynamic, it
     * rises after the first big free and the memory stays in the heap for good. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
    return pier_server_run(cfg, config, sets, nsets);
}
