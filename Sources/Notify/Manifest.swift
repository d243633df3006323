import BackupKit
import Foundation

/// The backup set's `manifest.json` (format `kdl-backup/v1`, written last by `backup.sh`), as far as notify reads it.
/// Decoding is lenient about optional fields so that a half-written run still produces a useful alert.
public struct Manifest: Decodable, Sendable, Equatable {
    public struct StoredObject: Decodable, Sendable, Equatable {
        public var key: String
        public var bytes: Int64
        public var sha256: String?
        public var format: String?
        public var encrypted: Bool?
        public var verified: Bool?

        public init(key: String, bytes: Int64, sha256: String? = nil, format: String? = nil, encrypted: Bool? = nil, verified: Bool? = nil) {
            self.key = key
            self.bytes = bytes
            self.sha256 = sha256
            self.format = format
            self.encrypted = encrypted
            self.verified = verified
        }
    }

    public struct Component: Decodable, Sendable, Equatable {
        public var name: String
        public var status: ComponentStatus
        public var seconds: Double?
        public var error: String?
        public var objects: [StoredObject]

        public init(name: String, status: ComponentStatus, seconds: Double? = nil, error: String? = nil, objects: [StoredObject] = []) {
            self.name = name
            self.status = status
            self.seconds = seconds
            self.error = error
            self.objects = objects
        }

        /// The sum of the stored objects' bytes (what `kdl_backup_size_bytes{component}` reports).
        public var bytes: Int64 { objects.reduce(0) { $0 + $1.bytes } }

        enum CodingKeys: String, CodingKey { case name, status, seconds, error, objects }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            status = try c.decode(ComponentStatus.self, forKey: .status)
            seconds = try c.decodeIfPresent(Double.self, forKey: .seconds)
            error = try c.decodeIfPresent(String.self, forKey: .error)
            objects = try c.decodeIfPresent([StoredObject].self, forKey: .objects) ?? []
        }
    }

    public enum ComponentStatus: String, Decodable, Sendable {
        case success, failure, skipped
    }

    public struct Encryption: Decodable, Sendable, Equatable {
        public var type: String
        public var recipients: [String]
    }

    public var format: String
    public var id: String
    public var startedAt: Date?
    public var finishedAt: Date?
    public var status: RunStatus?
    public var encryption: Encryption?
    public var components: [Component]

    public init(
        format: String = "kdl-backup/v1", id: String, startedAt: Date? = nil, finishedAt: Date? = nil, status: RunStatus? = nil,
        encryption: Encryption? = nil, components: [Component] = []
    ) {
        self.format = format
        self.id = id
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.status = status
        self.encryption = encryption
        self.components = components
    }

    enum CodingKeys: String, CodingKey { case format, id, startedAt, finishedAt, status, encryption, components }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        format = try c.decode(String.self, forKey: .format)
        id = try c.decode(String.self, forKey: .id)
        startedAt = try Self.date(c, .startedAt)
        finishedAt = try Self.date(c, .finishedAt)
        status = try c.decodeIfPresent(RunStatus.self, forKey: .status)
        encryption = try c.decodeIfPresent(Encryption.self, forKey: .encryption)
        components = try c.decodeIfPresent([Component].self, forKey: .components) ?? []
    }

    private static func date(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws -> Date? {
        guard let text = try c.decodeIfPresent(String.self, forKey: key) else { return nil }
        guard let date = UTCTime.parseISO8601(text) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "not an ISO 8601 time: \(text)")
        }
        return date
    }

    /// Seconds between start and finish, else the sum of the components' seconds.
    public var durationSeconds: Double? {
        if let startedAt, let finishedAt { return max(0, finishedAt.timeIntervalSince(startedAt)) }
        let parts = components.compactMap(\.seconds)
        return parts.isEmpty ? nil : parts.reduce(0, +)
    }

    public var totalBytes: Int64 { components.reduce(0) { $0 + $1.bytes } }

    /// Failures first, then successes, then skipped; the manifest's order within each group.
    public var componentsFailuresFirst: [Component] {
        let rank: [ComponentStatus: Int] = [.failure: 0, .success: 1, .skipped: 2]
        return components.enumerated()
            .sorted { (rank[$0.element.status] ?? 3, $0.offset) < (rank[$1.element.status] ?? 3, $1.offset) }
            .map(\.element)
    }

    /// Reads and decodes a manifest file (small: a few KiB per component).
    public static func load(path: String) throws -> Manifest {
        guard FileManager.default.fileExists(atPath: path) else { throw NotifyError.manifestMissing(path) }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw NotifyError.manifestUnreadable(path, error.localizedDescription)
        }
        do {
            let manifest = try JSONDecoder().decode(Manifest.self, from: data)
            guard manifest.format.hasPrefix("kdl-backup/") else {
                throw NotifyError.manifestUnreadable(path, "format \(manifest.format) is not kdl-backup/v1")
            }
            return manifest
        } catch let error as NotifyError {
            throw error
        } catch let error as DecodingError {
            throw NotifyError.manifestUnreadable(path, Self.describe(error))
        } catch {
            throw NotifyError.manifestUnreadable(path, "\(error)")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        }
        switch error {
        case .keyNotFound(let key, let context): return "missing \(path(context.codingPath + [key]))"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            let at = path(context.codingPath)
            return at.isEmpty ? "not valid JSON" : "bad value at \(at): \(context.debugDescription)"
        @unknown default: return "not a manifest"
        }
    }
}

/// A run's outcome, as `--status` and the manifest's `status` spell it.
public enum RunStatus: String, Decodable, Sendable, CaseIterable {
    case success, partial, failure

    /// `kdl_backup_status`: 1 success, 0.5 partial, 0 failure.
    public var metricValue: String {
        switch self {
        case .success: return "1"
        case .partial: return "0.5"
        case .failure: return "0"
        }
    }
}
