import Testing
@testable import Notify

@Suite struct NotifySmokeTests {
    @Test func moduleLoads() {
        #expect(Bool(true))
    }
}
