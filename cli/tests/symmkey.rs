//! `symmkey derive` against the published vector, and `sas` tokens checked by an independent
//! HMAC computation.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

#[test]
fn derive_matches_the_published_vector() {
    let run = run([
        "symmkey",
        "derive",
        "--group-key",
        GROUP_KEY,
        "--registration-id",
        GROUP_DEVICE_ID,
    ]);
    run.ok();
    assert_eq!(run.stdout, format!("{GROUP_DERIVED_KEY}\n"));
    assert!(run.stderr.is_empty(), "{run}");
}

#[test]
fn derive_refuses_bad_input_in_one_line() {
    run([
        "symmkey",
        "derive",
        "--group-key",
        "not base64!",
        "--registration-id",
        "dev",
    ])
    .fails(2, "not valid base64");
    run([
        "symmkey",
        "derive",
        "--group-key",
        GROUP_KEY,
        "--registration-id",
        "UPPER CASE",
    ])
    .fails(2, "invalid registration id");
}

/// Splits `SharedAccessSignature k=v&k=v` into its fields.
fn fields(token: &str) -> Vec<(String, String)> {
    let body = token.strip_prefix("SharedAccessSignature ").unwrap();
    body.split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    &fields.iter().find(|(k, _)| k == name).unwrap().1
}

fn url_decode(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn sas_token_parses_and_verifies() {
    let resource = "0ne00000EMU/registrations/sas-device";
    let run = run([
        "sas",
        "--resource",
        resource,
        "--key",
        DEVICE_KEY,
        "--key-name",
        "registration",
        "--expiry-at",
        "1900000000",
    ]);
    run.ok();
    assert!(run.stderr.contains("debugging aid"), "{run}");
    let token = run.stdout.trim();
    assert_eq!(run.stdout.lines().count(), 1, "{run}");
    let fields = fields(token);
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["sr", "sig", "se", "skn"]);
    let sr = field(&fields, "sr");
    assert_eq!(sr, "0ne00000EMU%2fregistrations%2fsas-device");
    assert_eq!(url_decode(sr), resource);
    assert_eq!(field(&fields, "se"), "1900000000");
    assert_eq!(field(&fields, "skn"), "registration");
    // The signature is HMAC-SHA256 over exactly "{sr}\n{se}" with the decoded key.
    let mut mac = Hmac::<Sha256>::new_from_slice(&BASE64.decode(DEVICE_KEY).unwrap()).unwrap();
    mac.update(format!("{sr}\n1900000000").as_bytes());
    let expected = BASE64.encode(mac.finalize().into_bytes());
    assert_eq!(url_decode(field(&fields, "sig")), expected);
}

#[test]
fn sas_relative_expiry_and_plain_encoding() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let run = run([
        "sas",
        "--resource",
        "hub.azure-devices.net/devices/d1",
        "--key",
        DEVICE_KEY,
        "--expiry-secs",
        "600",
        "--encoding",
        "plain",
    ]);
    run.ok();
    let fields = fields(run.stdout.trim());
    assert_eq!(field(&fields, "sr"), "hub.azure-devices.net/devices/d1");
    assert!(fields.iter().all(|(k, _)| k != "skn"));
    let se: u64 = field(&fields, "se").parse().unwrap();
    assert!((now + 590..=now + 700).contains(&se), "{se} vs {now}");
    let mut mac = Hmac::<Sha256>::new_from_slice(&BASE64.decode(DEVICE_KEY).unwrap()).unwrap();
    mac.update(format!("hub.azure-devices.net/devices/d1\n{se}").as_bytes());
    assert_eq!(
        url_decode(field(&fields, "sig")),
        BASE64.encode(mac.finalize().into_bytes())
    );
}

#[test]
fn sas_refuses_a_bad_key_in_one_line() {
    run(["sas", "--resource", "r", "--key", "%%%"]).fails(2, "--key is not valid base64");
    run(["sas", "--resource", "", "--key", DEVICE_KEY]).fails(2, "resource is empty");
}
