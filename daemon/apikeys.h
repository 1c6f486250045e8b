/* apikeys.h: tesserad's API key table (--api-keys FILE).
 *
 * File format: one `KEY TENANT` per line, separated by spaces or tabs; blank lines and
 * lines starting with '#' are ignored, as is anything after a '#' that follows
 * whitespace. KEY: 8..256 printable ASCII characters, no spaces ('#' allowed inside);
 * TENANT: 1..63 of [A-Za-z0-9._-]. A key may appear once; a tenant may have many keys.
 * A malformed file is refused whole, naming the line.
 */
#ifndef TS_APIKEYS_H
#define TS_APIKEYS_H

#include <stdbool.h>
#include <stddef.h>

#define TS_TENANT_MAX 64 /* bytes, with the NUL */

typedef struct ts_apikeys ts_apikeys;

/* Loads path. On error returns NULL and writes "path:LINE: why" (or "path: why") to err. */
ts_apikeys *ts_apikeys_load(const char *path, char *err, size_t errsz);
void ts_apikeys_free(ts_apikeys *k);
size_t ts_apikeys_count(const ts_apikeys *k);
/* Looks key up (comparing every entry in constant time per entry); on a match copies the
 * tenant into tenant[TS_TENANT_MAX] and returns true. */
bool ts_apikeys_lookup(const ts_apikeys *k, const char *key, size_t key_len,
                       char tenant[TS_TENANT_MAX]);

#endif
