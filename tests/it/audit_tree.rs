//! The audit log's Merkle tree (CONTRACT §13, issue #12): signed tree heads,
//! inclusion and consistency proofs, checked by an RFC 9162 verifier
//! written here from the RFC's text (§2.1.1, §2.1.3.2, §2.1.4.2), not from
//! `tmcs::audit::merkle`; tampering; the cost of a proof in reads.

use std::time::Instant;

use base64::Engine;
use diesel::RunQueryDsl;
use openssl::pkey::{PKey, Public};
use serde_json::json;
use tmcs::audit::merkle::SignedTreeHead;
use tmcs::audit::tree::{self, ConsistencyProof, InclusionProof};
use tmcs::audit::{self, Actor, Event, NewEvent};
use tmcs::store::{audit_rows, DbConn, Store, StoreError, StoreSettings};

use crate::support::{get_json, openssl, Db, Env, Served};
use crate::{on_both_backends, on_both_backends_async};

// ---------------------------------------------------------------------------
// RFC 9162, independently.

type H = [u8; 32];

fn sha256(parts: &[&[u8]]) -> H {
    let mut h = openssl::sha::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finish()
}

/// §2.1.1: the leaf hash, HASH(0x00 || d(m)); here d(m) is the event's hash.
fn rfc_leaf(event_hash_hex: &str) -> H {
    let raw = hex::decode(event_hash_hex).unwrap();
    assert_eq!(raw.len(), 32);
    sha256(&[&[0u8], &raw])
}

/// §2.1.1: HASH(0x01 || left || right).
fn rfc_node(left: &H, right: &H) -> H {
    sha256(&[&[1u8], left, right])
}

/// §2.1.1: MTH(D_n) over leaf hashes; k is the largest power of two
/// smaller than n.
fn rfc_mth(leaves: &[H]) -> H {
    match leaves.len() {
        0 => sha256(&[]),
        1 => leaves[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            rfc_node(&rfc_mth(&leaves[..k]), &rfc_mth(&leaves[k..]))
        }
    }
}

/// §2.1.3.2, step by step: does `inclusion_path` prove leaf `leaf_index`
/// with hash `hash` in the tree of `tree_size` with root `root_hash`?
fn rfc_verify_inclusion(
    leaf_index: u64,
    tree_size: u64,
    hash: &H,
    inclusion_path: &[H],
    root_hash: &H,
) -> bool {
    // 1. leaf_index >= tree_size fails.
    if leaf_index >= tree_size {
        return false;
    }
    // 2. fn = leaf_index, sn = tree_size - 1. 3. r = hash.
    let mut fn_ = leaf_index;
    let mut sn = tree_size - 1;
    let mut r = *hash;
    // 4. For each value p in the inclusion_path array:
    for p in inclusion_path {
        // a. If sn is 0, stop and fail.
        if sn == 0 {
            return false;
        }
        // b. If LSB(fn) is set, or if fn is equal to sn:
        if fn_ & 1 == 1 || fn_ == sn {
            // i. r = HASH(0x01 || p || r)
            r = rfc_node(p, &r);
            // ii. If LSB(fn) is not set, right-shift fn and sn equally
            //     until either LSB(fn) is set or fn is 0.
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            // Otherwise: r = HASH(0x01 || r || p)
            r = rfc_node(&r, p);
        }
        // c. Right-shift both fn and sn one time.
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5. sn must be 0 and r equal to root_hash.
    sn == 0 && &r == root_hash
}

/// §2.1.4.2, step by step, for 0 < first < second.
fn rfc_verify_consistency(
    first: u64,
    second: u64,
    first_hash: &H,
    second_hash: &H,
    consistency_path: &[H],
) -> bool {
    assert!(0 < first && first < second);
    // 1. An empty consistency_path fails.
    if consistency_path.is_empty() {
        return false;
    }
    // 2. If first is an exact power of 2, prepend first_hash.
    let mut path: Vec<H> = Vec::new();
    if first.is_power_of_two() {
        path.push(*first_hash);
    }
    path.extend_from_slice(consistency_path);
    // 3. fn = first - 1, sn = second - 1.
    let mut fn_ = first - 1;
    let mut sn = second - 1;
    // 4. If LSB(fn) is set, right-shift fn and sn equally until it is not.
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5. fr and sr = the first value of the path.
    let mut fr = path[0];
    let mut sr = path[0];
    // 6. For each subsequent value c:
    for c in &path[1..] {
        // a. If sn is 0, stop and fail.
        if sn == 0 {
            return false;
        }
        // b. If LSB(fn) is set, or if fn is equal to sn:
        if fn_ & 1 == 1 || fn_ == sn {
            // i. fr = HASH(0x01 || c || fr), sr = HASH(0x01 || c || sr)
            fr = rfc_node(c, &fr);
            sr = rfc_node(c, &sr);
            // ii. If LSB(fn) is not set, right-shift fn and sn equally until
            //     either LSB(fn) is set or fn is 0.
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            // Otherwise: sr = HASH(0x01 || sr || c)
            sr = rfc_node(&sr, c);
        }
        // c. Right-shift both fn and sn one time.
        fn_ >>= 1;
        sn >>= 1;
    }
    // 7. fr = first_hash, sr = second_hash, sn = 0.
    &fr == first_hash && &sr == second_hash && sn == 0
}

fn unhex(h: &str) -> H {
    let v = hex::decode(h).unwrap_or_else(|_| panic!("not hex: {h}"));
    v.try_into().unwrap_or_else(|_| panic!("not 32 bytes: {h}"))
}

fn unhex_all(v: &[String]) -> Vec<H> {
    v.iter().map(|h| unhex(h)).collect()
}

/// The tree head's signature, checked here with the audit certificate
/// (CONTRACT §13's message, built here).
fn sth_sig_ok(sth: &SignedTreeHead, key: &PKey<Public>) -> bool {
    let msg = format!(
        "tmcs-sth-v1\n{}\n{}\n{}\n",
        sth.tree_size, sth.root_hash, sth.ts
    );
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&sth.sig)
        .unwrap();
    let mut v = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), key).unwrap();
    v.verify_oneshot(&sig, msg.as_bytes()).unwrap()
}

// ---------------------------------------------------------------------------
// Helpers on the real service.

fn raw(store: &Store, sql: &str) {
    store
        .write(|c: &mut DbConn| -> Result<(), StoreError> {
            diesel::sql_query(sql).execute(c)?;
            Ok(())
        })
        .unwrap();
}

fn test_event(i: i64) -> NewEvent {
    NewEvent {
        actor: Actor::System,
        action: "test.tree",
        subject: Some(format!("tree:{i}")),
        details: json!({ "i": i }),
    }
}

fn head_seq(store: &Store) -> i64 {
    store.read(audit_rows::head).unwrap().map_or(0, |(s, _)| s)
}

fn all_events(store: &Store) -> Vec<Event> {
    let mut out = Vec::new();
    audit::for_each_stored(store, |r| -> Result<(), StoreError> {
        out.push(Event::from_row(r).unwrap());
        Ok(())
    })
    .unwrap();
    out
}

/// Appends events one at a time up to `n`, signing a checkpoint (and so a
/// tree head) at every size. Returns the size the log had before.
fn grow_with_a_tree_head_at_every_size(env: &Env, app: &tmcs::app::App, n: i64) -> i64 {
    let store = &app.svc.store;
    let before = head_seq(store);
    assert!(before >= 1 && before < n, "init wrote {before} events");
    for seq in before + 1..=n {
        store
            .write(|c| audit::append(c, env.now(), test_event(seq)))
            .unwrap();
        let cp = audit::make_checkpoint(
            store,
            app.svc.custody.as_ref(),
            &app.svc.pki.keys.audit,
            env.now(),
        )
        .unwrap()
        .expect("a new checkpoint");
        assert_eq!(cp.seq, seq);
    }
    before
}

// ---------------------------------------------------------------------------
// Acceptance "Proofs".

/// Trees of every size 1..=300: each signed tree head's root is the MTH
/// computed here and its signature verifies with the audit certificate
/// (here, and with the openssl CLI for some); every inclusion proof (every
/// seq in every size) and every consistency proof (every pair of sizes)
/// verifies with the RFC verifier above; some come over HTTPS through the
/// real routes, with exactly the CONTRACT §13 members.
async fn proofs_of_every_size_verify(db: Db) {
    let Some(env) = Env::new(db, "proofs_of_every_size_verify") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let app = &s.app;
    let store = &app.svc.store;
    const N: i64 = 300;
    let t = Instant::now();
    let signed_from = grow_with_a_tree_head_at_every_size(&env, app, N);
    eprintln!(
        "{db:?}: {N} events with a tree head each in {:?}",
        t.elapsed()
    );

    let events = all_events(store);
    assert_eq!(events.len() as i64, N);
    let leaves: Vec<H> = events.iter().map(|e| rfc_leaf(&e.hash)).collect();
    let roots: Vec<H> = (0..=N as usize).map(|n| rfc_mth(&leaves[..n])).collect();

    // The audit certificate, as an auditor gets it.
    let mut res = s
        .anonymous()
        .get(s.url("/pki/audit.pem"))
        .send()
        .await
        .unwrap();
    let pem = res.body().await.unwrap().to_vec();
    let cert = openssl::x509::X509::from_pem(&pem).unwrap();
    let key = cert.public_key().unwrap();
    let cert_file = env.path().join("audit.pem");
    std::fs::write(&cert_file, &pem).unwrap();
    let pub_file = env.path().join("audit.pub.pem");
    let (ok, out) = openssl(&[
        "x509",
        "-in",
        cert_file.to_str().unwrap(),
        "-pubkey",
        "-noout",
        "-out",
        pub_file.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");

    // Signed tree heads: one per size from init's checkpoint on.
    let mut sths = std::collections::BTreeMap::new();
    for n in 1..=N {
        let sth = tree::sth_of_size(store, n).unwrap();
        if n < signed_from {
            assert!(sth.is_none(), "no tree head was signed at {n}");
            continue;
        }
        let sth = sth.unwrap_or_else(|| panic!("a tree head of size {n}"));
        assert_eq!(sth.tree_size, n);
        assert_eq!(
            sth.root_hash,
            hex::encode(roots[n as usize]),
            "tree head of size {n}: root differs from the MTH computed here"
        );
        assert!(sth_sig_ok(&sth, &key), "tree head of size {n}: signature");
        let mut forged = sth.clone();
        forged.root_hash = hex::encode(roots[n as usize - 1]);
        assert!(!sth_sig_ok(&forged, &key), "a changed root must not verify");
        sths.insert(n, sth);
    }
    assert_eq!(tree::latest_sth(store).unwrap().as_ref(), sths.get(&N));
    for n in [signed_from, signed_from + 1, 128, 255, 256, N] {
        let sth = &sths[&n];
        let dir = env.path();
        let msg = dir.join(format!("sth-{n}.txt"));
        let sig = dir.join(format!("sth-{n}.sig"));
        std::fs::write(
            &msg,
            format!("tmcs-sth-v1\n{n}\n{}\n{}\n", sth.root_hash, sth.ts),
        )
        .unwrap();
        std::fs::write(
            &sig,
            base64::engine::general_purpose::STANDARD
                .decode(&sth.sig)
                .unwrap(),
        )
        .unwrap();
        let (ok, out) = openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            pub_file.to_str().unwrap(),
            "-signature",
            sig.to_str().unwrap(),
            msg.to_str().unwrap(),
        ]);
        assert!(ok && out.contains("Verified OK"), "size {n}: {out}");
    }

    // Every inclusion proof, in every tree size. On PostgreSQL, where every
    // node read is a round trip of its own (some ten times SQLite's in a
    // debug build), every proof in the trees up to 64 events and, in the
    // larger ones, those of the first, middle and last event, and the
    // consistency proofs from size 1, to the next size and to the largest:
    // some 6,000 proofs of each kind instead of 45,150.
    let full = db == Db::Sqlite;
    let t = Instant::now();
    let mut count = 0;
    for n in 1..=N {
        let root = roots[n as usize];
        for seq in (1..=n).filter(|&seq| full || n <= 64 || [1, n / 2 + 1, n].contains(&seq)) {
            let p = tree::inclusion(store, seq, n).unwrap();
            assert_eq!((p.seq, p.tree_size), (seq, n));
            let leaf = leaves[seq as usize - 1];
            assert_eq!(p.leaf_hash, hex::encode(leaf), "leaf of seq {seq}");
            let path = unhex_all(&p.audit_path);
            assert!(
                rfc_verify_inclusion(seq as u64 - 1, n as u64, &leaf, &path, &root),
                "inclusion of seq {seq} in size {n}"
            );
            if seq == n / 2 + 1 {
                // The verifier can fail: a changed path or leaf does not lead
                // to the root.
                if let Some(first) = path.first() {
                    let mut bad = path.clone();
                    bad[0] = rfc_node(first, first);
                    assert!(!rfc_verify_inclusion(
                        seq as u64 - 1,
                        n as u64,
                        &leaf,
                        &bad,
                        &root
                    ));
                }
                let other = rfc_node(&leaf, &leaf);
                assert!(!rfc_verify_inclusion(
                    seq as u64 - 1,
                    n as u64,
                    &other,
                    &path,
                    &root
                ));
            }
            count += 1;
        }
    }
    eprintln!("{db:?}: {count} inclusion proofs in {:?}", t.elapsed());

    // Every consistency proof between two sizes (all signed from
    // `signed_from` on; below that, against the MTH computed here).
    let t = Instant::now();
    let mut count = 0;
    for m in 1..=N {
        for n in (m..=N).filter(|&n| full || n <= 64 || [m, m + 1, N].contains(&n) || m == 1) {
            let p = tree::consistency(store, m, n).unwrap();
            assert_eq!((p.first, p.second), (m, n));
            let proof = unhex_all(&p.proof);
            let (r1, r2) = (roots[m as usize], roots[n as usize]);
            if let (Some(a), Some(b)) = (sths.get(&m), sths.get(&n)) {
                assert_eq!(
                    (a.root_hash.as_str(), b.root_hash.as_str()),
                    (hex::encode(r1).as_str(), hex::encode(r2).as_str())
                );
            }
            if m == n {
                assert!(proof.is_empty(), "PROOF(n, D[n]) is empty");
            } else {
                assert!(
                    rfc_verify_consistency(m as u64, n as u64, &r1, &r2, &proof),
                    "consistency {m} -> {n}"
                );
                if n == N {
                    let wrong = roots[m as usize - 1];
                    assert!(!rfc_verify_consistency(
                        m as u64, n as u64, &wrong, &r2, &proof
                    ));
                }
            }
            count += 1;
        }
    }
    eprintln!("{db:?}: {count} consistency proofs in {:?}", t.elapsed());

    // Over HTTPS, through the real routes.
    let auditor = s.as_client("auditor");
    let (st, _, b) = get_json(&auditor, &s.url("/v1/audit/sth")).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b, serde_json::to_value(&sths[&N]).unwrap());
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        keys(&b),
        ["root_hash", "sig", "tree_size", "ts"]
            .map(String::from)
            .into()
    );
    let size = signed_from + 3;
    let (st, _, b) = get_json(&auditor, &s.url(&format!("/v1/audit/sth?tree_size={size}"))).await;
    assert_eq!(st, 200, "{b}");
    let sth: SignedTreeHead = serde_json::from_value(b).unwrap();
    assert_eq!(sth, sths[&size]);
    for n in [1, 2, 3, 7, 8, 9, 64, 100, 255, 256, 257, N] {
        for seq in 1..=n {
            let url = s.url(&format!(
                "/v1/audit/proof/inclusion?seq={seq}&tree_size={n}"
            ));
            let (st, ct, b) = get_json(&auditor, &url).await;
            assert_eq!((st, ct.as_str()), (200, "application/json"), "{b}");
            assert_eq!(
                keys(&b),
                ["audit_path", "leaf_hash", "seq", "tree_size"]
                    .map(String::from)
                    .into()
            );
            let p: InclusionProof = serde_json::from_value(b).unwrap();
            let leaf = leaves[seq as usize - 1];
            assert_eq!(unhex(&p.leaf_hash), leaf);
            assert!(rfc_verify_inclusion(
                seq as u64 - 1,
                n as u64,
                &leaf,
                &unhex_all(&p.audit_path),
                &roots[n as usize]
            ));
        }
    }
    for (m, n) in [
        (1, 1),
        (1, 2),
        (3, 7),
        (4, 8),
        (signed_from, N),
        (100, 255),
        (255, 256),
        (N - 1, N),
    ] {
        let url = s.url(&format!("/v1/audit/proof/consistency?first={m}&second={n}"));
        let (st, _, b) = get_json(&auditor, &url).await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(
            keys(&b),
            ["first", "proof", "second"].map(String::from).into()
        );
        let p: ConsistencyProof = serde_json::from_value(b).unwrap();
        assert_eq!((p.first, p.second), (m, n));
        let proof = unhex_all(&p.proof);
        if m == n {
            assert!(proof.is_empty());
        } else {
            assert!(rfc_verify_consistency(
                m as u64,
                n as u64,
                &roots[m as usize],
                &roots[n as usize],
                &proof
            ));
        }
    }

    // The script of docs/audit.md on the routes' answers.
    let doc = include_str!("../../docs/audit.md");
    let script = doc
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a python block in docs/audit.md");
    let dir = env.path();
    std::fs::write(dir.join("check.py"), script).unwrap();
    let seq = signed_from + 7;
    let save = |name: &str, v: &serde_json::Value| {
        std::fs::write(dir.join(name), v.to_string()).unwrap();
    };
    let (_, _, ev) = get_json(
        &auditor,
        &s.url(&format!("/v1/audit/events?after_seq={}&limit=1", seq - 1)),
    )
    .await;
    save("event.json", &ev["events"][0]);
    let (_, _, proof) = get_json(
        &auditor,
        &s.url(&format!(
            "/v1/audit/proof/inclusion?seq={seq}&tree_size=256"
        )),
    )
    .await;
    save("inclusion.json", &proof);
    let (_, _, old) = get_json(
        &auditor,
        &s.url(&format!("/v1/audit/sth?tree_size={signed_from}")),
    )
    .await;
    save("old.json", &old);
    let (_, _, new) = get_json(&auditor, &s.url("/v1/audit/sth?tree_size=256")).await;
    save("new.json", &new);
    let (_, _, cons) = get_json(
        &auditor,
        &s.url(&format!(
            "/v1/audit/proof/consistency?first={signed_from}&second=256"
        )),
    )
    .await;
    save("consistency.json", &cons);
    let python = |args: &[&str]| {
        let out = std::process::Command::new("python3")
            .arg("check.py")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, out) = python(&["event.json", "inclusion.json", "new.json"]);
    assert!(ok && out.contains("is in the signed tree of 256"), "{out}");
    let (ok, out) = python(&["old.json", "new.json", "consistency.json"]);
    assert!(
        ok && out.contains("is a prefix of the tree of 256"),
        "{out}"
    );
    let mut forged = ev["events"][0].clone();
    forged["hash"] = json!("00".repeat(32));
    save("event.json", &forged);
    let (ok, out) = python(&["event.json", "inclusion.json", "new.json"]);
    assert!(!ok && out.contains("NOT included"), "{out}");
    let mut forged = old.clone();
    forged["root_hash"] = json!("00".repeat(32));
    save("old.json", &forged);
    let (ok, out) = python(&["old.json", "new.json", "consistency.json"]);
    assert!(!ok && out.contains("NOT consistent"), "{out}");

    // Refusals: problem+json with stable codes.
    for (path, status, code) in [
        (
            "/v1/audit/sth?tree_size=1".to_string(),
            404,
            "audit.sth_not_found",
        ),
        (
            format!("/v1/audit/sth?tree_size={}", N + 1),
            404,
            "audit.sth_not_found",
        ),
        ("/v1/audit/sth?size=1".to_string(), 400, "request.invalid"),
        (
            "/v1/audit/proof/inclusion?seq=0&tree_size=5".to_string(),
            400,
            "audit.range_invalid",
        ),
        (
            "/v1/audit/proof/inclusion?seq=6&tree_size=5".to_string(),
            400,
            "audit.range_invalid",
        ),
        (
            "/v1/audit/proof/inclusion?seq=1&tree_size=0".to_string(),
            400,
            "audit.range_invalid",
        ),
        (
            format!("/v1/audit/proof/inclusion?seq=1&tree_size={}", N + 1),
            400,
            "audit.range_invalid",
        ),
        (
            "/v1/audit/proof/inclusion?seq=1".to_string(),
            400,
            "request.invalid",
        ),
        (
            "/v1/audit/proof/inclusion?seq=x&tree_size=2".to_string(),
            400,
            "request.invalid",
        ),
        (
            "/v1/audit/proof/consistency?first=0&second=5".to_string(),
            400,
            "audit.range_invalid",
        ),
        (
            "/v1/audit/proof/consistency?first=6&second=5".to_string(),
            400,
            "audit.range_invalid",
        ),
        (
            format!("/v1/audit/proof/consistency?first=1&second={}", N + 1),
            400,
            "audit.range_invalid",
        ),
    ] {
        let (st, ct, b) = get_json(&auditor, &s.url(&path)).await;
        assert_eq!(
            (st, ct.as_str(), b["code"].as_str()),
            (status, "application/problem+json", Some(code)),
            "{path}: {b}"
        );
    }
    let (st, _, b) = get_json(&s.as_client("operator"), &s.url("/v1/audit/sth")).await;
    assert_eq!((st, b["code"].as_str()), (403, Some("auth.forbidden")));

    // The tree built in one go (as for a log that predates it), by two
    // writers at once, is the tree built one leaf at a time.
    let before: Vec<(i64, String)> = (0..N)
        .map(|i| {
            let h = store
                .read(|c| tmcs::store::tree_rows::node(c, 0, i))
                .unwrap()
                .unwrap();
            (i, h)
        })
        .collect();
    raw(store, "DELETE FROM audit_tree_nodes");
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| tree::extend(store, N).unwrap());
        }
    });
    for (i, h) in before {
        let now = store
            .read(|c| tmcs::store::tree_rows::node(c, 0, i))
            .unwrap();
        assert_eq!(now.as_deref(), Some(h.as_str()), "leaf {i}");
    }
    let report = audit::verify_store(store, &key, &[]).unwrap();
    // The operator's refusal above is an audit event of its own.
    assert!(report.events > N, "{report:?}");
    assert_eq!(report.tree_heads as i64, N - signed_from + 1);
    s.stop().await;
}
on_both_backends_async!(audit_tree_proofs_of_every_size, proofs_of_every_size_verify);

// ---------------------------------------------------------------------------
// "Changing any one event breaks the inclusion proofs that cover it."

fn changing_an_event_breaks_its_proofs(db: Db) {
    let Some(env) = Env::new(db, "changing_an_event_breaks_its_proofs") else {
        return;
    };
    env.init();
    let app = env.app();
    let store = &app.svc.store;
    let key = app.svc.pki.audit_public_key().unwrap();
    let n = head_seq(store) + 24;
    let signed_from = grow_with_a_tree_head_at_every_size(&env, &app, n);
    let sth_root = |size: i64| unhex(&tree::sth_of_size(store, size).unwrap().unwrap().root_hash);
    let verifies = |seq: i64, size: i64, leaf: &H| {
        let p = tree::inclusion(store, seq, size).unwrap();
        assert_eq!(&unhex(&p.leaf_hash), leaf);
        rfc_verify_inclusion(
            seq as u64 - 1,
            size as u64,
            leaf,
            &unhex_all(&p.audit_path),
            &sth_root(size),
        )
    };
    let target = signed_from + 5;
    // The newest tree head, as an auditor would have kept it from
    // `GET /v1/audit/sth` before anything was changed.
    let kept = tree::latest_sth(store).unwrap().unwrap();
    assert_eq!(kept.tree_size, n);
    for size in [target, target + 1, n] {
        for seq in 1..=size {
            assert!(verifies(
                seq,
                size,
                &rfc_leaf(&all_events(store)[seq as usize - 1].hash)
            ));
        }
    }

    // Change the event's content and hash, as someone with write access to
    // the database would.
    let mut ev = all_events(store)[target as usize - 1].clone();
    ev.details = json!({ "i": -1 });
    ev.hash = ev.compute_hash().unwrap();
    raw(
        store,
        &format!(
            "UPDATE audit_events SET details = '{{\"i\":-1}}', hash = '{}' WHERE seq = {target}",
            ev.hash
        ),
    );
    let forged_leaf = rfc_leaf(&ev.hash);
    for size in target..=n {
        assert!(
            !verifies(target, size, &forged_leaf),
            "the changed event {target} must not prove into the tree head of size {size}"
        );
    }
    // The proofs of the other events do not cover it and still verify.
    let events = all_events(store);
    for seq in (1..=n).filter(|&s| s != target) {
        assert!(
            verifies(seq, n, &rfc_leaf(&events[seq as usize - 1].hash)),
            "seq {seq}"
        );
    }
    let err = audit::verify_store(store, &key, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("seq {}", target + 1)), "{err}");

    // Rewrite the rest of the chain so it links again, drop the checkpoints
    // that would tell, and rebuild the stored tree: the signed tree heads
    // still tell, by name.
    let mut prev = ev.hash.clone();
    for mut e in events.into_iter().skip(target as usize) {
        e.prev_hash = prev;
        e.hash = e.compute_hash().unwrap();
        raw(
            store,
            &format!(
                "UPDATE audit_events SET prev_hash = '{}', hash = '{}' WHERE seq = {}",
                e.prev_hash, e.hash, e.seq
            ),
        );
        prev = e.hash;
    }
    raw(
        store,
        &format!("DELETE FROM audit_checkpoints WHERE seq >= {target}"),
    );
    raw(store, "DELETE FROM audit_tree_nodes");
    tree::extend(store, n).unwrap();
    let err = audit::verify_store(store, &key, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "tree head of size {target}: root does not match the log"
        )),
        "{err}"
    );
    // The rebuilt tree's proofs lead to the forged roots, not the signed ones.
    assert!(!verifies(target, n, &forged_leaf));
    assert!(!verifies(1, n, &rfc_leaf(&all_events(store)[0].hash)));

    // Deleting the stored tree heads that tell as well leaves a log the
    // database alone cannot fault; the tree head the auditor kept still
    // tells, by name.
    raw(
        store,
        &format!("DELETE FROM audit_tree_heads WHERE tree_size >= {target}"),
    );
    audit::verify_store(store, &key, &[]).expect("the rewritten log passes on its own");
    let held = audit::Held {
        checkpoints: Vec::new(),
        tree_heads: vec![kept.clone()],
    };
    let err = audit::verify_store_held(store, &key, &held)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "tree head of size {n}: root does not match the log"
        )),
        "{err}"
    );
    // A kept tree head larger than the log: the log was cut (with the tree
    // nodes over the cut events).
    raw(
        store,
        &format!("DELETE FROM audit_events WHERE seq > {}", n - 3),
    );
    raw(
        store,
        &format!(
            "DELETE FROM audit_tree_nodes WHERE (idx + 1) * (1 << level) > {}",
            n - 3
        ),
    );
    let err = audit::verify_store_held(store, &key, &held)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "tree head of size {n}: events after seq {} are missing",
            n - 3
        )),
        "{err}"
    );

    // A tree head whose signature does not verify is named too.
    raw(
        store,
        &format!(
            "UPDATE audit_tree_heads SET ts = '2000-01-01T00:00:00.000Z' WHERE tree_size = {signed_from}"
        ),
    );
    let err = audit::verify_store(store, &key, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "tree head of size {signed_from}: signature does not verify"
        )),
        "{err}"
    );
}
on_both_backends!(
    audit_tree_changed_event_breaks_proofs,
    changing_an_event_breaks_its_proofs
);

/// A stored tree node that differs from the log is named by `verify`, and
/// the proofs that read it no longer lead to the signed root.
fn a_changed_tree_node_is_named(db: Db) {
    let Some(env) = Env::new(db, "a_changed_tree_node_is_named") else {
        return;
    };
    env.init();
    let app = env.app();
    let store = &app.svc.store;
    let key = app.svc.pki.audit_public_key().unwrap();
    let n = head_seq(store) + 12;
    grow_with_a_tree_head_at_every_size(&env, &app, n);
    let report = audit::verify_store(store, &key, &[]).unwrap();
    assert!(report.tree_heads >= 12, "{report:?}");
    let root = unhex(&tree::latest_sth(store).unwrap().unwrap().root_hash);
    // Node (1, 2) covers leaves 4 and 5 (seq 5 and 6); seq 1's proof in a
    // tree of n >= 8 reads node (1, 1) and (2, 1).
    let p = tree::inclusion(store, 1, n).unwrap();
    let leaf = unhex(&p.leaf_hash);
    assert!(rfc_verify_inclusion(
        0,
        n as u64,
        &leaf,
        &unhex_all(&p.audit_path),
        &root
    ));
    raw(
        store,
        &format!(
            "UPDATE audit_tree_nodes SET hash = '{}' WHERE level = 2 AND idx = 1",
            "ab".repeat(32)
        ),
    );
    let p = tree::inclusion(store, 1, n).unwrap();
    assert!(!rfc_verify_inclusion(
        0,
        n as u64,
        &leaf,
        &unhex_all(&p.audit_path),
        &root
    ));
    let err = audit::verify_store(store, &key, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stored tree node (level 2, index 1) does not match the log"),
        "{err}"
    );
    raw(
        store,
        "DELETE FROM audit_tree_nodes WHERE level = 2 AND idx = 1",
    );
    let err = audit::verify_store(store, &key, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stored tree node (level 2, index 1) is missing"),
        "{err}"
    );
}
on_both_backends!(
    audit_tree_changed_node_is_named,
    a_changed_tree_node_is_named
);

/// `tmcs audit export` carries the tree heads, and an export verifies them.
fn export_carries_and_checks_tree_heads(db: Db) {
    let Some(env) = Env::new(db, "export_carries_tree_heads") else {
        return;
    };
    env.init();
    let app = env.app();
    let store = &app.svc.store;
    let key = app.svc.pki.audit_public_key().unwrap();
    let n = head_seq(store) + 3;
    let signed_from = grow_with_a_tree_head_at_every_size(&env, &app, n);
    let out = env.path().join("export.jsonl");
    tmcs::cli::export(store, &out).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let report = audit::verify_lines(text.as_bytes(), &key, &[]).unwrap();
    assert_eq!(report.tree_heads as i64, n - signed_from + 1, "{report:?}");
    // A changed root in a tree head line is named.
    let sth = tree::sth_of_size(store, n).unwrap().unwrap();
    let forged = text.replace(&sth.root_hash, &"00".repeat(32));
    assert_ne!(forged, text);
    let err = audit::verify_lines(forged.as_bytes(), &key, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("tree head of size {n}")), "{err}");
}
on_both_backends!(audit_tree_export, export_carries_and_checks_tree_heads);

// ---------------------------------------------------------------------------
// Acceptance "Cost".

/// A migrated store without an HSM: the tree's tables filled directly.
fn bare_store(db: Db, dir: &std::path::Path) -> Option<Store> {
    let url = match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("cost.db").display()),
        Db::Postgres => crate::support::postgres_or_skip("inclusion_proof_costs_log_n_reads")?,
    };
    let store = Store::open(&StoreSettings {
        url,
        pool_size: 2,
        connect_timeout: std::time::Duration::from_secs(10),
        busy_timeout_ms: 5000,
    })
    .unwrap();
    store.migrate().unwrap();
    Some(store)
}

/// Fills `audit_tree_nodes` with every complete subtree of `n` leaves
/// (synthetic hashes: only the reads are counted), and `audit_events`
/// with the events the proofs below name plus the newest (so the log has
/// `n` events as far as a proof can tell).
fn fill_synthetic_tree(store: &Store, db: Db, n: i64, seqs: &[i64]) {
    let mut level = 0;
    while n >> level > 0 {
        let count = n >> level;
        let sql = match db {
            Db::Sqlite => format!(
                "WITH RECURSIVE s(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM s WHERE x + 1 < {count}) \
                 INSERT INTO audit_tree_nodes (level, idx, hash) \
                 SELECT {level}, x, printf('%064x', x * 64 + {level}) FROM s"
            ),
            Db::Postgres => format!(
                "INSERT INTO audit_tree_nodes (level, idx, hash) \
                 SELECT {level}, x, lpad(to_hex(x * 64 + {level}), 64, '0') \
                 FROM generate_series(0, {count} - 1) AS x"
            ),
        };
        raw(store, &sql);
        level += 1;
    }
    let mut seqs: Vec<i64> = seqs.to_vec();
    seqs.push(n);
    seqs.sort_unstable();
    seqs.dedup();
    for seq in seqs {
        raw(
            store,
            &format!(
                "INSERT INTO audit_events (seq, ts, actor, action, subject, details, prev_hash, hash) \
                 VALUES ({seq}, '2026-12-02T00:00:00.000Z', 'system', 'test.synthetic', NULL, '{{}}', '{z}', '{h:064x}')",
                z = audit::GENESIS_HASH,
                h = seq
            ),
        );
    }
}

fn ceil_log2(n: i64) -> u64 {
    u64::from(64 - (n as u64 - 1).leading_zeros())
}

/// An inclusion proof in a log of 1,000 and of 1,000,000 events reads at
/// most 2·⌈log2 n⌉ + 2 tree nodes (and three more rows: the log's size,
/// the built tree size, the event's hash), counted by the store's node
/// source; so does a consistency proof.
fn inclusion_proof_costs_log_n_reads(db: Db) {
    // On PostgreSQL, filling 10⁶ leaves (2·10⁶ rows) takes some 17 s in a
    // debug build on two shared cores: there 10³ and 10⁵ (the read counts
    // were the same at 10⁶: 30 and 26).
    let sizes: &[i64] = match db {
        Db::Sqlite => &[1_000, 1_000_000],
        Db::Postgres => &[1_000, 100_000],
    };
    for &n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let Some(store) = bare_store(db, dir.path()) else {
            return;
        };
        let seqs = [1, 2, n / 3, n / 2, n / 2 + 1, n - 1, n];
        let t = Instant::now();
        fill_synthetic_tree(&store, db, n, &seqs);
        let filled = t.elapsed();
        let bound = 2 * ceil_log2(n) + 2;
        let mut max_reads = 0;
        for &seq in &seqs {
            for size in [n, n - 1, seq.max(n / 2 + 1)] {
                if seq > size {
                    continue;
                }
                let (p, reads) = tree::inclusion_counted(&store, seq, size).unwrap();
                assert_eq!(p.audit_path.len() as u64, {
                    // |PATH(m, D[n])| = the number of levels above the leaf in
                    // its subtree (RFC 9162 §2.1.3.1).
                    let mut len = 0;
                    let (mut m, mut k) = ((seq - 1) as u64, size as u64);
                    while k > 1 {
                        let split = 1u64 << (63 - (k - 1).leading_zeros());
                        if m < split {
                            k = split;
                        } else {
                            m -= split;
                            k -= split;
                        }
                        len += 1;
                    }
                    len
                });
                assert!(
                    reads <= bound,
                    "inclusion of seq {seq} in {size} of {n}: {reads} node reads > 2·⌈log2 n⌉+2 = {bound}"
                );
                max_reads = max_reads.max(reads);
            }
        }
        let mut max_consistency = 0;
        for (m, size) in [(1, n), (n / 3, n), (n / 2, n - 1), (n - 1, n)] {
            let (_, reads) = tree::consistency_counted(&store, m, size).unwrap();
            assert!(
                reads <= bound,
                "consistency {m} -> {size}: {reads} node reads > {bound}"
            );
            max_consistency = max_consistency.max(reads);
        }
        assert!(
            (max_reads as i64) * 1000 < n || n < 100_000,
            "at n = {n}, {max_reads} node reads is not far below n"
        );
        eprintln!(
            "{db:?}: n = {n}: an inclusion proof read at most {max_reads} tree nodes, a consistency proof {max_consistency} (bound 2·⌈log2 n⌉+2 = {bound}); filling took {filled:?}"
        );
    }
}
on_both_backends!(audit_tree_proof_cost, inclusion_proof_costs_log_n_reads);
