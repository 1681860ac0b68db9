//! The HTTPS service: health, metrics, public PKI, roles per route prefix,
//! problem+json.

use crate::on_both_backends_async;
use crate::support::{json_of, openssl, Db, Env, Served};

async fn health_metrics_and_pki(db: Db) {
    let Some(env) = Env::new(db, "health_metrics_and_pki") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    // The client trusts only ca.pem, so these calls prove the TLS chain.
    let anon = s.anonymous();
    // Every answer carries a request id: the caller's when sane, else a new one.
    let res = anon
        .get(s.url("/healthz"))
        .insert_header(("x-request-id", "pos-7.req_42"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("x-request-id").unwrap(), "pos-7.req_42");
    let res = anon
        .get(s.url("/healthz"))
        .insert_header(("x-request-id", "bad id!"))
        .send()
        .await
        .unwrap();
    let generated = res
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    let (st, _, body) = json_of(anon.get(s.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((st, body["status"].as_str()), (200, Some("ok")));
    let (st, _, body) = json_of(anon.get(s.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["hsm"], "ok");

    let mut res = anon.get(s.url("/pki/ca.pem")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let served_ca = res.body().await.unwrap();
    assert_eq!(
        served_ca.as_ref(),
        std::fs::read(env.ca()).unwrap().as_slice()
    );
    for p in ["/pki/transport.pem", "/pki/display.pem", "/pki/audit.pem"] {
        let mut res = anon.get(s.url(p)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{p}");
        let pem = res.body().await.unwrap();
        let f = env.path().join("served.pem");
        std::fs::write(&f, &pem).unwrap();
        let (ok, out) = openssl(&[
            "verify",
            "-CAfile",
            env.ca().to_str().unwrap(),
            f.to_str().unwrap(),
        ]);
        assert!(ok, "{p}: {out}");
    }
    let (_, text) = {
        let f = env.path().join("served.pem");
        std::fs::write(
            &f,
            anon.get(s.url("/pki/transport.pem"))
                .send()
                .await
                .unwrap()
                .body()
                .await
                .unwrap(),
        )
        .unwrap();
        openssl(&["x509", "-in", f.to_str().unwrap(), "-noout", "-text"])
    };
    assert!(text.contains("Key Agreement"), "{text}");

    let mut res = anon.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    for m in [
        "tmcs_http_requests_total{",
        "tmcs_http_request_duration_seconds_bucket{",
        "tmcs_hsm_operation_seconds_bucket{op=\"health\"",
        "tmcs_hsm_sessions_max 8",
        "tmcs_hsm_recoveries_total 0",
        "tmcs_db_pool_connections",
    ] {
        assert!(text.contains(m), "missing {m} in metrics:\n{text}");
    }
    // A known path with the wrong method: 405 with Allow.
    let res = anon.delete(s.url("/pki/crl")).send().await.unwrap();
    let allow = res
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (st, ct, body) = json_of(res).await;
    assert_eq!(
        (st, ct.as_str(), body["code"].as_str()),
        (405, "application/problem+json", Some("method_not_allowed"))
    );
    assert_eq!(allow, "GET");
    let (st, _, body) = json_of(anon.get(s.url("/pki/ocsp")).send().await.unwrap()).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    // The OpenAPI document is served and names exactly the routes.
    let (st, _, doc) = json_of(anon.get(s.url("/openapi.json")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    let mut documented = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: std::collections::BTreeSet<(String, String)> = tmcs::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, served,
        "docs/openapi.json and api::ROUTES disagree"
    );
    let (st, ct, body) = json_of(anon.get(s.url("/no/such/thing")).send().await.unwrap()).await;
    assert_eq!(
        (st, ct.as_str(), body["code"].as_str()),
        (404, "application/problem+json", Some("not_found"))
    );
    s.stop().await;
}
on_both_backends_async!(service_health_metrics_pki, health_metrics_and_pki);

async fn roles_are_enforced_per_prefix(db: Db) {
    let Some(env) = Env::new(db, "roles_are_enforced_per_prefix") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let path = "/v1/admin/subscribers/+4912345678";

    let (st, ct, body) = json_of(s.anonymous().get(s.url(path)).send().await.unwrap()).await;
    assert_eq!(st, 401, "{body}");
    assert_eq!(ct, "application/problem+json");
    assert_eq!(body["code"], "auth.unauthenticated");
    assert_eq!(body["type"], "urn:tmcs:problem:auth.unauthenticated");

    let (st, _, body) = json_of(
        s.as_client("auditor")
            .get(s.url(path))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, body["code"].as_str()), (403, Some("auth.forbidden")));
    let (st, _, _) = json_of(
        s.as_client("fsp-demo")
            .get(s.url(path))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 403);

    let (st, ct, body) = json_of(
        s.as_client("operator")
            .get(s.url(path))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 404, "{body}");
    assert_eq!(ct, "application/problem+json");
    assert_eq!(body["code"], "subscriber.not_found");
    assert_eq!(body["status"], 404);

    // An unregistered certificate (valid TLS, unknown fingerprint) is refused.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["intruder".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let stranger =
        tmcs_client::https::https_client_pem(&env.ca(), &cert.pem(), &key.serialize_pem()).unwrap();
    let (st, _, body) = json_of(stranger.get(s.url(path)).send().await.unwrap()).await;
    assert_eq!((st, body["code"].as_str()), (403, Some("auth.forbidden")));

    // The auditor API is the auditor's alone, and it saw the refusals: each
    // registered client's as its own event, the callers who proved nothing
    // counted into one `auth.refused` event per source.
    let (st, _, _) = json_of(
        s.as_client("operator")
            .get(s.url("/v1/audit/events"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 403);
    assert_eq!(tmcs::audit::refusals::flush(&s.app.svc).unwrap(), 1);
    let (st, _, body) = json_of(
        s.as_client("auditor")
            .get(s.url("/v1/audit/events?action=auth.denied&limit=50"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{body}");
    assert!(events.iter().all(|e| e["action"] == "auth.denied"));
    assert!(events[0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("auditor:sha256:"));
    assert!(events[1]["actor"]
        .as_str()
        .unwrap()
        .starts_with("fsp:sha256:"));
    let (st, _, body) = json_of(
        s.as_client("auditor")
            .get(s.url("/v1/audit/events?action=auth.refused&limit=50"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let refused = body["events"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{body}");
    assert_eq!(refused[0]["actor"], "anonymous");
    assert_eq!(refused[0]["subject"], "source:127.0.0.1");
    let d = &refused[0]["details"];
    assert_eq!(d["count"], 2, "{d}");
    assert_eq!(d["reasons"]["a client certificate is required"], 1, "{d}");
    assert_eq!(
        d["reasons"]["the client certificate is not registered"], 1,
        "{d}"
    );
    let (st, _, body) = json_of(
        s.as_client("auditor")
            .get(s.url("/v1/audit/checkpoints"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body["checkpoints"].as_array().unwrap().len(), 1);
    let (st, _, body) = json_of(
        s.as_client("auditor")
            .get(s.url("/v1/audit/events?limit=0"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, body["code"].as_str()), (400, Some("request.invalid")));
    for q in ["limit=abc", "nonsense=1"] {
        let url = s.url(&format!("/v1/audit/events?{q}"));
        let (st, ct, body) = json_of(s.as_client("auditor").get(url).send().await.unwrap()).await;
        assert_eq!(
            (st, ct.as_str(), body["code"].as_str()),
            (400, "application/problem+json", Some("request.invalid")),
            "{q}"
        );
    }
    // Prefix filters treat `_` literally on both backends.
    let url = s.url("/v1/audit/events?action=cert.key_*&limit=100");
    let (st, _, body) = json_of(s.as_client("auditor").get(url).send().await.unwrap()).await;
    assert_eq!(st, 200);
    let events = body["events"].as_array().unwrap();
    assert!(
        !events.is_empty() && events.iter().all(|e| e["action"] == "cert.key_generated"),
        "{body}"
    );
    let (st, _, _) = json_of(
        s.as_client("operator")
            .get(s.url("/v1/admin/subscribers/12345"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400);
    s.stop().await;
}
on_both_backends_async!(service_roles, roles_are_enforced_per_prefix);
