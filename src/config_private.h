/* config_private — what src/config.c and src/config_yaml.c share (pier__ names, src/ only). */
#ifndef PIER__CONFIG_PRIVATE_H
#define PIER__CONFIG_PRIVATE_H

#include "pier/buf.h"
#include "pier/config.h"

const struct pier_option *pier__config_find_option(const char *key);
/* Is `key` a section ("listen", "log") that some option lives in? */
int pier__config_is_section(const char *key);
/* Parse `text` for option `o` into cfg; errors name `where`. 0 or -22. */
int pier__config_parse_value(struct pier_config *cfg, const struct pier_option *o, const char *text,
                             int quoted, const char *where, pier_buf_t *errors);
void pier__config_unknown_key(const char *where, const char *key, pier_buf_t *errors);
void pier__config_describe_expected(const struct pier_option *o, pier_buf_t *out);
/* Read `file` into cfg; returns the number of errors (each a line in `errors`). */
int pier__config_load_yaml(struct pier_config *cfg, const char *file, pier_buf_t *errors);

#endif
