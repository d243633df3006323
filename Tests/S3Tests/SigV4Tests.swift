import BackupKit
import Foundation
import Testing

@testable import S3

/// AWS's published Signature Version 4 test suite (aws-sig-v4-test-suite) and the worked S3 examples of
/// "Authenticating Requests: Using the Authorization Header" (sig-v4-header-based-auth). Public facts, kept here.
@Suite struct SigV4TestSuiteVectors {
    static let credentials = AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    static let date = UTCTime.parseCompact("20150830T123600Z")!
    static let signer = SigV4Signer(region: "us-east-1", service: "service")

    struct Vector: Sendable, CustomTestStringConvertible {
        var name: String
        var method = "GET"
        var path = "/"
        var query: [(String, String)] = []
        var headers: [HTTPHeader] = []
        var body = ""
        var signedHeaders = "host;x-amz-date"
        var signature: String
        var testDescription: String { name }
    }

    static let vectors: [Vector] = [
        Vector(name: "get-vanilla", signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        Vector(
            name: "get-vanilla-query-order-key-case", query: [("Param2", "value2"), ("Param1", "value1")],
            signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
        Vector(
            name: "get-vanilla-empty-query-key", query: [("Param1", "value1")],
            signature: "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"),
        Vector(
            name: "get-vanilla-utf8-query", query: [("ሴ", "bar")],
            signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
        Vector(
            name: "get-unreserved", path: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
        Vector(name: "get-utf8", path: "/ሴ", signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
        Vector(
            name: "get-space", path: "/example space/",
            signature: "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"),
        Vector(
            name: "get-header-value-trim", headers: [HTTPHeader("My-Header1", " value1"), HTTPHeader("My-Header2", " \"a   b   c\"")],
            signedHeaders: "host;my-header1;my-header2;x-amz-date",
            signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
        Vector(name: "post-vanilla", method: "POST", signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        Vector(
            name: "post-x-www-form-urlencoded", method: "POST",
            headers: [HTTPHeader("Content-Type", "application/x-www-form-urlencoded")], body: "Param1=value1",
            signedHeaders: "content-type;host;x-amz-date",
            signature: "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
    ]

    @Test(arguments: vectors)
    func signsLikeTheTestSuite(vector: Vector) {
        let headers = vector.headers + [HTTPHeader("Host", "example.amazonaws.com")]
        let payload = SHA256Digest.hash(Data(vector.body.utf8)).hexString
        let signed = Self.signer.sign(
            method: vector.method, path: URIEncoding.encode(vector.path, keepSlash: true), query: vector.query, headers: headers,
            payloadHash: payload, credentials: Self.credentials, date: Self.date)
        let authorization = signed.last { $0.name == "Authorization" }?.value
        #expect(
            authorization
                == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=\(vector.signedHeaders), Signature=\(vector.signature)"
        )
    }

    @Test func getVanillaStageByStage() {
        let headers = [HTTPHeader("Host", "example.amazonaws.com"), HTTPHeader("X-Amz-Date", "20150830T123600Z")]
        let canonical = Self.signer.canonicalRequest(
            method: "GET", path: "/", query: [], headers: headers, payloadHash: SigV4Signer.emptyPayloadHash)
        #expect(
            canonical
                == "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )
        let toSign = Self.signer.stringToSign(canonicalRequest: canonical, date: Self.date)
        #expect(
            toSign
                == "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        )
        #expect(
            Self.signer.signature(stringToSign: toSign, secret: Self.credentials.secretAccessKey, date: Self.date)
                == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    }

    @Test func queryOrderAndUTF8AreCanonicalised() {
        #expect(URIEncoding.canonicalQuery([("Param2", "value2"), ("Param1", "value1")]) == "Param1=value1&Param2=value2")
        #expect(URIEncoding.canonicalQuery([("ሴ", "bar")]) == "%E1%88%B4=bar")
        #expect(URIEncoding.canonicalQuery([("a", "2"), ("a", "1"), ("uploads", "")]) == "a=1&a=2&uploads=")
    }

    /// The IAM example of AWS's signing guide derives this key.
    @Test func signingKeyOfTheIAMExample() {
        let signer = SigV4Signer(region: "us-east-1", service: "iam")
        #expect(
            signer.signingKey(secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", date: Self.date).hexString
                == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9")
    }
}

@Suite struct S3DocumentationExamples {
    static let credentials = AWSCredentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    static let date = UTCTime.parseCompact("20130524T000000Z")!
    static let signer = SigV4Signer(region: "us-east-1")
    static let host = HTTPHeader("Host", "examplebucket.s3.amazonaws.com")

    func check(
        method: String, key: String, query: [(String, String)], headers: [HTTPHeader], payload: String,
        canonicalHash: String, signedHeaders: String, signature: String
    ) {
        let all = headers + [Self.host, HTTPHeader("x-amz-content-sha256", payload), HTTPHeader("x-amz-date", "20130524T000000Z")]
        let path = "/" + URIEncoding.encode(key, keepSlash: true)
        let canonical = Self.signer.canonicalRequest(method: method, path: path, query: query, headers: all, payloadHash: payload)
        #expect(SHA256Digest.hash(Data(canonical.utf8)).hexString == canonicalHash)
        let signed = Self.signer.sign(
            method: method, path: path, query: query, headers: all.filter { $0.name != "x-amz-date" }, payloadHash: payload,
            credentials: Self.credentials, date: Self.date)
        #expect(
            signed.last?.value
                == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=\(signedHeaders), Signature=\(signature)"
        )
    }

    @Test func getObjectWithRange() {
        check(
            method: "GET", key: "test.txt", query: [], headers: [HTTPHeader("Range", "bytes=0-9")], payload: SigV4Signer.emptyPayloadHash,
            canonicalHash: "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
            signedHeaders: "host;range;x-amz-content-sha256;x-amz-date",
            signature: "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test func putObjectWithADollarInTheKey() {
        let payload = SHA256Digest.hash(Data("Welcome to Amazon S3.".utf8)).hexString
        #expect(payload == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        #expect(URIEncoding.encode("test$file.text", keepSlash: true) == "test%24file.text")
        check(
            method: "PUT", key: "test$file.text", query: [],
            headers: [HTTPHeader("Date", "Fri, 24 May 2013 00:00:00 GMT"), HTTPHeader("x-amz-storage-class", "REDUCED_REDUNDANCY")],
            payload: payload, canonicalHash: "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
            signedHeaders: "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
            signature: "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    @Test func getBucketLifecycle() {
        check(
            method: "GET", key: "", query: [("lifecycle", "")], headers: [], payload: SigV4Signer.emptyPayloadHash,
            canonicalHash: "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
            signedHeaders: "host;x-amz-content-sha256;x-amz-date",
            signature: "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
    }

    @Test func listObjectsWithMaxKeysAndPrefix() {
        check(
            method: "GET", key: "", query: [("prefix", "J"), ("max-keys", "2")], headers: [], payload: SigV4Signer.emptyPayloadHash,
            canonicalHash: "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
            signedHeaders: "host;x-amz-content-sha256;x-amz-date",
            signature: "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test func aSessionTokenIsSentAndSigned() {
        var credentials = Self.credentials
        credentials.sessionToken = "token-value"
        let signed = Self.signer.sign(
            method: "GET", path: "/k", query: [], headers: [Self.host], payloadHash: SigV4Signer.emptyPayloadHash,
            credentials: credentials, date: Self.date)
        #expect(signed.contains(HTTPHeader("x-amz-security-token", "token-value")))
        #expect(signed.last?.value.contains("SignedHeaders=host;x-amz-date;x-amz-security-token,") == true)
        #expect(!"\(credentials)".contains(credentials.secretAccessKey))
    }
}

@Suite struct URIEncodingTests {
    @Test(arguments: [
        ("a b", "a%20b"), ("a+b", "a%2Bb"), ("a=b", "a%3Db"), ("a$b", "a%24b"), ("a;b", "a%3Bb"), ("é", "%C3%A9"),
        ("鍵", "%E9%8D%B5"), ("dir/file", "dir/file"), ("~-._", "~-._"), ("%", "%25"), ("*'()!", "%2A%27%28%29%21"),
    ])
    func keysFollowS3Rules(raw: String, encoded: String) {
        #expect(URIEncoding.encode(raw, keepSlash: true) == encoded)
    }

    @Test func slashIsEncodedOutsidePaths() {
        #expect(URIEncoding.encode("a/b") == "a%2Fb")
    }

    @Test func compactTimestampsRoundTripAndRejectNonsense() {
        let date = UTCTime.parseCompact("20240229T235959Z")
        #expect(date != nil)
        #expect(date.map(UTCTime.compact) == "20240229T235959Z")
        for bad in ["20230229T000000Z", "20240101T240000Z", "2024010T1000000Z", "20240101 000000Z", "", "latest", "20240101T000000"] {
            #expect(UTCTime.parseCompact(bad) == nil, "\(bad)")
        }
        #expect(UTCTime.parseISO8601("2024-05-01T12:30:00.000Z") == UTCTime.parseCompact("20240501T123000Z"))
    }

    @Test func md5OfRFC1321Vectors() {
        #expect(MD5Digest.hash(Data()).hexString == "d41d8cd98f00b204e9800998ecf8427e")
        #expect(MD5Digest.hash(Data("abc".utf8)).hexString == "900150983cd24fb0d6963f7d28e17f72")
    }

    @Test func xmlTextDecodesEntities() {
        let xml = "<R><Key>a&amp;b&lt;c&#x41;&#66;</Key><Key>second</Key><Message>it&apos;s</Message></R>"
        #expect(XMLText.all("Key", in: xml) == ["a&b<cAB", "second"])
        #expect(XMLText.first("Message", in: xml) == "it's")
        #expect(XMLText.first("Missing", in: xml) == nil)
        #expect(XMLText.escape("a&<>\"'") == "a&amp;&lt;&gt;&quot;&apos;")
    }
}
