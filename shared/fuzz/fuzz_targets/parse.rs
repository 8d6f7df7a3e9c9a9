//! Fuzz target `parse`: arbitrary bytes through the Alloy syntax checker must never panic,
//! hang or overflow the stack, and the byte and string entry points must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster_shared::alloy;

fuzz_target!(|data: &[u8]| {
    let diags = alloy::check_bytes(data);
    for d in &diags {
        assert!(d.offset <= data.len(), "diagnostic past the end: {d}");
        assert!(d.line >= 1 && d.col >= 1, "{d}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(alloy::check(text), diags);
        let parsed = alloy::parse(text);
        assert_eq!(parsed.is_ok(), diags.is_empty());
        if let Ok(file) = parsed {
            for (name, _label) in alloy::blocks(&file) {
                assert!(!name.is_empty());
            }
        }
        let _ = alloy::parse_expression(text);
    }
});
