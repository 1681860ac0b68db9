//! Fuzzing entry point (used by `fuzz/fuzz_targets/ims_parse.rs`).

use super::ImsMessage;

/// Parses `data`; when that succeeds, checks that serialising and parsing
/// again yields the same message and the same canonical inputs. Panics
/// (on purpose, for the fuzzer) if the round trip breaks.
#[allow(clippy::panic)]
pub fn fuzz_parse(data: &[u8]) {
    let Ok(msg) = ImsMessage::parse(data) else {
        return;
    };
    let xml = msg.to_xml();
    match ImsMessage::parse(xml.as_bytes()) {
        Ok(again) => {
            if again != msg {
                panic!("round trip changed the message");
            }
            if again.canonical_m() != msg.canonical_m()
                || again.canonical_c().ok() != msg.canonical_c().ok()
            {
                panic!("round trip changed the canonical inputs");
            }
        }
        Err(e) => panic!("serialised message does not parse: {e}"),
    }
}
