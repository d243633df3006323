import KubeExport

@main
enum Entrypoint {
    static func main() { K8sExportCommand.main() }
}
