import CSQLite
import CSeqWriteVFS

// The only file that imports CSQLite: a small connection type over libsqlite3 with the calls the scan needs
// (read-only URI open, queries returning text, the online backup API).

/// A failed SQLite call: its extended result code and SQLite's message.
struct SQLiteFailure: Error, CustomStringConvertible, Sendable {
    var code: Int32
    var message: String

    var primaryCode: Int32 { code & 0xff }
    /// The file is not a database or a page is damaged.
    var isCorruption: Bool { primaryCode == SQLITE_CORRUPT || primaryCode == SQLITE_NOTADB }
    /// Another connection holds a lock we waited for in vain.
    var isBusy: Bool { primaryCode == SQLITE_BUSY || primaryCode == SQLITE_LOCKED }
    /// A read-only connection found a WAL file it cannot use without creating `-shm`
    /// (SQLITE_READONLY_CANTINIT / _RECOVERY / _ROLLBACK, or CANTOPEN on a read-only folder).
    var isReadOnlyRecovery: Bool {
        code == CSQLITE_READONLY_CANTINIT || code == CSQLITE_READONLY_RECOVERY || code == CSQLITE_READONLY_ROLLBACK
    }

    var description: String { message }

    /// A damaged database found by our own reading.
    static func corrupt(_ message: String) -> SQLiteFailure { SQLiteFailure(code: SQLITE_CORRUPT, message: message) }
}

/// One connection; closed when released.
final class SQLiteConnection {
    private let db: OpaquePointer

    private init(_ db: OpaquePointer) { self.db = db }

    deinit { sqlite3_close_v2(db) }

    /// Opens `path` read-only through a `file:` URI (`mode=ro`), so the scan never creates or changes a store.
    static func openReadOnly(_ path: RawPath, busyTimeoutMilliseconds: Int32) throws(SQLiteFailure) -> SQLiteConnection {
        let uri = "file:" + percentEncoded(path) + "?mode=ro"
        let connection = try open(uri, flags: SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX)
        sqlite3_busy_timeout(connection.db, busyTimeoutMilliseconds)
        return connection
    }

    /// Opens (creating if needed) a database we own: a snapshot or a test fixture.
    static func openReadWrite(_ path: RawPath) throws(SQLiteFailure) -> SQLiteConnection {
        let uri = "file:" + percentEncoded(path)
        return try open(uri, flags: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX)
    }

    /// Opens (creating) a snapshot's private destination for the online backup API: through the "kdl-seqwrite"
    /// VFS (Sources/CSeqWriteVFS/seqwrite_vfs.c), which turns the backup's page-sized writes into 124 KiB ones, with no
    /// journal, no fsync and an exclusive lock (that VFS has no shared memory; SQLite keeps a WAL index, needed
    /// for a moment when a copy of a WAL store is switched to rollback mode, in heap memory instead).
    static func openSnapshotDestination(_ path: RawPath) throws(SQLiteFailure) -> SQLiteConnection {
        let registered = seqwriteRegistration
        guard registered == SQLITE_OK else {
            throw SQLiteFailure(code: registered, message: "cannot register SQLite VFS \(CSQLITE_SEQWRITE_VFS): \(String(cString: sqlite3_errstr(registered)))")
        }
        let uri = "file:" + percentEncoded(path)
        let connection = try open(
            uri, flags: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, vfs: CSQLITE_SEQWRITE_VFS)
        try connection.execute("PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF")
        return connection
    }

    private static let seqwriteRegistration: Int32 = csqlite_register_seqwrite_vfs()

    private static func open(_ uri: String, flags: Int32, vfs: String? = nil) throws(SQLiteFailure) -> SQLiteConnection {
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(uri, &handle, flags, vfs)
        guard let handle else { throw SQLiteFailure(code: rc, message: String(cString: sqlite3_errstr(rc))) }
        let connection = SQLiteConnection(handle)
        sqlite3_extended_result_codes(handle, 1)
        guard rc == SQLITE_OK else { throw connection.failure(rc) }
        let hardened = csqlite_harden(handle)
        guard hardened == SQLITE_OK else { throw connection.failure(hardened) }
        return connection
    }

    /// Runs one or more statements that return nothing we need.
    func execute(_ sql: String) throws(SQLiteFailure) {
        let rc = sqlite3_exec(db, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw failure(rc) }
    }

    /// Runs one statement with optional text/integer bindings and returns every row's columns as text (nil for NULL).
    func rows(_ sql: String, _ bindings: [SQLiteValue] = []) throws(SQLiteFailure) -> [[String?]] {
        var statement: OpaquePointer?
        let prepared = sqlite3_prepare_v2(db, sql, -1, &statement, nil)
        guard prepared == SQLITE_OK, let statement else { throw failure(prepared) }
        defer { sqlite3_finalize(statement) }
        for (index, value) in bindings.enumerated() {
            let position = Int32(index + 1)
            let rc: Int32
            switch value {
            case .integer(let number): rc = sqlite3_bind_int64(statement, position, number)
            case .text(let text): rc = sqlite3_bind_text(statement, position, text, -1, csqlite_transient())
            case .real(let number): rc = sqlite3_bind_double(statement, position, number)
            }
            guard rc == SQLITE_OK else { throw failure(rc) }
        }
        var out: [[String?]] = []
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw failure(rc) }
            var row: [String?] = []
            for column in 0..<sqlite3_column_count(statement) {
                if let text = sqlite3_column_text(statement, column) {
                    row.append(String(cString: text))
                } else {
                    row.append(nil)
                }
            }
            out.append(row)
        }
        return out
    }

    /// The first column of the first row as an integer.
    func integer(_ sql: String) throws(SQLiteFailure) -> Int64? {
        guard let text = try rows(sql).first?.first ?? nil else { return nil }
        return Int64(text)
    }

    /// The first column of the first row as text.
    func text(_ sql: String) throws(SQLiteFailure) -> String? {
        try rows(sql).first?.first ?? nil
    }

    /// Copies this whole database into `destination` with the online backup API in one step, so the copy is the
    /// state of one read transaction (the caller's, when it has one open on this connection).
    func backup(into destination: SQLiteConnection) throws(SQLiteFailure) {
        guard let backup = sqlite3_backup_init(destination.db, "main", db, "main") else {
            throw destination.failure(sqlite3_extended_errcode(destination.db))
        }
        let step = sqlite3_backup_step(backup, -1)
        let finish = sqlite3_backup_finish(backup)
        if step != SQLITE_DONE {
            // The destination connection carries the error of the whole backup.
            throw SQLiteFailure(code: step, message: String(cString: sqlite3_errmsg(destination.db)))
        }
        guard finish == SQLITE_OK else { throw destination.failure(finish) }
    }

    /// Lets reads of this database go through a memory map of up to `bytes` (SQLite caps it at 2 GiB; beyond that
    /// it reads as usual): the backup API then copies pages from the page cache without a read(2) each.
    func setMemoryMap(bytes: Int64) throws(SQLiteFailure) {
        try execute("PRAGMA mmap_size = \(max(bytes, 0))")
    }

    /// Reads `buffer.count` bytes at `offset` of the main database file through the connection's own file handle
    /// (a second descriptor for the file, once closed, would drop the POSIX locks SQLite holds on it).
    func readMainFile(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(SQLiteFailure) {
        guard let base = buffer.baseAddress, let count = Int32(exactly: buffer.count) else {
            throw SQLiteFailure(code: SQLITE_MISUSE, message: "read of \(buffer.count) bytes is out of range")
        }
        let rc = csqlite_read_main_file(db, base, count, offset)
        guard rc == SQLITE_OK else {
            let message =
                rc == CSQLITE_IOERR_SHORT_READ
                ? "the database file ends before its last page (\(offset + Int64(count)) bytes)" : String(cString: sqlite3_errstr(rc))
            throw rc == CSQLITE_IOERR_SHORT_READ ? .corrupt(message) : SQLiteFailure(code: rc, message: message)
        }
    }

    private func failure(_ rc: Int32) -> SQLiteFailure {
        let extended = sqlite3_extended_errcode(db)
        let code = (extended & 0xff) == (rc & 0xff) ? extended : rc
        return SQLiteFailure(code: code, message: String(cString: sqlite3_errmsg(db)))
    }

    /// Percent-encodes every byte a URI path may not carry as is, so any file name (also invalid UTF-8) round-trips.
    static func percentEncoded(_ path: RawPath) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for byte in path.bytes {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "/"), UInt8(ascii: "-"), UInt8(ascii: "_"),
                UInt8(ascii: "."), UInt8(ascii: "~"):
                out.append(byte)
            default:
                out.append(contentsOf: [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0x0f)]])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The version of the linked libsqlite3.
    static var libraryVersion: String { String(cString: sqlite3_libversion()) }
}

/// A value bound to a statement parameter.
enum SQLiteValue: Sendable {
    case integer(Int64)
    case text(String)
    case real(Double)
}
