#ifndef KDL_CSQLITE_SHIM_H
#define KDL_CSQLITE_SHIM_H
#include <sqlite3.h>

/* SQLITE_TRANSIENT is a cast macro Swift cannot import. */
static inline sqlite3_destructor_type csqlite_transient(void) { return SQLITE_TRANSIENT; }

/* sqlite3_db_config is variadic: typed wrapper that turns on defensive mode and stops the schema
   (views, triggers, defaults) of a file we did not write from calling application functions. */
static inline int csqlite_harden(sqlite3 *db) {
    int rc = sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)0);
    if (rc != SQLITE_OK) return rc;
    return sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)0);
}

/* Extended result codes are expressions Swift does not import. */
enum {
    CSQLITE_READONLY_RECOVERY = SQLITE_READONLY_RECOVERY,
    CSQLITE_READONLY_ROLLBACK = SQLITE_READONLY_ROLLBACK,
    CSQLITE_READONLY_CANTINIT = SQLITE_READONLY_CANTINIT,
    CSQLITE_CANTOPEN_ISDIR = SQLITE_CANTOPEN_ISDIR,
    CSQLITE_IOERR_SHORT_READ = SQLITE_IOERR_SHORT_READ,
};
#endif
