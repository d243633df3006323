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
        var copied: SnapshotJob?
        do throws(SQLiteFailure) {
            let connection = try SQLiteConnection.openReadOnly(candidate.database, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
            // One read transaction: the counts and the copy are the same point in time. It ends before the copy
            // is checked, so a rollback-journal store's writers wait for the copy only.
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
                copied = copy(connection, into: snapshotFolder, &outcome)
            }
        } catch {
            Self.record(error, header: header, into: &outcome.report)
        }
        if let copied { finish(copied, &outcome) }
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

    /// A copy written to `partial` in the source's read transaction, waiting for its check, rename and digest.
    struct SnapshotJob {
        var report: SnapshotReport
        var partial: RawPath
        var final: RawPath
        var started: Double
    }

    /// How many bytes a copy of a rollback-journal store reads and writes at a time (as cp does).
    static let copyChunkBytes = 128 << 10

    /// Copies the store inside the caller's read transaction on `source`; nil when there is nothing to finish
    /// (the failure is then in `outcome`).
    private func copy(_ source: SQLiteConnection, into folder: RawPath, _ outcome: inout Outcome) -> SnapshotJob? {
        let final = folder.appending(Discovery.databaseName)
        var job = SnapshotJob(
            report: SnapshotReport(path: final.text, pathBase64: final.base64IfNeeded, check: snapshotCheck.rawValue),
            partial: folder.appending(".mlflow.db.partial"), final: final, started: clock())
        if case .failure(let error) = FileSystem.makeDirectory(folder) {
            fail(&job, "cannot create \(folder.text): \(error)", &outcome)
            return nil
        }
        // Whatever an earlier run left here goes first, so a failed copy never leaves an old one in its place.
        for path in [final, job.partial, job.partial.withSuffix("-journal"), job.partial.withSuffix("-wal")] { FileSystem.remove(path) }
        let result: Result<SnapshotMethod, CopyFailure>
        do throws(SQLiteFailure) {
            result = try source.text("PRAGMA journal_mode") == "wal"
                ? Self.copyWithBackupAPI(source, to: job.partial) : Self.copyUnderSharedLock(source, to: job.partial)
        } catch {
            result = .failure(.source(error))
        }
        switch result {
        case .success(let method):
            job.report.method = method.rawValue
            job.report.copySeconds = Self.seconds(since: job.started, clock())
            return job
        case .failure(.source(let error)):
            // The store, not our side, failed: it is reported corrupt or unreadable, without a copy.
            FileSystem.remove(job.partial)
            job.report.error = error.message
            outcome.report.snapshot = job.report
            Self.record(error, header: Header(fileBytes: 0, hasMagic: true, journalMode: nil), into: &outcome.report)
        case .failure(.destination(let message)):
            fail(&job, "cannot write \(job.partial.text): \(message)", &outcome)
        }
        return nil
    }

    /// Checks the copy (after the source's read transaction ended), then renames it into place and digests it.
    private func finish(_ copied: SnapshotJob, _ outcome: inout Outcome) {
        var job = copied
        guard let pragma = snapshotCheck.pragma else { return publish(&job, &outcome) }
        let checkStarted = clock()
        var result: [String]
        do throws(SQLiteFailure) {
            // A fresh read-only connection on the file just written (its pages still in the page cache). No
            // memory map: it made the check no faster and put the whole copy in the process's RSS.
            let checker = try SQLiteConnection.openReadOnly(job.partial, busyTimeoutMilliseconds: 0)
            result = try checker.rows(pragma).compactMap { $0.first ?? nil }
        } catch where error.isCorruption {
            result = [error.message]
        } catch {
            job.report.checkSeconds = Self.seconds(since: checkStarted, clock())
            return fail(&job, "cannot check \(job.partial.text): \(error.message)", &outcome)
        }
        job.report.checkSeconds = Self.seconds(since: checkStarted, clock())
        job.report.integrity = result.joined(separator: "; ")
        if result != ["ok"] {
            FileSystem.remove(job.partial)
            job.report.error = "\(snapshotCheck.rawValue) check failed on the copy"
            outcome.report.snapshot = job.report
            outcome.report.status = .corrupt
            outcome.report.error = "\(snapshotCheck.rawValue)_check: " + result.joined(separator: "; ")
            return
        }
        publish(&job, &outcome)
    }

    /// Renames the copy into place and digests it.
    private func publish(_ job: inout SnapshotJob, _ outcome: inout Outcome) {
        if case .failure(let error) = FileSystem.rename(job.partial, to: job.final) {
            return fail(&job, "cannot rename \(job.partial.text): \(error)", &outcome)
        }
        let digestStarted = clock()
        let digest = FileSystem.sha256(job.final)
        job.report.digestSeconds = Self.seconds(since: digestStarted, clock())
        switch digest {
        case .failure(let error):
            return fail(&job, "cannot read back \(job.final.text): \(error)", &outcome)
        case .success(let result):
            job.report.sha256 = result.digest
            job.report.bytes = result.bytes
        }
        job.report.seconds = Self.seconds(since: job.started, clock())
        outcome.report.snapshot = job.report
    }

    /// A copy that could not be written on our side: the store stays ok, the command exits 74.
    private func fail(_ job: inout SnapshotJob, _ message: String, _ outcome: inout Outcome) {
        job.report.error = message
        outcome.report.snapshot = job.report
        outcome.destinationFailed = true
        FileSystem.remove(job.partial)
    }

    /// What went wrong in a copy: reading the store, or writing our file.
    enum CopyFailure: Error {
        case source(SQLiteFailure)
        case destination(String)
    }

    /// SQLite caps the map at 2 GiB (SQLITE_MAX_MMAP_SIZE); a bigger store is mapped that far and read beyond it.
    static let sourceMemoryMapBytes: Int64 = 1 << 40

    /// A WAL store: its pages are in mlflow.db and, for the latest commits, in mlflow.db-wal, as SQLite's WAL
    /// index says for this read transaction; only SQLite can assemble them, so the online backup API copies it
    /// (source pages from the memory map, destination writes gathered by the kdl-seqwrite VFS). The copy's
    /// header still says WAL; switching it to rollback mode makes it one self-contained file.
    static func copyWithBackupAPI(_ source: SQLiteConnection, to partial: RawPath) -> Result<SnapshotMethod, CopyFailure> {
        let destination: SQLiteConnection
        do throws(SQLiteFailure) {
            destination = try SQLiteConnection.openSnapshotDestination(partial)
        } catch {
            return .failure(.destination(error.message))
        }
        do throws(SQLiteFailure) {
            // Mapped pages come without a read(2) each; they count in RSS but are the page cache's, not ours.
            try source.setMemoryMap(bytes: sourceMemoryMapBytes)
            try source.backup(into: destination)
        } catch {
            // The destination connection reports the backup's error, whichever side it came from.
            return .failure(error.isCorruption || error.isBusy ? .source(error) : .destination(error.message))
        }
        do throws(SQLiteFailure) {
            try destination.execute("PRAGMA journal_mode = DELETE")
        } catch {
            return .failure(.destination(error.message))
        }
        return .success(.backupAPI)
    }

    /// A rollback-journal store: the caller's read transaction holds a SHARED lock on mlflow.db, and no
    /// connection can write that file while it is held (a writer needs an EXCLUSIVE lock to commit, and also to
    /// spill its cache into the file), while a hot journal was rolled back or refused when the transaction began.
    /// So the file's first page_count × page_size bytes are exactly the committed database the counts were
    /// read from: they are copied as they are, in 128 KiB reads through the connection's own file handle.
    static func copyUnderSharedLock(_ source: SQLiteConnection, to partial: RawPath) -> Result<SnapshotMethod, CopyFailure> {
        let total: Int64
        do throws(SQLiteFailure) {
            guard let pages = try source.integer("PRAGMA page_count"), let pageSize = try source.integer("PRAGMA page_size"),
                pages >= 0, pageSize > 0, pages <= Int64.max / pageSize
            else {
                return .failure(.source(.corrupt("no page count or page size")))
            }
            total = pages * pageSize
        } catch {
            return .failure(.source(error))
        }
        let output: FileSystem.Output
        switch FileSystem.createExclusive(partial) {
        case .failure(let error): return .failure(.destination(error.description))
        case .success(let file): output = file
        }
        var buffer = [UInt8](repeating: 0, count: copyChunkBytes)
        var offset: Int64 = 0
        while offset < total {
            let count = Int(min(Int64(buffer.count), total - offset))
            let failure: CopyFailure? = buffer.withUnsafeMutableBytes { raw in
                let chunk = UnsafeMutableRawBufferPointer(rebasing: raw.prefix(count))
                do throws(SQLiteFailure) {
                    try source.readMainFile(into: chunk, at: offset)
                } catch {
                    return .source(error)
                }
                if case .failure(let error) = output.write(UnsafeRawBufferPointer(chunk)) { return .destination(error.description) }
                return nil
            }
            if let failure { return .failure(failure) }
            offset += Int64(count)
        }
        if case .failure(let error) = output.close() { return .failure(.destination(error.description)) }
        return .success(.sharedLockCopy)
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
