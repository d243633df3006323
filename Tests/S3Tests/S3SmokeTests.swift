import Testing
@testable import S3

@Suite struct S3SmokeTests {
    @Test func moduleLoads() {
        #expect(Bool(true))
    }
}
