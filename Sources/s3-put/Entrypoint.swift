import S3

@main
enum Entrypoint {
    static func main() { S3PutCommand.main() }
}
