import BucketSync

@main
enum Entrypoint {
    static func main() { BucketSyncCommand.main() }
}
