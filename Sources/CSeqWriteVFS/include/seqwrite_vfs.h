#ifndef KDL_SEQWRITE_VFS_H
#define KDL_SEQWRITE_VFS_H
/* The "kdl-seqwrite" SQLite VFS (seqwrite_vfs.c says how it works), for mlflow-scan's snapshots.
   The header names no SQLite type, so it does not clash with CSQLite's module over sqlite3.h. */

#define CSQLITE_SEQWRITE_VFS "kdl-seqwrite"

struct sqlite3;

/* Registers "kdl-seqwrite" (not as the default) once per process; SQLITE_OK (0) or SQLite's error code. */
int csqlite_register_seqwrite_vfs(void);

/* One read of a connection's main database file through its own file handle (so no second descriptor can
   drop the POSIX locks SQLite holds on it); SQLite's result code. */
int csqlite_read_main_file(struct sqlite3 *db, void *out, int amount, long long offset);
#endif
