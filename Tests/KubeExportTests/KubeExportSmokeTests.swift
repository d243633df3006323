import Testing
@testable import KubeExport

@Suite struct KubeExportSmokeTests {
    @Test func moduleLoads() {
        #expect(Bool(true))
    }
}
