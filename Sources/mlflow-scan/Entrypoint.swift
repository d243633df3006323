import MLflowScan

@main
enum Entrypoint {
    static func main() { MLflowScanCommand.main() }
}
