import Testing
@testable import MLflowScan

@Suite struct MLflowScanSmokeTests {
    @Test func moduleLoads() {
        #expect(Bool(true))
    }
}
