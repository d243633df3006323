import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads one store without changing it and, when asked, copies it with SQLite's online backup API.
struct Inspector {
    var busyTimeoutMilliseconds: Int32
    var quickCheck: Bool
    var snapshotCheck: SnapshotCheck = .integrity
    var clock: @Sendable () -> Double = { Date().timeIntervalSinceReferenceDate }

    static let mlflowTables: Set<String> = ["experiments", "runs"]
    static let artifactFolders = ["mlruns", "artifacts"]

    /// Set when the copy could not be written on our side (the store itself may be fine): the command exits 74.
    struct Outcome {
        var report: StoreReport
        var destinationFailed = false
    }

    func inspect(_ candidate: Candidate, snapshotFolder: RawPath?) -> Outcome {
        var report = StoreReport(
            project: candidate.project, path: candidate.database.text, pathBase64: candidate.database.base64IfNeeded,
            status: .ok)
        report.artifacts = Self.artifacts(in: candidate.folder)
        if let reason = candidate.unreadableReason {
            report.status = .unreadable
            report.error = reason
            return Outcome(report: report)
        }
        let header: Header
        switch Header.read(candidate.database) {
        case .failure(let error):
            report.status = .unreadable
            report.error = "cannot open mlflow.db: \(error)"
            return Outcome(report: report)
        case .success(let value):
            header = value
        }
        report.dbBytes = header.fileBytes
        report.journalMode = header.journalMode
        report.walBytes = Self.size(candidate.database.withSuffix("-wal")) ?? 0
        if header.fileBytes == 0 {
            report.status = .notMLflow
            report.kind = "not-mlflow"
            report.error = "mlflow.db is empty (0 bytes)"
            return Outcome(report: report)
        }
        if !header.hasMagic {
            report.status = .corrupt
            report.error = "not an SQLite database (bad file header)"
            return Outcome(report: report)
        }

        var outcome = Outcome(report: report)
        do throws(SQLiteFailure) {
            let connection = try SQLiteConnection.openReadOnly(candidate.database, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
            // One read transaction: the counts and the copy are the same point in time.
            try connection.execute("BEGIN")
            defer { try? connection.execute("COMMIT") }
            let tables = Set(try connection.rows("SELECT name FROM sqlite_master WHERE type = 'table'").compactMap { $0.first ?? nil })
            guard Self.mlflowTables.isSubset(of: tables) else {
                outcome.report.status = .notMLflow
                outcome.report.kind = "not-mlflow"
                outcome.report.error = "no MLflow tables (experiments, runs) in this SQLite database"
                return outcome
            }
            outcome.report.kind = "mlflow"
            outcome.report.experiments = try connection.integer("SELECT count(*) FROM experiments")
            outcome.report.runs = try connection.integer("SELECT count(*) FROM runs")
            if tables.contains("alembic_version") {
                outcome.report.schemaVersion = try connection.text("SELECT version_num FROM alembic_version LIMIT 1")
            }
            if quickCheck {
                let result = try connection.rows("PRAGMA quick_check(5)").compactMap { $0.first ?? nil }
                if result != ["ok"] {
                    outcome.report.status = .corrupt
                    outcome.report.error = "quick_check: " + result.joined(separator: "; ")
                    return outcome
                }
            }
            if let snapshotFolder {
                snapshot(connection, into: snapshotFolder, &outcome)
            }
        } catch {
            Self.record(error, header: header, into: &outcome.report)
        }
        return outcome
    }

    /// Turns an SQLite failure on the store into its status and a message that says what to do.
    static func record(_ failure: SQLiteFailure, header: Header, into report: inout StoreReport) {
        if failure.isCorruption {
            report.status = .corrupt
            report.error = failure.message
        } else if failure.isBusy {
            report.status = .unreadable
            report.error = "\(failure.message): a writer held the lock longer than --busy-timeout"
        } else if header.journalMode == "wal", failure.isReadOnlyRecovery || failure.primaryCode == 14 /* CANTOPEN */ {
            report.status = .unreadable
            report.error =
                "WAL database cannot be read safely here (\(failure.message)): mlflow.db-shm is missing or unusable "
                + "and the folder is read-only; mount it writable or let MLflow create mlflow.db-shm"
        } else if failure.isReadOnlyRecovery {
            report.status = .unreadable
            report.error = "\(failure.message): a hot journal needs recovery by a writer; not copied"
        } else {
            report.status = .unreadable
            report.error = failure.message
        }
    }

    private func snapshot(_ source: SQLiteConnection, into folder: RawPath, _ outcome: inout Outcome) {
        let started = clock()
        let final = folder.appending(Discovery.databaseName)
        let partial = folder.appending(".mlflow.db.partial")
        var snapshot = SnapshotReport(path: final.text, pathBase64: final.base64IfNeeded, check: snapshotCheck.rawValue)
        defer { outcome.report.snapshot = snapshot }
        func destinationFailed(_ message: String) {
            snapshot.error = message
            outcome.destinationFailed = true
            FileSystem.remove(partial)
        }
        if case .failure(let error) = FileSystem.makeDirectory(folder) {
            return destinationFailed("cannot create \(folder.text): \(error)")
        }
        // Whatever an earlier run left here goes first, so a failed copy never leaves an old one in its place.
        for path in [final, partial, partial.withSuffix("-journal")] { FileSystem.remove(path) }
        do throws(SQLiteFailure) {
            let destination = try SQLiteConnection.openReadWrite(partial)
            // The copy is private until renamed: no journal, no fsync while it is written.
            try destination.execute("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF")
            do throws(SQLiteFailure) {
                try source.backup(into: destination)
                snapshot.copySeconds = Self.seconds(since: started, clock())
            } catch {
                if error.isCorruption || error.isBusy {
                    FileSystem.remove(partial)
                    snapshot.error = error.message
                    Self.record(error, header: Header(fileBytes: 0, hasMagic: true, journalMode: nil), into: &outcome.report)
                    return
                }
                throw error
            }
            // A copy of a WAL store keeps WAL in its header; make it one self-contained rollback-mode file.
            try destination.execute("PRAGMA journal_mode = DELETE")
            let checkStarted = clock()
            defer { snapshot.checkSeconds = Self.seconds(since: checkStarted, clock()) }
            let integrity = try destination.rows(snapshotCheck.pragma).compactMap { $0.first ?? nil }
            snapshot.integrity = integrity.joined(separator: "; ")
            if integrity != ["ok"] {
                FileSystem.remove(partial)
                snapshot.error = "\(snapshotCheck.rawValue) check failed on the copy"
                outcome.report.status = .corrupt
                outcome.report.error = "\(snapshotCheck.rawValue)_check: " + integrity.joined(separator: "; ")
                return
            }
        } catch {
            return destinationFailed("cannot write \(partial.text): \(error.message)")
        }
        if case .failure(let error) = FileSystem.rename(partial, to: final) {
            return destinationFailed("cannot rename \(partial.text): \(error)")
        }
        let digestStarted = clock()
        defer { snapshot.digestSeconds = Self.seconds(since: digestStarted, clock()) }
        switch FileSystem.sha256(final) {
        case .failure(let error):
            return destinationFailed("cannot read back \(final.text): \(error)")
        case .success(let result):
            snapshot.sha256 = result.digest
            snapshot.bytes = result.bytes
        }
        snapshot.seconds = Self.seconds(since: started, clock())
    }

    /// Seconds rounded to milliseconds, for the report.
    static func seconds(since start: Double, _ end: Double) -> Double { ((end - start) * 1000).rounded() / 1000 }

    /// The first 100 bytes of the database file: SQLite's magic and the WAL flag (bytes 18 and 19 are 2 in WAL mode).
    struct Header {
        var fileBytes: Int64
        var hasMagic: Bool
        var journalMode: String?

        static let magic = Array("SQLite format 3\0".utf8)

        static func read(_ path: RawPath) -> Result<Header, SystemError> {
            // O_NONBLOCK: a FIFO or device named mlflow.db must not hang the scan; it is refused below.
            let fd = path.withCString { open($0, O_RDONLY | O_CLOEXEC | O_NONBLOCK) }
            guard fd >= 0 else { return .failure(.current) }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0 else { return .failure(.current) }
            guard (st.st_mode & S_IFMT) == S_IFREG else { return .failure(SystemError(code: EINVAL, text: "not a regular file")) }
            var bytes = [UInt8](repeating: 0, count: 100)
            let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 100, 0) }
            guard count >= 0 else { return .failure(.current) }
            let hasMagic = count >= 20 && Array(bytes.prefix(16)) == magic
            var mode: String?
            if hasMagic {
                mode = bytes[18] == 2 && bytes[19] == 2 ? "wal" : "delete"
            }
            return .success(Header(fileBytes: Int64(st.st_size), hasMagic: hasMagic, journalMode: mode))
        }
    }

    static func size(_ path: RawPath) -> Int64? {
        guard case .success(let info) = FileSystem.info(path), info.kind == .file else { return nil }
        return info.size
    }

    /// Counts the regular files and their bytes under each local artifact folder, never following symlinks.
    static func artifacts(in folder: RawPath) -> [ArtifactFolder] {
        var out: [ArtifactFolder] = []
        for name in artifactFolders {
            let path = folder.appending(name)
            guard case .success(let info) = FileSystem.info(path), info.kind == .directory else { continue }
            var entry = ArtifactFolder(name: name, files: 0, bytes: 0)
            var unreadable: Int64 = 0
            var pending = [path]
            while let current = pending.popLast() {
                guard case .success(let names) = FileSystem.list(current) else {
                    unreadable += 1
                    continue
                }
                for child in names {
                    let childPath = current.appending(child)
                    guard case .success(let childInfo) = FileSystem.info(childPath) else { continue }
                    switch childInfo.kind {
                    case .file:
                        entry.files += 1
                        entry.bytes += childInfo.size
                    case .directory:
                        pending.append(childPath)
                    case .symlink, .other:
                        continue
                    }
                }
            }
            if unreadable > 0 { entry.unreadableFolders = unreadable }
            out.append(entry)
        }
        return out
    }
}
