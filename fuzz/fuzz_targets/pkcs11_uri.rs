//! The PKCS#11 URI parser on arbitrary text: never panics, and whatever parses prints to a URI
//! that parses to the same attributes.
#![no_main]

use hsm_pkcs11::Pkcs11Uri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(uri) = Pkcs11Uri::parse(text) {
        let printed = uri.to_string();
        let again = Pkcs11Uri::parse(&printed).expect("printed URI parses");
        assert_eq!(again.token, uri.token);
        assert_eq!(again.object, uri.object);
        assert_eq!(again.id, uri.id);
        assert_eq!(again.object_type, uri.object_type);
        assert_eq!(again.slot_id, uri.slot_id);
        assert_eq!(again.module_name, uri.module_name);
    }
});
