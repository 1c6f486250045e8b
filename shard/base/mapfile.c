/* mapfile.c: see mapfile.h. */
#define _POSIX_C_SOURCE 200809L
#include "mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"

ts_status ts_mapfile_open(const char *path, ts_mapfile *out) {
    if (!path || !out) return TS_FAIL(TS_INVAL, "path or out is NULL");
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return TS_FAIL(TS_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return TS_FAIL(TS_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return TS_FAIL(TS_IO, "'%s' is not a regular file", path);
    }
    out->path = ts_strdup(path);
    if (!out->path) {
        close(fd);
        return TS_FAIL(TS_NOMEM, "path copy");
    }
    out->size = (size_t)st.st_size;
    if (out->size > 0) {
        void *p = mmap(NULL, out->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            ts_free(out->path);
            memset(out, 0, sizeof *out);
            return TS_FAIL(TS_IO, "cannot map '%s': %s", path, strerror(e));
        }
        out->data = p;
    }
    close(fd);
    return TS_OK;
}

void ts_mapfile_close(ts_mapfile *mf) {
    if (!mf) return;
    if (mf->data) munmap((void *)mf->data, mf->size);
    ts_free(mf->path);
    memset(mf, 0, sizeof *mf);
}
