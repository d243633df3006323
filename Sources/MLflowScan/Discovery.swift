import Foundation

/// A folder that holds (or, when it cannot be listed, is named like it holds) an `mlflow.db`.
struct Candidate: Sendable {
    /// The folder as reported (ROOT as given, then the names below it).
    var folder: RawPath
    /// The folder's path relative to ROOT (empty for ROOT itself).
    var relative: RawPath
    var database: RawPath
    var project: String
    /// Set when the store cannot be inspected at all (for example its folder cannot be listed).
    var unreadableReason: String?
}

/// How a folder name becomes a project name.
///
/// 1. `kdl-<project>-mlflow-claim-pvc-<uid>` (KDL 5: a hostPath provisioner's folder for the claim
///    `<project>-mlflow-claim` in namespace `kdl`) gives `<project>`; `<uid>` is letters, digits and dashes.
/// 1b. `<ns>-<project>-mlflow-pvc-<uid>` (KDL 6: the claim `<project>-mlflow` in namespace `<ns>`) gives `<project>`,
///    for each namespace the scan is told about (a namespace and a project both may hold dashes).
/// 2. Any other folder gives its own name (`<project>/mlflow.db` gives `<project>`).
/// 3. A store at ROOT itself takes ROOT's folder name.
/// A name that is not UTF-8 is decoded with U+FFFD for each invalid sequence.
public enum ProjectName {
    static let prefix = "kdl-"
    static let marker = "-mlflow-claim-pvc-"
    static let kdl6Marker = "-mlflow-pvc-"

    public static func forFolder(named name: String, namespaces: [String] = []) -> String {
        if let project = project(in: name, prefix: prefix, marker: marker) { return project }
        // The longest namespace first: `kdl-dev-x-mlflow-pvc-1` is project x of kdl-dev, not dev-x of kdl.
        for namespace in namespaces.sorted(by: { $0.count > $1.count }) where !namespace.isEmpty {
            if let project = project(in: name, prefix: namespace + "-", marker: kdl6Marker) { return project }
        }
        if name.isEmpty || name == "/" { return "mlflow" }
        return name
    }

    /// The part of `name` between `prefix` and the last `marker`, when a valid uid follows the marker.
    private static func project(in name: String, prefix: String, marker: String) -> String? {
        guard name.hasPrefix(prefix), let range = name.range(of: marker, options: .backwards),
              range.lowerBound >= name.index(name.startIndex, offsetBy: prefix.count) else { return nil }
        let project = name[name.index(name.startIndex, offsetBy: prefix.count)..<range.lowerBound]
        let uid = name[range.upperBound...]
        let uidIsValid = !uid.isEmpty && uid.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-") }
        guard uidIsValid, !project.isEmpty, project != ".", project != ".." else { return nil }
        return String(project)
    }

    /// True when the name follows rule 1 or 1b, so an unlistable folder with it is reported as a store.
    static func isClaimFolder(_ name: String, namespaces: [String] = []) -> Bool {
        forFolder(named: name, namespaces: namespaces) != name
    }
}

/// Walks ROOT down to `maxDepth` levels for folders holding `mlflow.db`.
/// Symlinked folders are entered only when they resolve inside ROOT, and no folder twice (loops are safe).
/// A store's folder is not searched further: what is below it belongs to the store.
struct Discovery {
    static let databaseName = "mlflow.db"

    let root: RawPath
    let realRoot: RawPath
    let maxDepth: Int
    /// Namespaces whose KDL 6 claim folders (rule 1b) name a project.
    var namespaces: [String] = []

    private(set) var candidates: [Candidate] = []
    private(set) var skipped: [SkippedPath] = []
    private var visitedFolders = Set<FileID>()
    private var seenDatabases = Set<FileID>()

    struct FileID: Hashable { var device: UInt64; var inode: UInt64 }

    init(root: RawPath, realRoot: RawPath, maxDepth: Int) {
        self.root = root
        self.realRoot = realRoot
        self.maxDepth = maxDepth
    }

    /// `excluding`: a folder never searched (the snapshot directory, when it is below ROOT).
    mutating func run(rootListing: [RawPath], excluding excluded: RawPath? = nil) {
        if case .success(let info) = FileSystem.info(realRoot, followSymlink: true) {
            visitedFolders.insert(FileID(device: info.device, inode: info.inode))
        }
        if let excluded, case .success(let info) = FileSystem.info(excluded, followSymlink: true) {
            visitedFolders.insert(FileID(device: info.device, inode: info.inode))
        }
        let name = realRoot.lastComponent.text
        visit(folder: root, relative: RawPath([]), name: name, depth: 0, listing: .success(rootListing))
    }

    private mutating func visit(folder: RawPath, relative: RawPath, name: String, depth: Int, listing: Result<[RawPath], SystemError>) {
        let database = folder.appending(Self.databaseName)
        let project = ProjectName.forFolder(named: name, namespaces: namespaces)
        let names: [RawPath]
        switch listing {
        case .failure(let error):
            // Without a listing, a store is still known when its file can be looked up or its folder is named like a claim.
            if case .success = FileSystem.info(database) {
                addStore(folder: folder, relative: relative, database: database, project: project)
            } else if ProjectName.isClaimFolder(name, namespaces: namespaces) {
                candidates.append(
                    Candidate(
                        folder: folder, relative: relative, database: database, project: project,
                        unreadableReason: "cannot list folder: \(error)"))
            } else {
                skip(folder, "cannot list folder: \(error)")
            }
            return
        case .success(let list):
            names = list
        }

        if names.contains(RawPath(Self.databaseName)), case .success(let info) = FileSystem.info(database),
            info.kind == .file || info.kind == .symlink
        {
            addStore(folder: folder, relative: relative, database: database, project: project)
            return
        }
        guard depth < maxDepth else { return }

        for child in names {
            let path = folder.appending(child)
            let childRelative = relative.bytes.isEmpty ? child : relative.appending(child)
            guard case .success(let info) = FileSystem.info(path) else { continue }
            switch info.kind {
            case .directory:
                guard visitedFolders.insert(FileID(device: info.device, inode: info.inode)).inserted else { continue }
                visit(folder: path, relative: childRelative, name: child.text, depth: depth + 1, listing: FileSystem.list(path))
            case .symlink:
                followSymlink(path, relative: childRelative, name: child.text, depth: depth + 1)
            case .file, .other:
                continue
            }
        }
    }

    private mutating func followSymlink(_ path: RawPath, relative: RawPath, name: String, depth: Int) {
        guard case .success(let target) = FileSystem.info(path, followSymlink: true), target.kind == .directory else {
            if case .failure(let error) = FileSystem.info(path, followSymlink: true), error.code == ELOOP {
                skip(path, "symlink loop")
            }
            return  // a symlink to a file, or dangling: nothing to search
        }
        guard case .success(let resolved) = FileSystem.realPath(path), FileSystem.isInside(resolved, root: realRoot) else {
            skip(path, "symlink leads out of ROOT (not followed)")
            return
        }
        guard visitedFolders.insert(FileID(device: target.device, inode: target.inode)).inserted else {
            skip(path, "symlink to a folder already searched (loop or alias)")
            return
        }
        visit(folder: path, relative: relative, name: name, depth: depth, listing: FileSystem.list(path))
    }

    private mutating func addStore(folder: RawPath, relative: RawPath, database: RawPath, project: String) {
        var candidate = Candidate(folder: folder, relative: relative, database: database, project: project)
        if case .success(let link) = FileSystem.info(database), link.kind == .symlink {
            guard case .success(let resolved) = FileSystem.realPath(database), FileSystem.isInside(resolved, root: realRoot) else {
                candidate.unreadableReason = "mlflow.db is a symlink that leads out of ROOT or nowhere (not followed)"
                candidates.append(candidate)
                return
            }
        }
        if case .success(let file) = FileSystem.info(database, followSymlink: true) {
            guard seenDatabases.insert(FileID(device: file.device, inode: file.inode)).inserted else {
                skip(database, "same file as a store already found (hard link or symlink)")
                return
            }
        }
        candidates.append(candidate)
    }

    private mutating func skip(_ path: RawPath, _ reason: String) {
        skipped.append(SkippedPath(path: path.text, pathBase64: path.base64IfNeeded, reason: reason))
    }
}
