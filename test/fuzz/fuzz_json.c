/* fuzz_json — the strict JSON check behind POST /echo (src/json.c), against cJSON.
 *
 * The input is a request body. Beyond the sanitizers, the harness checks:
 *   - a refusal names a byte inside the input and says what is wrong;
 *   - an accepted body is one value with only JSON whitespace around it, and cJSON (which
 *     accepts a superset of JSON) parses that value and ends exactly where it ends: a value
 *     the check lets through is JSON any parser reads the same way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz.h"
#include "pier/json.h"

static int is_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = (const char *)data;
    size_t start = 0, len = 0;
    struct pier_json_error err = {0, NULL};
    if (pier_json_check(in, size, &start, &len, &err) != 0) {
        if (err.offset > size || err.what == NULL || err.what[0] == '\0') {
            fprintf(stderr, "fuzz_json: refusal at %zu of %zu without a reason\n", err.offset,
                    size);
            abort();
        }
        return 0;
    }
    if (len == 0 || start + len > size) {
        fprintf(stderr, "fuzz_json: accepted an empty or out-of-range value\n");
        abort();
    }
    for (size_t i = 0; i < size; i++)
        if ((i < start || i >= start + len) && !is_ws(data[i])) {
            fprintf(stderr, "fuzz_json: accepted a value with byte %zu outside it\n", i);
            abort();
        }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, in + start, len);
    copy[len] = '\0';
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(copy, len, &end, 0);
    if (doc == NULL || end != copy + len) {
        fprintf(stderr, "fuzz_json: accepted what cJSON %s\n",
                doc ? "reads as a shorter value" : "refuses");
        abort();
    }
    cJSON_Delete(doc);
    free(copy);
    return 0;
}
