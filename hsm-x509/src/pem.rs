//! A small, strict PEM (RFC 7468) scanner that keeps decoded bytes in zeroizing buffers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

use crate::Error;

/// One `-----BEGIN label-----` ... `-----END label-----` block.
pub(crate) struct PemBlock {
    pub(crate) label: String,
    pub(crate) der: Zeroizing<Vec<u8>>,
    /// Whether the block carried RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`, ...).
    pub(crate) encrypted_headers: bool,
}

/// Whether `input` looks like PEM rather than DER.
pub(crate) fn is_pem(input: &[u8]) -> bool {
    // DER always starts with a SEQUENCE tag; PEM may have explanatory text before its blocks.
    input.first() != Some(&0x30) && input.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Every block in `input`, in order. Text between blocks (e.g. OpenSSL's "Bag Attributes") is
/// ignored.
pub(crate) fn parse(input: &[u8]) -> Result<Vec<PemBlock>, Error> {
    let malformed = |line: usize, reason: &'static str| Error::MalformedPem { line, reason };
    let text = std::str::from_utf8(input).map_err(|e| {
        let line = input[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        malformed(line, "not UTF-8 text")
    })?;

    let mut blocks = Vec::new();
    let mut current: Option<(String, Zeroizing<String>, bool, usize)> = None;
    for (index, raw_line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw_line.trim();
        match &mut current {
            None => {
                if let Some(rest) = line.strip_prefix("-----BEGIN ") {
                    let label = rest
                        .strip_suffix("-----")
                        .ok_or(malformed(line_no, "BEGIN line does not end with -----"))?;
                    if label.is_empty() || label.ends_with('-') {
                        return Err(malformed(line_no, "empty or malformed label"));
                    }
                    current = Some((
                        label.to_owned(),
                        Zeroizing::new(String::new()),
                        false,
                        line_no,
                    ));
                } else if line.starts_with("-----END ") {
                    return Err(malformed(line_no, "END line without a BEGIN line"));
                }
            }
            Some((label, body, headers, _)) => {
                if let Some(rest) = line.strip_prefix("-----END ") {
                    let end_label = rest
                        .strip_suffix("-----")
                        .ok_or(malformed(line_no, "END line does not end with -----"))?;
                    if end_label != label {
                        return Err(malformed(line_no, "END label does not match BEGIN label"));
                    }
                    let mut der = Zeroizing::new(Vec::with_capacity(body.len() * 3 / 4));
                    BASE64
                        .decode_vec(body.as_bytes(), &mut der)
                        .map_err(|_| malformed(line_no, "invalid base64 in the block"))?;
                    if der.is_empty() {
                        return Err(malformed(line_no, "empty block"));
                    }
                    blocks.push(PemBlock {
                        label: std::mem::take(label),
                        der,
                        encrypted_headers: *headers,
                    });
                    current = None;
                } else if line.starts_with("-----BEGIN ") {
                    return Err(malformed(
                        line_no,
                        "BEGIN line inside a block (missing END line)",
                    ));
                } else if line.contains(':') {
                    // RFC 1421 headers; only legacy encryption uses them in practice.
                    *headers |= line.starts_with("Proc-Type:") || line.starts_with("DEK-Info:");
                } else {
                    body.push_str(line);
                }
            }
        }
    }
    if let Some((_, _, _, begin_line)) = current {
        return Err(malformed(begin_line, "block has no END line"));
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_blocks_and_skips_text() {
        let input = b"Bag Attributes\n-----BEGIN A-----\nAQID\n-----END A-----\njunk\r\n-----BEGIN B C-----\r\nBA==\r\n-----END B C-----\r\n";
        let blocks = parse(input).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "A");
        assert_eq!(blocks[0].der.as_slice(), [1, 2, 3]);
        assert_eq!(blocks[1].label, "B C");
        assert_eq!(blocks[1].der.as_slice(), [4]);
        assert!(is_pem(input));
        assert!(!is_pem(&[0x30, 0x82, 0x01]));
    }

    #[test]
    fn reports_line_numbers() {
        let cases: [(&[u8], usize, &str); 6] = [
            (b"-----BEGIN A-----\nAQID\n", 1, "no END line"),
            (
                b"\n-----BEGIN A-----\nAQID\n-----END B-----\n",
                4,
                "does not match",
            ),
            (
                b"-----BEGIN A-----\n!!!!\n-----END A-----\n",
                3,
                "invalid base64",
            ),
            (b"-----BEGIN A-----\n-----END A-----\n", 2, "empty block"),
            (b"-----END A-----\n", 1, "without a BEGIN"),
            (b"-----BEGIN A\n", 1, "does not end"),
        ];
        for (input, line, reason) in cases {
            match parse(input) {
                Err(Error::MalformedPem { line: l, reason: r }) => {
                    assert_eq!(l, line, "{reason}");
                    assert!(r.contains(reason), "{r}");
                }
                other => panic!("{reason}: {:?}", other.map(|b| b.len())),
            }
        }
    }

    #[test]
    fn flags_legacy_encryption() {
        let input = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAQID\n-----END RSA PRIVATE KEY-----\n";
        assert!(parse(input).unwrap()[0].encrypted_headers);
    }

    proptest! {
        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&input);
            let _ = is_pem(&input);
        }

        #[test]
        fn round_trips_any_bytes(data in proptest::collection::vec(any::<u8>(), 1..300)) {
            let body = BASE64.encode(&data);
            let mut text = String::from("-----BEGIN X-----\n");
            for chunk in body.as_bytes().chunks(64) {
                text.push_str(std::str::from_utf8(chunk).unwrap());
                text.push('\n');
            }
            text.push_str("-----END X-----\n");
            let blocks = parse(text.as_bytes()).unwrap();
            prop_assert_eq!(blocks[0].der.as_slice(), data.as_slice());
        }
    }
}
