import Notify

@main
enum Entrypoint {
    static func main() { NotifyCommand.main() }
}
