/* fuzz_config — the config loader fed YAML documents.
 *
 * pier_config_load reads a file, so the document goes into a memfd and the loader opens it
 * through /proc/self/fd like any path. Input: the YAML document, then optionally a NUL byte
 * and NUL-separated "key=value" strings used as --set flags (at most 8), so the same run also
 * covers the command-line path of parse_value. A loaded config is then formatted, diffed
 * against the defaults and written as help, as --check-config and a reload would.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "pier/config.h"

#define MAX_SETS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("pier-fuzz-config", MFD_CLOEXEC);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    const char *in = (const char *)data;
    const char *nul = memchr(in, '\0', size);
    size_t doc_len = nul ? (size_t)(nul - in) : size;

    /* the --set strings, NUL-terminated copies */
    char *sets_buf = NULL;
    const char *sets[MAX_SETS];
    size_t nsets = 0;
    if (nul) {
        size_t rest = size - doc_len - 1;
        sets_buf = malloc(rest + 1);
        if (sets_buf == NULL)
            return 0;
        memcpy(sets_buf, nul + 1, rest);
        sets_buf[rest] = '\0';
        for (char *p = sets_buf; p <= sets_buf + rest && nsets < MAX_SETS; p += strlen(p) + 1)
            sets[nsets++] = p;
    }

    if (ftruncate(fd, 0) != 0 || pwrite(fd, in, doc_len, 0) != (ssize_t)doc_len)
        abort();

    struct pier_config cfg, defaults;
    pier_buf_t errors, text;
    pier_buf_init(&errors);
    pier_buf_init(&text);
    int rc = pier_config_load(&cfg, path, sets, nsets, &errors);
    if (rc != 0 && errors.len == 0) {
        fprintf(stderr, "fuzz_config: load failed without saying why\n");
        abort();
    }
    if (rc == 0) {
        if (errors.len != 0) {
            fprintf(stderr, "fuzz_config: load succeeded but reported errors\n");
            abort();
        }
        if (pier_config_load(&defaults, NULL, NULL, 0, &errors) != 0)
            abort();
        for (size_t i = 0; i < pier_options_count; i++)
            pier_config_format_value(&cfg, &pier_options[i], &text);
        pier_config_diff(&defaults, &cfg, &text);
        if (pier_config_workers(&cfg) < 1)
            abort();
        if (cfg.prefix_len != strlen(cfg.prefix))
            abort();
    }
    pier_buf_free(&errors);
    pier_buf_free(&text);
    free(sets_buf);
    return 0;
}
