/* "kdl-seqwrite": a VFS over the default one for a private file that SQLite's online backup API fills.
   The backup writes its destination one page (4 KiB) per write(2); this VFS gathers consecutive writes to the
   main database file into writes of up to 124 KiB (31 pages of 4 KiB: the unix VFS writes at most 128 KiB - 1
   bytes per call; 124 KiB measured 10% less CPU than 64 KiB on a 500 MiB copy) and flushes
   before anything that reads or sizes the file, syncs, truncates or closes it. Journals and WAL files pass
   through untouched. Its files have no shared-memory methods (iVersion 1): a connection that uses it must set
   locking_mode=EXCLUSIVE before it could need a WAL index (SQLite then keeps that index in heap memory). */
#include "seqwrite_vfs.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define CSQLITE_SEQWRITE_BUFFER 126976

typedef struct csqlite_seq_file {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file, stored right after this struct */
    unsigned char *buffer; /* NULL for files we do not gather (journals, WAL) */
    int used;
    sqlite3_int64 offset; /* file offset of buffer[0] */
} csqlite_seq_file;

#define CSQLITE_SEQ_REAL(file) (((csqlite_seq_file *)(file))->real)

static int csqlite_seq_flush(csqlite_seq_file *file) {
    if (file->used == 0) return SQLITE_OK;
    int used = file->used;
    file->used = 0;
    return file->real->pMethods->xWrite(file->real, file->buffer, used, file->offset);
}

static int csqlite_seq_close(sqlite3_file *handle) {
    csqlite_seq_file *file = (csqlite_seq_file *)handle;
    int flushed = csqlite_seq_flush(file);
    int closed = file->real->pMethods->xClose(file->real);
    free(file->buffer);
    file->buffer = NULL;
    return flushed != SQLITE_OK ? flushed : closed;
}

static int csqlite_seq_read(sqlite3_file *handle, void *out, int amount, sqlite3_int64 offset) {
    int rc = csqlite_seq_flush((csqlite_seq_file *)handle);
    if (rc != SQLITE_OK) return rc;
    return CSQLITE_SEQ_REAL(handle)->pMethods->xRead(CSQLITE_SEQ_REAL(handle), out, amount, offset);
}

static int csqlite_seq_write(sqlite3_file *handle, const void *data, int amount, sqlite3_int64 offset) {
    csqlite_seq_file *file = (csqlite_seq_file *)handle;
    if (file->buffer == NULL || amount > CSQLITE_SEQWRITE_BUFFER) {
        int rc = csqlite_seq_flush(file);
        if (rc != SQLITE_OK) return rc;
        return file->real->pMethods->xWrite(file->real, data, amount, offset);
    }
    if (file->used > 0 && (file->offset + file->used != offset || file->used + amount > CSQLITE_SEQWRITE_BUFFER)) {
        int rc = csqlite_seq_flush(file);
        if (rc != SQLITE_OK) return rc;
    }
    if (file->used == 0) file->offset = offset;
    memcpy(file->buffer + file->used, data, (size_t)amount);
    file->used += amount;
    return SQLITE_OK;
}

static int csqlite_seq_truncate(sqlite3_file *handle, sqlite3_int64 size) {
    int rc = csqlite_seq_flush((csqlite_seq_file *)handle);
    return rc != SQLITE_OK ? rc : CSQLITE_SEQ_REAL(handle)->pMethods->xTruncate(CSQLITE_SEQ_REAL(handle), size);
}

static int csqlite_seq_sync(sqlite3_file *handle, int flags) {
    int rc = csqlite_seq_flush((csqlite_seq_file *)handle);
    return rc != SQLITE_OK ? rc : CSQLITE_SEQ_REAL(handle)->pMethods->xSync(CSQLITE_SEQ_REAL(handle), flags);
}

static int csqlite_seq_file_size(sqlite3_file *handle, sqlite3_int64 *size) {
    int rc = csqlite_seq_flush((csqlite_seq_file *)handle);
    return rc != SQLITE_OK ? rc : CSQLITE_SEQ_REAL(handle)->pMethods->xFileSize(CSQLITE_SEQ_REAL(handle), size);
}

static int csqlite_seq_lock(sqlite3_file *handle, int level) {
    return CSQLITE_SEQ_REAL(handle)->pMethods->xLock(CSQLITE_SEQ_REAL(handle), level);
}

static int csqlite_seq_unlock(sqlite3_file *handle, int level) {
    int rc = csqlite_seq_flush((csqlite_seq_file *)handle);
    int unlocked = CSQLITE_SEQ_REAL(handle)->pMethods->xUnlock(CSQLITE_SEQ_REAL(handle), level);
    return rc != SQLITE_OK ? rc : unlocked;
}

static int csqlite_seq_check_reserved(sqlite3_file *handle, int *out) {
    return CSQLITE_SEQ_REAL(handle)->pMethods->xCheckReservedLock(CSQLITE_SEQ_REAL(handle), out);
}

static int csqlite_seq_file_control(sqlite3_file *handle, int op, void *arg) {
    /* A size hint says nothing about content; every other control may look at the file, so it is flushed first. */
    if (op != SQLITE_FCNTL_SIZE_HINT) {
        int rc = csqlite_seq_flush((csqlite_seq_file *)handle);
        if (rc != SQLITE_OK) return rc;
    }
    return CSQLITE_SEQ_REAL(handle)->pMethods->xFileControl(CSQLITE_SEQ_REAL(handle), op, arg);
}

static int csqlite_seq_sector_size(sqlite3_file *handle) {
    return CSQLITE_SEQ_REAL(handle)->pMethods->xSectorSize(CSQLITE_SEQ_REAL(handle));
}

static int csqlite_seq_device_characteristics(sqlite3_file *handle) {
    return CSQLITE_SEQ_REAL(handle)->pMethods->xDeviceCharacteristics(CSQLITE_SEQ_REAL(handle));
}

static const sqlite3_io_methods csqlite_seq_io_methods = {
    1, csqlite_seq_close, csqlite_seq_read, csqlite_seq_write, csqlite_seq_truncate, csqlite_seq_sync,
    csqlite_seq_file_size, csqlite_seq_lock, csqlite_seq_unlock, csqlite_seq_check_reserved,
    csqlite_seq_file_control, csqlite_seq_sector_size, csqlite_seq_device_characteristics,
    NULL, NULL, NULL, NULL, NULL, NULL, /* no shared memory, no memory map */
};

#define CSQLITE_SEQ_ROOT(vfs) ((sqlite3_vfs *)(vfs)->pAppData)

static int csqlite_seq_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *handle, int flags, int *outFlags) {
    csqlite_seq_file *file = (csqlite_seq_file *)handle;
    memset(file, 0, sizeof(*file));
    file->real = (sqlite3_file *)(file + 1);
    int rc = CSQLITE_SEQ_ROOT(vfs)->xOpen(CSQLITE_SEQ_ROOT(vfs), name, file->real, flags, outFlags);
    if (rc != SQLITE_OK) {
        if (file->real->pMethods != NULL) file->real->pMethods->xClose(file->real);
        handle->pMethods = NULL;
        return rc;
    }
    if (flags & SQLITE_OPEN_MAIN_DB) {
        file->buffer = malloc(CSQLITE_SEQWRITE_BUFFER);
        if (file->buffer == NULL) {
            file->real->pMethods->xClose(file->real);
            handle->pMethods = NULL;
            return SQLITE_NOMEM;
        }
    }
    handle->pMethods = &csqlite_seq_io_methods;
    return SQLITE_OK;
}

static int csqlite_seq_delete(sqlite3_vfs *vfs, const char *name, int syncDir) {
    return CSQLITE_SEQ_ROOT(vfs)->xDelete(CSQLITE_SEQ_ROOT(vfs), name, syncDir);
}
static int csqlite_seq_access(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
    return CSQLITE_SEQ_ROOT(vfs)->xAccess(CSQLITE_SEQ_ROOT(vfs), name, flags, out);
}
static int csqlite_seq_full_pathname(sqlite3_vfs *vfs, const char *name, int size, char *out) {
    return CSQLITE_SEQ_ROOT(vfs)->xFullPathname(CSQLITE_SEQ_ROOT(vfs), name, size, out);
}
static void *csqlite_seq_dl_open(sqlite3_vfs *vfs, const char *name) {
    return CSQLITE_SEQ_ROOT(vfs)->xDlOpen(CSQLITE_SEQ_ROOT(vfs), name);
}
static void csqlite_seq_dl_error(sqlite3_vfs *vfs, int size, char *out) {
    CSQLITE_SEQ_ROOT(vfs)->xDlError(CSQLITE_SEQ_ROOT(vfs), size, out);
}
static void (*csqlite_seq_dl_sym(sqlite3_vfs *vfs, void *library, const char *symbol))(void) {
    return CSQLITE_SEQ_ROOT(vfs)->xDlSym(CSQLITE_SEQ_ROOT(vfs), library, symbol);
}
static void csqlite_seq_dl_close(sqlite3_vfs *vfs, void *library) {
    CSQLITE_SEQ_ROOT(vfs)->xDlClose(CSQLITE_SEQ_ROOT(vfs), library);
}
static int csqlite_seq_randomness(sqlite3_vfs *vfs, int size, char *out) {
    return CSQLITE_SEQ_ROOT(vfs)->xRandomness(CSQLITE_SEQ_ROOT(vfs), size, out);
}
static int csqlite_seq_sleep(sqlite3_vfs *vfs, int microseconds) {
    return CSQLITE_SEQ_ROOT(vfs)->xSleep(CSQLITE_SEQ_ROOT(vfs), microseconds);
}
static int csqlite_seq_current_time(sqlite3_vfs *vfs, double *out) {
    return CSQLITE_SEQ_ROOT(vfs)->xCurrentTime(CSQLITE_SEQ_ROOT(vfs), out);
}
static int csqlite_seq_last_error(sqlite3_vfs *vfs, int size, char *out) {
    return CSQLITE_SEQ_ROOT(vfs)->xGetLastError(CSQLITE_SEQ_ROOT(vfs), size, out);
}

/* Registers "kdl-seqwrite" (not as the default) once per process; call it from one place that runs once. */
int csqlite_register_seqwrite_vfs(void) {
    static sqlite3_vfs vfs;
    if (sqlite3_vfs_find(CSQLITE_SEQWRITE_VFS) != NULL) return SQLITE_OK;
    sqlite3_vfs *root = sqlite3_vfs_find(NULL);
    if (root == NULL) return SQLITE_ERROR;
    memset(&vfs, 0, sizeof(vfs));
    vfs.iVersion = 1;
    vfs.szOsFile = (int)sizeof(csqlite_seq_file) + root->szOsFile;
    vfs.mxPathname = root->mxPathname;
    vfs.zName = CSQLITE_SEQWRITE_VFS;
    vfs.pAppData = root;
    vfs.xOpen = csqlite_seq_open;
    vfs.xDelete = csqlite_seq_delete;
    vfs.xAccess = csqlite_seq_access;
    vfs.xFullPathname = csqlite_seq_full_pathname;
    vfs.xDlOpen = csqlite_seq_dl_open;
    vfs.xDlError = csqlite_seq_dl_error;
    vfs.xDlSym = csqlite_seq_dl_sym;
    vfs.xDlClose = csqlite_seq_dl_close;
    vfs.xRandomness = csqlite_seq_randomness;
    vfs.xSleep = csqlite_seq_sleep;
    vfs.xCurrentTime = csqlite_seq_current_time;
    vfs.xGetLastError = csqlite_seq_last_error;
    return sqlite3_vfs_register(&vfs, 0);
}

/* The main database file of a connection and one read of it through its VFS (the connection's own file
   handle, so no second descriptor can drop the POSIX locks SQLite holds on it). */
int csqlite_read_main_file(sqlite3 *db, void *out, int amount, long long offset) {
    sqlite3_file *file = NULL;
    int rc = sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &file);
    if (rc != SQLITE_OK) return rc;
    if (file == NULL || file->pMethods == NULL) return SQLITE_MISUSE;
    return file->pMethods->xRead(file, out, amount, offset);
}
