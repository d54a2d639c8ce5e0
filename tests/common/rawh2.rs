//! Hand-made HTTP/2 bytes for the fault tests: the client preface, frames
//! and the HPACK of a Tokenize call's headers (no Huffman, no dynamic
//! table), to send what no well-behaved client would.

/// The client preface and an empty SETTINGS frame.
pub fn h2_start() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(0x4, 0, 0, &[]));
    bytes
}

/// One frame: 24-bit length, type, flags, stream id, payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame size");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// A HEADERS frame (END_HEADERS) opening a Tokenize call on stream 1.
pub fn tokenize_headers_frame(api_key: &str) -> Vec<u8> {
    frame(0x1, 0x4, 1, &tokenize_headers(api_key))
}

/// HPACK of a Tokenize call's headers.
pub fn tokenize_headers(api_key: &str) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        let len = u8::try_from(s.len()).expect("short header");
        assert!(len < 127, "header too long for a one-byte length");
        out.push(len);
        out.extend(s.as_bytes());
    }
    let mut out = vec![0x83, 0x86]; // :method POST, :scheme http
    out.push(0x04); // :path, literal value
    string(&mut out, "/tokenvault.v1.TokenVault/Tokenize");
    out.push(0x01); // :authority
    string(&mut out, "localhost");
    for (name, value) in [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("authorization", &format!("Bearer {api_key}")),
    ] {
        out.push(0x00); // literal name and value, not indexed
        string(&mut out, name);
        string(&mut out, value);
    }
    out
}
