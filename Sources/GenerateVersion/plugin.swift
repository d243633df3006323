import Foundation
import PackagePlugin

/// Generates `KDLBackupVersion` from backup/VERSION, the one file the helpers' `--version`, the scripts, the
/// image's label and the chart's appVersion all take the version from (Tests/backup/contracts.bats checks them).
@main
struct GenerateVersion: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let input = context.package.directoryURL.appending(path: "backup/VERSION")
        let output = context.pluginWorkDirectoryURL.appending(path: "KDLBackupVersion.swift")
        // A version is digits, dots and [A-Za-z0-9.-] suffixes: anything else fails the build.
        let script = """
            v=$(tr -d ' \\n' < "$1") && printf '%s' "$v" | grep -Eq '^[0-9]+\\.[0-9]+\\.[0-9]+([.-][A-Za-z0-9.-]+)?$' \
            || { echo "backup/VERSION: not a version: $v" >&2; exit 1; }
            printf '/// Generated from backup/VERSION by the GenerateVersion plugin.\\npublic enum KDLBackupVersion {\\n    public static let current = "%s"\\n}\\n' "$v" > "$2"
            """
        return [
            .buildCommand(
                displayName: "Generating KDLBackupVersion from backup/VERSION",
                executable: URL(fileURLWithPath: "/bin/sh"),
                arguments: ["-c", script, "generate-version", input.path, output.path],
                inputFiles: [input], outputFiles: [output])
        ]
    }
}
