// swift-tools-version:6.0
import PackageDescription

// One logic library per helper over a shared BackupKit; each executable is a thin
// `@main` over its library so the logic is tested without spawning processes.
let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")

let package = Package(
    name: "kdl-backup",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "s3-put", targets: ["s3-put"]),
        .executable(name: "s3-get", targets: ["s3-get"]),
        .executable(name: "s3-ls", targets: ["s3-ls"]),
        .executable(name: "s3-prune", targets: ["s3-prune"]),
        .executable(name: "k8s-export", targets: ["k8s-export"]),
        .executable(name: "mlflow-scan", targets: ["mlflow-scan"]),
        .executable(name: "notify", targets: ["notify"]),
        .executable(name: "bucket-sync", targets: ["bucket-sync"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // C system libraries: typed static-inline shims over the variadic/macro C APIs.
        .systemLibrary(
            name: "CCurl", pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CJQ", providers: [.apt(["libjq-dev"])]),
        .systemLibrary(
            name: "CSQLite", pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]),
        // libcrypto is already in the image through libcurl4's libssl3.
        .systemLibrary(
            name: "CCrypto", pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]),
        // zlib's CRC-32 for S3's additional checksums (libz is in every Debian image).
        .systemLibrary(
            name: "CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]),

        // The "kdl-seqwrite" SQLite VFS behind mlflow-scan's fast snapshot copies (C, tested on its own).
        .target(name: "CSeqWriteVFS", linkerSettings: [.linkedLibrary("sqlite3")]),
        // KDLBackupVersion, generated from backup/VERSION at build time.
        .plugin(name: "GenerateVersion", capability: .buildTool(), path: "Sources/GenerateVersion"),

        .target(
            name: "BackupKit",
            dependencies: [
                "CCurl", "CJQ", "CCrypto", "CZlib", argumentParser,
            ],
            plugins: ["GenerateVersion"]),
        .target(name: "S3", dependencies: ["BackupKit", argumentParser]),
        .target(
            name: "KubeExport",
            dependencies: ["BackupKit", argumentParser, .product(name: "Yams", package: "Yams")]),
        .target(name: "MLflowScan", dependencies: ["BackupKit", "CSQLite", "CSeqWriteVFS", argumentParser]),
        .target(name: "Notify", dependencies: ["BackupKit", argumentParser]),
        .target(name: "BucketSync", dependencies: ["BackupKit", "S3", argumentParser]),

        .executableTarget(name: "s3-put", dependencies: ["S3"]),
        .executableTarget(name: "s3-get", dependencies: ["S3"]),
        .executableTarget(name: "s3-ls", dependencies: ["S3"]),
        .executableTarget(name: "s3-prune", dependencies: ["S3"]),
        .executableTarget(name: "k8s-export", dependencies: ["KubeExport"]),
        .executableTarget(name: "mlflow-scan", dependencies: ["MLflowScan"]),
        .executableTarget(name: "notify", dependencies: ["Notify"]),
        .executableTarget(name: "bucket-sync", dependencies: ["BucketSync"]),

        .testTarget(name: "BackupKitTests", dependencies: ["BackupKit"]),
        .testTarget(name: "S3Tests", dependencies: ["S3"]),
        .testTarget(name: "KubeExportTests", dependencies: ["KubeExport"]),
        .testTarget(name: "MLflowScanTests", dependencies: ["MLflowScan"]),
        .testTarget(name: "NotifyTests", dependencies: ["Notify"]),
        .testTarget(name: "BucketSyncTests", dependencies: ["BucketSync", "S3"]),
        .testTarget(name: "HelperCLITests", dependencies: ["BackupKit"]),
        .testTarget(name: "SeqWriteVFSTests", dependencies: ["CSeqWriteVFS", "CSQLite"]),
    ],
    swiftLanguageModes: [.v6]
)
