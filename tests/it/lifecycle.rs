//! Issue 3: subscribers and the certificate lifecycle over the real API.

use serde_json::json;

use crate::on_both_backends_async;
use crate::pkicheck::{crl_entry, ocsp_via_url, served_crl_text};
use crate::support::{get_json, openssl, post_json, random_msisdn, Db, Env, Served};

const PIN: &str = "482619";

fn write(env: &Env, name: &str, content: &[u8]) -> String {
    let p = env.path().join(name);
    std::fs::write(&p, content).unwrap();
    p.to_str().unwrap().to_string()
}

async fn whole_life_of_one_certificate(db: Db) {
    let Some(env) = Env::new(db, "whole_life_of_one_certificate") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let op = s.as_client("operator");
    let msisdn = random_msisdn();
    let (sub_id, code) = s.register_subscriber(&msisdn).await;
    assert!(
        code.len() >= 8 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    let (st, _, view) = get_json(&op, &s.url(&format!("/v1/admin/subscribers/{msisdn}"))).await;
    assert_eq!(st, 200);
    assert_eq!(view["state"], "pending_activation");
    assert_eq!(view["attempts_left"], 3);
    assert!(
        !view.to_string().contains(&code),
        "the view must not show the code"
    );

    // Registering an active (or pending) subscriber again is a conflict.
    let (st, _, b) = post_json(
        &op,
        &s.url("/v1/admin/subscribers"),
        &json!({"msisdn": msisdn, "display_name": "X", "kyc_ref": "K"}),
    )
    .await;
    assert_eq!((st, b["code"].as_str()), (409, Some("subscriber.exists")));

    // A wrong code: activation.bad_code with attempts left.
    let h = s.handset(&msisdn).await;
    let wrong = if code.starts_with('9') {
        "1".repeat(code.len())
    } else {
        "9".repeat(code.len())
    };
    let (st, ct, b) = post_json(
        &s.anonymous(),
        &s.url("/v1/handset/activate"),
        &h.activation_body(&wrong, PIN).unwrap(),
    )
    .await;
    assert_eq!(
        (st, ct.as_str(), b["code"].as_str()),
        (403, "application/problem+json", Some("activation.bad_code")),
        "{b}"
    );
    assert_eq!(b["attempts_left"], 2);
    // A trivial PIN is refused before the code is even tried.
    let (st, _, b) = post_json(
        &s.anonymous(),
        &s.url("/v1/handset/activate"),
        &h.activation_body(&code, "1234").unwrap(),
    )
    .await;
    assert_eq!((st, b["code"].as_str()), (400, Some("pin.trivial")));

    // The right code: a certificate for a server-generated key.
    let (st, _, b) = post_json(
        &s.anonymous(),
        &s.url("/v1/handset/activate"),
        &h.activation_body(&code, PIN).unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let cert_pem = b["certificate"].as_str().unwrap();
    let cert_file = write(&env, "sub.pem", cert_pem.as_bytes());
    let (ok, out) = openssl(&["verify", "-CAfile", env.ca().to_str().unwrap(), &cert_file]);
    assert!(ok, "{out}");
    let (_, text) = openssl(&["x509", "-in", &cert_file, "-noout", "-text"]);
    assert!(
        text.contains("Digital Signature, Non Repudiation"),
        "{text}"
    );
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    assert!(
        !text.contains(&msisdn[1..]),
        "the subject must not expose the MSISDN: {text}"
    );
    let cert = tmcs::pki::CertInfo::from_pem(cert_pem).unwrap();
    let device_spki = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        h.device_spki_b64().unwrap(),
    )
    .unwrap();
    assert_ne!(
        cert.spki_der, device_spki,
        "the certificate must hold the HSM key, not the device key"
    );
    let serial1 = cert.serial_hex.clone();
    let ocsp = ocsp_via_url(&env, &s, cert_pem).await;
    assert!(ocsp.contains(": good"), "{ocsp}");

    // The code works once. Used again, it is answered like any wrong code
    // (nothing tells a number with a pending activation from one without).
    let (st, _, b) = post_json(
        &s.anonymous(),
        &s.url("/v1/handset/activate"),
        &h.activation_body(&code, PIN).unwrap(),
    )
    .await;
    assert_eq!(
        (st, b["code"].as_str(), b["attempts_left"].as_u64()),
        (403, Some("activation.bad_code"), Some(2)),
        "{b}"
    );

    // Suspend, resume, renew (old superseded), revoke the new one.
    let cert_url =
        |serial: &str, verb: &str| s.url(&format!("/v1/admin/certificates/{serial}/{verb}"));
    let (st, _, b) = post_json(&op, &cert_url(&serial1, "suspend"), &json!({})).await;
    assert_eq!((st, b["status"].as_str()), (200, Some("suspended")), "{b}");
    let ocsp = ocsp_via_url(&env, &s, cert_pem).await;
    assert!(
        ocsp.contains(": revoked") && ocsp.contains("Reason: certificateHold"),
        "{ocsp}"
    );
    let crl = served_crl_text(&env, &s).await;
    assert!(
        crl_entry(&crl, &serial1).contains("Certificate Hold"),
        "{crl}"
    );
    let (st, _, b) = post_json(&op, &cert_url(&serial1, "suspend"), &json!({})).await;
    assert_eq!(
        (st, b["code"].as_str()),
        (409, Some("certificate.invalid_transition"))
    );
    let (st, _, b) = post_json(&op, &cert_url(&serial1, "resume"), &json!({})).await;
    assert_eq!((st, b["status"].as_str()), (200, Some("active")), "{b}");
    let ocsp = ocsp_via_url(&env, &s, cert_pem).await;
    assert!(ocsp.contains(": good"), "{ocsp}");
    let crl = served_crl_text(&env, &s).await;
    assert!(
        crl_entry(&crl, &serial1).is_empty(),
        "a resumed serial leaves the CRL: {crl}"
    );
    let (st, _, b) = post_json(
        &op,
        &s.url(&format!("/v1/admin/subscribers/{msisdn}/renew")),
        &json!({}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let serial2 = b["serial"].as_str().unwrap().to_string();
    assert_eq!(b["previous_serial"].as_str(), Some(serial1.as_str()));
    let new_cert = tmcs::pki::CertInfo::from_pem(b["certificate"].as_str().unwrap()).unwrap();
    assert_ne!(
        new_cert.spki_der, cert.spki_der,
        "renewal must use a new key"
    );
    assert_ne!(serial2, serial1);
    let (st, _, b) = post_json(
        &op,
        &cert_url(&serial2, "revoke"),
        &json!({"reason": "keyCompromise"}),
    )
    .await;
    assert_eq!(
        (st, b["revocation_reason"].as_str()),
        (200, Some("keyCompromise")),
        "{b}"
    );
    let ocsp = ocsp_via_url(&env, &s, &new_cert.pem).await;
    assert!(
        ocsp.contains(": revoked") && ocsp.contains("Reason: keyCompromise"),
        "{ocsp}"
    );
    let ocsp = ocsp_via_url(&env, &s, cert_pem).await;
    assert!(
        ocsp.contains(": revoked") && ocsp.contains("Reason: superseded"),
        "{ocsp}"
    );
    let crl = served_crl_text(&env, &s).await;
    assert!(
        crl_entry(&crl, &serial2).contains("Key Compromise"),
        "{crl}"
    );
    assert!(crl_entry(&crl, &serial1).contains("Superseded"), "{crl}");
    let (st, _, b) = post_json(&op, &cert_url(&serial2, "resume"), &json!({})).await;
    assert_eq!((st, b["code"].as_str()), (409, Some("certificate.revoked")));
    let (st, _, b) = post_json(
        &op,
        &cert_url(&serial2, "revoke"),
        &json!({"reason": "notAReason"}),
    )
    .await;
    assert_eq!((st, b["code"].as_str()), (400, Some("request.invalid")));
    let (_, _, view) = get_json(&op, &s.url(&format!("/v1/admin/subscribers/{msisdn}"))).await;
    let certs = view["certificates"].as_array().unwrap();
    let find = |serial: &str| {
        certs
            .iter()
            .find(|c| c["serial"] == serial)
            .unwrap()
            .clone()
    };
    assert_eq!(find(&serial1)["revocation_reason"], "superseded");
    assert_eq!(find(&serial2)["revocation_reason"], "keyCompromise");
    assert_eq!(find(&serial2)["current"], true);

    // The auditor can replay both certificates' lives; checkpoints verify.
    let aud = s.as_client("auditor");
    let (st, _, b) = get_json(
        &aud,
        &s.url(&format!("/v1/audit/events?subject={serial1}&limit=100")),
    )
    .await;
    assert_eq!(st, 200);
    let actions: Vec<String> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for a in [
        "cert.key_generated",
        "cert.issued",
        "cert.activated",
        "cert.suspended",
        "cert.resumed",
        "cert.revoked",
        "cert.renewed",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing for the first certificate: {actions:?}"
        );
    }
    let (_, _, b) = get_json(&aud, &s.url(&format!("/v1/audit/events?subject={serial2}"))).await;
    let actions: Vec<&str> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "cert.key_generated",
            "cert.issued",
            "cert.activated",
            "cert.revoked"
        ]
    );
    let (_, _, b) = get_json(
        &aud,
        &s.url(&format!("/v1/audit/events?subject=subscriber:{sub_id}")),
    )
    .await;
    let actions: Vec<&str> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "subscriber.registered",
            "subscriber.activation_failed",
            "subscriber.activated",
            "pin.set"
        ]
    );
    let all = serde_json::to_string(
        &get_json(&aud, &s.url("/v1/audit/events?limit=1000"))
            .await
            .2,
    )
    .unwrap();
    assert!(
        !all.contains(&code) && !all.contains(PIN),
        "audit details must not hold the code or the PIN"
    );

    let cp = tmcs::audit::make_checkpoint(
        &s.app.svc.store,
        &s.app.hsm,
        &s.app.svc.pki.keys.audit,
        env.now(),
    )
    .unwrap()
    .unwrap();
    let (_, _, b) = get_json(&aud, &s.url("/v1/audit/checkpoints")).await;
    let served: Vec<tmcs::audit::Checkpoint> =
        serde_json::from_value(b["checkpoints"].clone()).unwrap();
    assert_eq!(served.last().unwrap(), &cp);
    let mut res = s
        .anonymous()
        .get(s.url("/pki/audit.pem"))
        .send()
        .await
        .unwrap();
    let audit_pem = res.body().await.unwrap();
    let key = openssl::x509::X509::from_pem(&audit_pem)
        .unwrap()
        .public_key()
        .unwrap();
    assert!(served
        .iter()
        .all(|c| tmcs::audit::verify_checkpoint_sig(c, &key)));
    assert!(tmcs::audit::verify_store(&s.app.svc.store, &key, &[]).is_ok());

    // The auditor may not write anything: every write route behind mTLS,
    // with real path values, answers 403 and changes nothing.
    let events_before = tmcs::audit::verify_store(&s.app.svc.store, &key, &[])
        .unwrap()
        .events;
    let mut writes = 0;
    for (method, pattern) in tmcs::api::ROUTES {
        let mtls = ["/v1/admin", "/v1/fsp", "/v1/gateway", "/v1/audit"]
            .iter()
            .any(|p| pattern.starts_with(p));
        if *method == "GET" || !mtls {
            continue;
        }
        let path = pattern
            .replace("{msisdn}", &msisdn)
            .replace("{serial}", &serial2)
            .replace("{party_id}", "Merkur.Trade@merchant.xbank")
            .replace("{id}", "00000000-0000-0000-0000-000000000000");
        let (st, _, b) = post_json(&aud, &s.url(&path), &json!({})).await;
        assert_eq!(
            (st, b["code"].as_str()),
            (403, Some("auth.forbidden")),
            "{path}"
        );
        writes += 1;
    }
    assert!(writes >= 14, "only {writes} write routes checked");
    // Each refusal is one auth.denied event, nothing else changed.
    let after = tmcs::audit::verify_store(&s.app.svc.store, &key, &[])
        .unwrap()
        .events;
    assert_eq!(after, events_before + writes);
    s.stop().await;
}
on_both_backends_async!(whole_life, whole_life_of_one_certificate);

async fn attempt_limit_blocks_and_unblock_restarts(db: Db) {
    let Some(env) = Env::new(db, "attempt_limit_blocks") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let op = s.as_client("operator");
    let msisdn = random_msisdn();
    let (_, code) = s.register_subscriber(&msisdn).await;
    let h = s.handset(&msisdn).await;
    let wrong = if code.starts_with('9') {
        "1".repeat(code.len())
    } else {
        "9".repeat(code.len())
    };
    for left in [2, 1, 0] {
        let (st, _, b) = post_json(
            &s.anonymous(),
            &s.url("/v1/handset/activate"),
            &h.activation_body(&wrong, PIN).unwrap(),
        )
        .await;
        assert_eq!(
            (st, b["code"].as_str(), b["attempts_left"].as_u64()),
            (403, Some("activation.bad_code"), Some(left)),
            "{b}"
        );
    }
    // Even the right code is refused now.
    let (st, _, b) = post_json(
        &s.anonymous(),
        &s.url("/v1/handset/activate"),
        &h.activation_body(&code, PIN).unwrap(),
    )
    .await;
    assert_eq!(
        (st, b["code"].as_str()),
        (403, Some("subscriber.blocked")),
        "{b}"
    );
    let (_, _, view) = get_json(&op, &s.url(&format!("/v1/admin/subscribers/{msisdn}"))).await;
    assert_eq!(view["state"], "blocked");
    // Unblock: a new code; the old one is dead, the new one works.
    let (st, _, b) = post_json(
        &op,
        &s.url(&format!("/v1/admin/subscribers/{msisdn}/unblock")),
        &json!({}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let code2 = b["activation_code"].as_str().unwrap().to_string();
    assert_ne!(code2, code);
    let (st, _, b) = post_json(
        &s.anonymous(),
        &s.url("/v1/handset/activate"),
        &h.activation_body(&code, PIN).unwrap(),
    )
    .await;
    assert_eq!(
        (st, b["code"].as_str()),
        (403, Some("activation.bad_code")),
        "{b}"
    );
    let (st, _, b) = post_json(
        &s.anonymous(),
        &s.url("/v1/handset/activate"),
        &h.activation_body(&code2, PIN).unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    s.stop().await;
}
on_both_backends_async!(
    activation_attempt_limit,
    attempt_limit_blocks_and_unblock_restarts
);

async fn disconnect_then_register_again(db: Db) {
    let Some(env) = Env::new(db, "disconnect_then_register_again") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let op = s.as_client("operator");
    let msisdn = random_msisdn();
    let (_h, cert_pem) = s.active_subscriber(&msisdn, PIN).await;
    let serial = tmcs::pki::CertInfo::from_pem(&cert_pem).unwrap().serial_hex;
    let (st, _, b) = post_json(
        &op,
        &s.url(&format!("/v1/admin/subscribers/{msisdn}/disconnect")),
        &json!({}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["revoked_certificates"], json!([serial]));
    let (_, _, view) = get_json(&op, &s.url(&format!("/v1/admin/subscribers/{msisdn}"))).await;
    assert_eq!(view["state"], "archived");
    assert_eq!(
        view["certificates"][0]["revocation_reason"],
        "cessationOfOperation"
    );
    let (st, _, b) = post_json(
        &op,
        &s.url("/v1/admin/subscribers"),
        &json!({"msisdn": msisdn, "display_name": "Back", "kyc_ref": "K2"}),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["reactivated"], true);
    let code = b["activation_code"].as_str().unwrap();
    let h2 = s.handset(&msisdn).await;
    let (st, _, b) = post_json(
        &s.anonymous(),
        &s.url("/v1/handset/activate"),
        &h2.activation_body(code, "739184").unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let again = tmcs::pki::CertInfo::from_pem(b["certificate"].as_str().unwrap()).unwrap();
    assert_ne!(
        again.serial_hex, serial,
        "a disconnected subscriber comes back with a new certificate"
    );
    s.stop().await;
}
on_both_backends_async!(disconnect_and_reregister, disconnect_then_register_again);

async fn pin_change_and_wrong_pins(db: Db) {
    let Some(env) = Env::new(db, "pin_change_and_wrong_pins") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let msisdn = random_msisdn();
    let (h, _) = s.active_subscriber(&msisdn, PIN).await;
    let anon = s.anonymous();
    let change = |old: &'static str, new: &'static str| {
        let body = h.pin_change_body(old, new).unwrap();
        let hdr = h
            .device_header("POST", "/v1/handset/pin", env.now().unix_timestamp())
            .unwrap();
        let req = anon
            .post(s.url("/v1/handset/pin"))
            .insert_header(("authorization", hdr));
        async move { crate::support::json_of(req.send_json(&body).await.unwrap()).await }
    };
    // Without a device signature: refused.
    let (st, _, b) = post_json(
        &anon,
        &s.url("/v1/handset/pin"),
        &h.pin_change_body(PIN, "917364").unwrap(),
    )
    .await;
    assert_eq!(
        (st, b["code"].as_str()),
        (401, Some("auth.device_signature"))
    );
    // A stale device timestamp: refused.
    let stale = h
        .device_header("POST", "/v1/handset/pin", env.now().unix_timestamp() - 3600)
        .unwrap();
    let (st, _, _) = crate::support::json_of(
        anon.post(s.url("/v1/handset/pin"))
            .insert_header(("authorization", stale))
            .send_json(&h.pin_change_body(PIN, "917364").unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 401);
    // A captured request played again is refused before it can burn an attempt.
    let captured = h
        .device_header("POST", "/v1/handset/pin", env.now().unix_timestamp())
        .unwrap();
    let body = h.pin_change_body("111999", "917364").unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let req = anon
            .post(s.url("/v1/handset/pin"))
            .insert_header(("authorization", captured.clone()));
        answers.push(crate::support::json_of(req.send_json(&body).await.unwrap()).await);
    }
    assert_eq!(
        (answers[0].0, answers[0].2["attempts_left"].as_u64()),
        (403, Some(2))
    );
    assert_eq!(
        (answers[1].0, answers[1].2["code"].as_str()),
        (401, Some("auth.device_signature")),
        "{:?}",
        answers[1]
    );
    let (st, _, b) = change("111999", "917364").await;
    assert_eq!(
        (st, b["code"].as_str(), b["attempts_left"].as_u64()),
        (403, Some("pin.wrong"), Some(1)),
        "{b}"
    );
    let (st, _, b) = change(PIN, "1111").await;
    assert_eq!((st, b["code"].as_str()), (400, Some("pin.trivial")));
    let (st, _, b) = change(PIN, "917364").await;
    assert_eq!(st, 200, "{b}");
    // The counter was reset by the success; the old PIN is now wrong.
    let (st, _, b) = change(PIN, "263748").await;
    assert_eq!((st, b["attempts_left"].as_u64()), (403, Some(2)), "{b}");
    s.stop().await;
}
on_both_backends_async!(pin_change, pin_change_and_wrong_pins);

/// Many wrong PINs at once (several tmcs nodes would look the same to the
/// database) never get more than `max_attempts` comparisons.
async fn concurrent_wrong_pins_respect_the_limit(db: Db) {
    let Some(env) = Env::new(db, "concurrent_wrong_pins") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let msisdn = random_msisdn();
    let (h, _) = s.active_subscriber(&msisdn, PIN).await;
    let h = std::rc::Rc::new(h);
    let mut futs = Vec::new();
    for i in 0..12 {
        let h = h.clone();
        let url = s.url("/v1/handset/pin");
        let client = s.anonymous();
        let now = env.now().unix_timestamp();
        futs.push(async move {
            let body = h.pin_change_body(&format!("90{i:04}"), "917364").unwrap();
            let hdr = h.device_header("POST", "/v1/handset/pin", now).unwrap();
            crate::support::json_of(
                client
                    .post(url)
                    .insert_header(("authorization", hdr))
                    .send_json(&body)
                    .await
                    .unwrap(),
            )
            .await
        });
    }
    let results = futures_util::future::join_all(futs).await;
    let wrong = results
        .iter()
        .filter(|r| r.2["code"] == "pin.wrong")
        .count();
    let blocked = results
        .iter()
        .filter(|r| r.2["code"] == "pin.blocked")
        .count();
    assert_eq!(wrong + blocked, 12, "{results:?}");
    assert_eq!(
        wrong, 2,
        "exactly max_attempts-1 answers may say 'wrong' with attempts left"
    );
    let failed = s
        .app
        .svc
        .store
        .read(|c| {
            tmcs::store::audit_rows::list(
                c,
                &tmcs::store::audit_rows::EventFilter {
                    action: Some("pin.failed".into()),
                    limit: 100,
                    ..Default::default()
                },
            )
        })
        .unwrap();
    assert_eq!(
        failed.len(),
        3,
        "exactly max_attempts comparisons may happen"
    );
    let (_, _, view) = get_json(
        &s.as_client("operator"),
        &s.url(&format!("/v1/admin/subscribers/{msisdn}")),
    )
    .await;
    assert_eq!(view["state"], "blocked");
    assert_eq!(view["attempts_left"], 0);
    // The right PIN is refused now.
    let hdr = h
        .device_header("POST", "/v1/handset/pin", env.now().unix_timestamp())
        .unwrap();
    let (st, _, b) = crate::support::json_of(
        s.anonymous()
            .post(s.url("/v1/handset/pin"))
            .insert_header(("authorization", hdr))
            .send_json(&h.pin_change_body(PIN, "917364").unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, b["code"].as_str()), (403, Some("pin.blocked")));
    s.stop().await;
}
on_both_backends_async!(
    concurrent_wrong_pins,
    concurrent_wrong_pins_respect_the_limit
);

/// Past notAfter a certificate becomes `expired` (with `cert.expired`), and
/// the signing path refuses it.
async fn certificates_expire(db: Db) {
    let Some(env) = Env::new(db, "certificates_expire") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let msisdn = random_msisdn();
    let (_h, pem) = s.active_subscriber(&msisdn, PIN).await;
    let serial = tmcs::pki::CertInfo::from_pem(&pem).unwrap().serial_hex;
    assert_eq!(
        tmcs::pki::lifecycle::expire_certificates(&s.app.svc).unwrap(),
        0
    );
    env.clock.advance(time::Duration::days(800));
    let n = tmcs::pki::lifecycle::expire_certificates(&s.app.svc).unwrap();
    assert!(n >= 1);
    let row = s
        .app
        .svc
        .store
        .read(|c| tmcs::store::certs::get(c, &serial))
        .unwrap()
        .unwrap();
    assert_eq!(row.status.as_str(), "expired");
    let events = s
        .app
        .svc
        .store
        .read(|c| {
            tmcs::store::audit_rows::list(
                c,
                &tmcs::store::audit_rows::EventFilter {
                    subject: Some(serial.clone()),
                    limit: 100,
                    ..Default::default()
                },
            )
        })
        .unwrap();
    assert_eq!(events.last().unwrap().action, "cert.expired");
    let sub = s
        .app
        .svc
        .store
        .read(|c| tmcs::store::subscribers::by_msisdn(c, &msisdn))
        .unwrap()
        .unwrap();
    let err = s
        .app
        .svc
        .store
        .read(|c| tmcs::subscriber::lock_signer(c, &sub.id, 3, env.now()).map(|_| ()))
        .unwrap_err();
    assert_eq!(
        err.problem(),
        Some(tmcs::problem::Problem::CertificateNotActive)
    );
    // Nothing left to expire.
    assert_eq!(
        tmcs::pki::lifecycle::expire_certificates(&s.app.svc).unwrap(),
        0
    );
    s.stop().await;
}
on_both_backends_async!(certificate_expiry, certificates_expire);

/// Parties (issue 3 point 6): by CSR or by a given certificate; FSPs and
/// gateways become mTLS identities; suspension and revocation reach mTLS,
/// the CRL and OCSP at once.
async fn parties_by_csr_and_certificate(db: Db) {
    let Some(env) = Env::new(db, "parties_by_csr_and_certificate") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let op = s.as_client("operator");
    // By CSR: an FSP.
    let kp = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec![])
        .unwrap()
        .serialize_request(&kp)
        .unwrap()
        .pem()
        .unwrap();
    let fsp_id = "Pay.Now@fsp.example";
    let (st, _, b) = post_json(
        &op,
        &s.url("/v1/admin/parties"),
        &json!({ "party_id": fsp_id, "kind": "fsp", "csr": csr }),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let cert_pem = b["certificate"].as_str().unwrap().to_string();
    let serial = b["serial"].as_str().unwrap().to_string();
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        env.ca().to_str().unwrap(),
        &write(&env, "party.pem", cert_pem.as_bytes()),
    ]);
    assert!(ok, "{out}");
    // Its certificate is an mTLS identity with role fsp.
    let fsp =
        tmcs_client::https::https_client_pem(&env.ca(), &cert_pem, &kp.serialize_pem()).unwrap();
    let (st, _, b) = get_json(
        &fsp,
        &s.url("/v1/fsp/requests/00000000-0000-0000-0000-000000000000"),
    )
    .await;
    assert_eq!(
        (st, b["code"].as_str()),
        (404, Some("request.not_found")),
        "{b}"
    );
    // Registered twice: a conflict.
    let (st, _, b) = post_json(
        &op,
        &s.url("/v1/admin/parties"),
        &json!({ "party_id": fsp_id, "kind": "fsp", "csr": csr }),
    )
    .await;
    assert_eq!((st, b["code"].as_str()), (409, Some("party.exists")));
    // Bad input: wrong id form, both or neither credential, junk CSR.
    for body in [
        json!({ "party_id": "Pay.Now@merchant.example", "kind": "fsp", "csr": csr }),
        json!({ "party_id": "x@fsp.example", "kind": "fsp" }),
        json!({ "party_id": "x@fsp.example", "kind": "wizard", "csr": csr }),
    ] {
        let (st, _, b) = post_json(&op, &s.url("/v1/admin/parties"), &body).await;
        assert_eq!(
            (st, b["code"].as_str()),
            (400, Some("request.invalid")),
            "{body}"
        );
    }
    let (st, _, b) = post_json(
        &op,
        &s.url("/v1/admin/parties"),
        &json!({ "party_id": "x@fsp.example", "kind": "fsp", "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n" }),
    )
    .await;
    assert_eq!(
        (st, b["code"].as_str()),
        (400, Some("certificate.invalid")),
        "{b}"
    );

    // Suspend: mTLS refused, OCSP on hold; resume: back.
    let party_url = |verb: &str| s.url(&format!("/v1/admin/parties/{fsp_id}/{verb}"));
    let (st, _, b) = post_json(&op, &party_url("suspend"), &json!({})).await;
    assert_eq!((st, b["status"].as_str()), (200, Some("suspended")), "{b}");
    let (st, _, _) = get_json(&fsp, &s.url("/v1/fsp/requests/x")).await;
    assert_eq!(st, 403);
    let ocsp = ocsp_via_url(&env, &s, &cert_pem).await;
    assert!(ocsp.contains("Reason: certificateHold"), "{ocsp}");
    let (st, _, b) = post_json(&op, &party_url("resume"), &json!({})).await;
    assert_eq!((st, b["status"].as_str()), (200, Some("active")), "{b}");
    let (st, _, _) = get_json(&fsp, &s.url("/v1/fsp/requests/x")).await;
    assert_eq!(st, 404);
    // Revoke (keyCompromise): refused for good, listed on the CRL.
    let (st, _, b) = post_json(
        &op,
        &party_url("revoke"),
        &json!({ "reason": "keyCompromise" }),
    )
    .await;
    assert_eq!((st, b["status"].as_str()), (200, Some("revoked")), "{b}");
    let (st, _, _) = get_json(&fsp, &s.url("/v1/fsp/requests/x")).await;
    assert_eq!(st, 403);
    let crl = served_crl_text(&env, &s).await;
    assert!(crl_entry(&crl, &serial).contains("Key Compromise"), "{crl}");
    let (st, _, b) = post_json(&op, &party_url("resume"), &json!({})).await;
    assert_eq!((st, b["code"].as_str()), (409, Some("certificate.revoked")));

    // By a given certificate: the bootstrap fsp-demo client becomes a party.
    let (demo_cert, _) = env.client_files("fsp-demo");
    let pem = std::fs::read_to_string(demo_cert).unwrap();
    let (st, _, b) = post_json(
        &op,
        &s.url("/v1/admin/parties"),
        &json!({ "party_id": "Demo.FSP@fsp.xbank", "kind": "fsp", "certificate": pem }),
    )
    .await;
    assert_eq!(
        (st, b["issued_by_tmcs"].as_bool()),
        (201, Some(false)),
        "{b}"
    );
    let (st, _, b) = get_json(&s.as_client("fsp-demo"), &s.url("/v1/fsp/requests/x")).await;
    assert_eq!(
        (st, b["code"].as_str()),
        (404, Some("request.not_found")),
        "{b}"
    );
    let (st, _, b) = get_json(&op, &s.url("/v1/admin/parties/Demo.FSP@fsp.xbank")).await;
    assert_eq!((st, b["status"].as_str()), (200, Some("active")), "{b}");
    // The auditor saw it all.
    let (_, _, b) = get_json(
        &s.as_client("auditor"),
        &s.url(&format!("/v1/audit/events?subject=party:{fsp_id}")),
    )
    .await;
    let actions: Vec<&str> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "auth.client_registered",
            "party.registered",
            "party.suspended",
            "party.resumed",
            "party.revoked"
        ]
    );
    s.stop().await;
}
on_both_backends_async!(parties, parties_by_csr_and_certificate);
