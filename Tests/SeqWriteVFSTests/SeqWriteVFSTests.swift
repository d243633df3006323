import CSQLite
import CSeqWriteVFS
import Foundation
import Testing

/// The "kdl-seqwrite" VFS on its own: registration, a database written through it (gathered sequential pages,
/// then pages rewritten out of order, then a truncation) reads back whole through the default VFS, and the main
/// file is read through a connection's own handle.
@Suite struct SeqWriteVFSTests {
    @Test func registeringTwiceIsHarmlessAndTheVFSIsFoundByName() {
        #expect(csqlite_register_seqwrite_vfs() == SQLITE_OK)
        #expect(csqlite_register_seqwrite_vfs() == SQLITE_OK)
        #expect(sqlite3_vfs_find(CSQLITE_SEQWRITE_VFS) != nil)
        // Not the default: every other connection keeps the unix VFS.
        #expect(String(cString: sqlite3_vfs_find(nil).pointee.zName) != CSQLITE_SEQWRITE_VFS)
    }

    @Test func aBackupWrittenThroughTheVFSReadsBackWhole() throws {
        let dir = try TemporaryFolder()
        let source = try Database(path: dir.path("source.db"))
        try source.exec("CREATE TABLE metrics (id INTEGER PRIMARY KEY, key TEXT, value REAL, note BLOB)")
        try source.exec("BEGIN")
        for i in 0..<20_000 {
            try source.exec("INSERT INTO metrics (key, value, note) VALUES ('m\(i % 97)', \(Double(i) / 7), randomblob(\(i % 300)))")
        }
        try source.exec("COMMIT")
        let expected = try source.text("SELECT count(*) || ':' || sum(value) || ':' || sum(length(note)) FROM metrics")

        #expect(csqlite_register_seqwrite_vfs() == SQLITE_OK)
        let copyPath = dir.path("copy.db")
        let copy = try Database(path: copyPath, vfs: CSQLITE_SEQWRITE_VFS)
        try copy.exec("PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF")
        let backup = try #require(sqlite3_backup_init(copy.db, "main", source.db, "main"))
        #expect(sqlite3_backup_step(backup, -1) == SQLITE_DONE)
        #expect(sqlite3_backup_finish(backup) == SQLITE_OK)
        // Out-of-order page writes and a smaller file afterwards go through the same VFS.
        try copy.exec("UPDATE metrics SET note = NULL WHERE id % 13 = 0; DELETE FROM metrics WHERE id > 19000; VACUUM")
        let afterEdits = try copy.text("SELECT count(*) || ':' || sum(value) || ':' || sum(length(note)) FROM metrics")
        copy.close()

        let reader = try Database(path: copyPath)
        #expect(try reader.text("PRAGMA integrity_check") == "ok")
        #expect(try reader.text("SELECT count(*) || ':' || sum(value) || ':' || sum(length(note)) FROM metrics") == afterEdits)
        #expect(afterEdits != expected)
        #expect(try reader.text("SELECT count(*) FROM metrics") == "19000")
    }

    @Test func theMainFileIsReadThroughTheConnectionsOwnHandle() throws {
        let dir = try TemporaryFolder()
        let db = try Database(path: dir.path("header.db"))
        try db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
        var header = [UInt8](repeating: 0, count: 16)
        let rc = header.withUnsafeMutableBytes { csqlite_read_main_file(db.db, $0.baseAddress, 16, 0) }
        #expect(rc == SQLITE_OK)
        #expect(header == Array("SQLite format 3\0".utf8))
        // Past the end of the file: SQLite's short read, not garbage.
        var tail = [UInt8](repeating: 0xff, count: 16)
        let past = tail.withUnsafeMutableBytes { csqlite_read_main_file(db.db, $0.baseAddress, 16, 1 << 30) }
        #expect(past == CSQLITE_IOERR_SHORT_READ)
    }
}

/// A connection for the tests, closed on deinit.
final class Database {
    let db: OpaquePointer

    init(path: String, vfs: String? = nil) throws {
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs)
        guard rc == SQLITE_OK, let handle else { throw TestFailure("open \(path): \(rc)") }
        db = handle
    }

    func exec(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &message)
        defer { sqlite3_free(message) }
        guard rc == SQLITE_OK else { throw TestFailure("\(sql.prefix(60)): \(message.map { String(cString: $0) } ?? "\(rc)")") }
    }

    func text(_ sql: String) throws -> String {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK else { throw TestFailure("prepare \(sql)") }
        defer { sqlite3_finalize(statement) }
        guard sqlite3_step(statement) == SQLITE_ROW, let value = sqlite3_column_text(statement, 0) else {
            throw TestFailure("no row: \(sql)")
        }
        return String(cString: value)
    }

    private var closed = false
    func close() {
        if !closed { sqlite3_close(db) }
        closed = true
    }

    deinit { close() }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A private folder removed on deinit.
final class TemporaryFolder {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("seqwrite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    deinit { try? FileManager.default.removeItem(at: url) }
}
