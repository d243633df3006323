import S3

@main
enum Entrypoint {
    static func main() { S3LsCommand.main() }
}
