use super::*;

#[test]
fn verification_code_is_four_digits_from_the_digest() {
    let d = openssl::sha::sha256(b"C");
    let vc = verification_code(&d);
    assert_eq!(vc.len(), 4);
    let h = openssl::sha::sha256(&d);
    assert_eq!(
        vc,
        format!("{:04}", (u32::from(h[30]) * 256 + u32::from(h[31])) % 10000)
    );
    assert_ne!(verification_code(&openssl::sha::sha256(b"D")), "");
}

#[test]
fn display_message_is_exact() {
    assert_eq!(
        display_message("r", "p@merchant.x", "EUR1.00", "0042", "abc", "2026-01-01T00:00:00Z"),
        "tmcs-display-v1\nrequest_id:r\npayee:p@merchant.x\namount:EUR1.00\nverification_code:0042\ndtbs_sha256:abc\nexpires_at:2026-01-01T00:00:00Z\n"
    );
}
