/// The version every helper reports with `--version` and the backup manifest records.
public enum KDLBackupVersion {
    public static let current = "0.1.0"
}
