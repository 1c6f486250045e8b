/* mapfile.h: a whole file mapped read-only (POSIX mmap).
 *
 * ts_mapfile_open maps `path` and fills *out. An empty file gives data == NULL, size 0.
 * The mapping is private and read-only: writing through `data` faults. Close with
 * ts_mapfile_close, which accepts a zeroed or already closed struct.
 */
#ifndef TS_MAPFILE_H
#define TS_MAPFILE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_mapfile {
    const uint8_t *data; /* (size) bytes, or NULL when size == 0 */
    size_t size;
    char *path; /* owned copy, for messages */
} ts_mapfile;

/* Errors: TS_INVAL (NULL args), TS_IO (open/stat/mmap failed; message names the path
 * and the reason), TS_NOMEM. */
ts_status ts_mapfile_open(const char *path, ts_mapfile *out);
void ts_mapfile_close(ts_mapfile *mf);

#ifdef __cplusplus
}
#endif
#endif
