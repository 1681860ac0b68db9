//! The fuzz target's seed corpus, run as an ordinary test (CI has no nightly
//! toolchain for `cargo fuzz`; this keeps the target and its seeds honest).

#[test]
fn fuzz_seed_corpus_runs_and_classifies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ims_parse");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let data = std::fs::read(&path).unwrap();
        // The fuzz target itself: must not panic, and round-trips what parses.
        tmcs::ims::fuzz::fuzz_parse(&data);
        let parsed = tmcs::ims::ImsMessage::parse(&data);
        if name.starts_with("valid_") {
            assert!(parsed.is_ok(), "{name}: {:?}", parsed.err());
        } else if name.starts_with("invalid_") {
            assert!(parsed.is_err(), "{name} should be refused");
        }
        seen += 1;
    }
    assert!(seen >= 5, "seed corpus missing ({seen} files)");
}
