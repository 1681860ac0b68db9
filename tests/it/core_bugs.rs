//! Regression tests for the four bugs of the domain-core review (issue #7):
//! each one reproduces the bug as described and failed before its fix.
//!
//! 1. A renewal racing a wrong PIN wrote a stale subscriber row back and
//!    could undo a block (lost update on PostgreSQL).
//! 2. A request could be reported `expired` although it was signed, and
//!    GET handlers wrote expiry.
//! 3. The HSM signed `C` as rebuilt from storage, not checked against the
//!    digest the PIN block was bound to.
//! 4. A blocked payer got `pin.blocked` or `subscriber.blocked` depending on
//!    which of several checks ran first.

use diesel::prelude::*;
use serde_json::{json, Value};

use crate::on_both_backends_async;
use crate::signing::{events, problem, request_events, stored, Fx, PIN};
use crate::support::{get_json, post_json, random_msisdn, Db};

const WRONG: &str = "739152";

fn subscriber_row(fx: &Fx, msisdn: &str) -> tmcs::store::subscribers::SubscriberRow {
    fx.s.app
        .svc
        .store
        .read(|c| tmcs::store::subscribers::by_msisdn(c, msisdn))
        .unwrap()
        .unwrap()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Backends of this database that wait for a lock right now.
fn lock_waiters(pg: &mut PgConnection) -> i64 {
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE wait_event_type = 'Lock' AND datname = current_database()",
    )
    .get_result::<Count>(pg)
    .unwrap()
    .n
}

// ---------------------------------------------------------------------------
// 1. Lost update: a renewal must never write back a stale PIN counter or state.

/// Deterministic interleaving on PostgreSQL: the third wrong PIN's
/// transaction has blocked the subscriber but not committed yet when a
/// renewal reads the row. Before the fix the renewal read the old row
/// unlocked and saved it whole after the block committed, unblocking the
/// subscriber. Now it locks the row, sees the block and refuses.
#[actix_web::test]
async fn renewal_waits_for_a_blocking_wrong_pin_postgres() {
    let Some(fx) = Fx::start(Db::Postgres, "core_bug1_interleaved").await else {
        return;
    };
    let payer = random_msisdn();
    let (h, _) = fx.s.active_subscriber(&payer, PIN).await;
    let id = fx
        .submit_ok(&fx.signed(&payer, "small", "EUR5.00", "R-lost-1"))
        .await;
    for left in [2, 1] {
        let r = fx.authorize(&h, &id, WRONG).await;
        problem(&r, 403, "pin.wrong");
        assert_eq!(r.2["attempts_left"], left);
    }
    let sub = subscriber_row(&fx, &payer);

    // The third wrong PIN, in flight: the block is written, not yet committed.
    let mut pg = PgConnection::establish(&fx.env.cfg.database_url).unwrap();
    diesel::sql_query("BEGIN").execute(&mut pg).unwrap();
    diesel::sql_query(
        "UPDATE subscribers SET attempts = attempts + 1, state = 'blocked' WHERE id = $1",
    )
    .bind::<diesel::sql_types::Text, _>(&sub.id)
    .execute(&mut pg)
    .unwrap();

    // The operator renews meanwhile.
    let op = fx.s.as_client("operator");
    let url = fx.s.url(&format!("/v1/admin/subscribers/{payer}/renew"));
    let renewal = actix_web::rt::spawn(async move { post_json(&op, &url, &json!({})).await });
    let mut waited = 0;
    while lock_waiters(&mut pg) == 0 {
        assert!(
            waited < 200 && !renewal.is_finished(),
            "the renewal never waited for the subscriber row"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(25)).await;
        waited += 1;
    }
    diesel::sql_query("COMMIT").execute(&mut pg).unwrap();
    let (st, _, b) = renewal.await.unwrap();

    let after = subscriber_row(&fx, &payer);
    assert_eq!(
        (after.state.to_string(), after.attempts),
        ("blocked".to_string(), 3),
        "the renewal undid the block (answer {st} {b})"
    );
    assert_eq!(
        after.cert_serial, sub.cert_serial,
        "a blocked payer is not renewed"
    );
    problem(
        &(st, "application/problem+json".into(), b),
        409,
        "subscriber.not_active",
    );
    fx.finish().await;
}

/// Renewals racing three wrong PINs always end with the subscriber blocked
/// and the counter at the limit (several rounds, both backends).
async fn renewals_racing_wrong_pins(db: Db) {
    let Some(fx) = Fx::start(db, "core_bug1_race").await else {
        return;
    };
    for round in 0..4 {
        let payer = random_msisdn();
        let (h, _) = fx.s.active_subscriber(&payer, PIN).await;
        let id = fx
            .submit_ok(&fx.signed(&payer, "small", "EUR5.00", &format!("R-race-{round}")))
            .await;
        let d = fx.detail(&h, &id).await;
        let blocks: Vec<String> = (0..3)
            .map(|_| {
                h.auth_pin_block(
                    &id,
                    d["nonce"].as_str().unwrap(),
                    d["dtbs_sha256"].as_str().unwrap(),
                    WRONG,
                )
                .unwrap()
            })
            .collect();
        let op = fx.s.as_client("operator");
        let renew_url = fx.s.url(&format!("/v1/admin/subscribers/{payer}/renew"));
        let pins = blocks.iter().map(|b| fx.authorize_block(&h, &id, b));
        let empty = json!({});
        let renewals = (0..3).map(|_| post_json(&op, &renew_url, &empty));
        let (pin_answers, _) = futures_util::future::join(
            futures_util::future::join_all(pins),
            futures_util::future::join_all(renewals),
        )
        .await;
        for r in &pin_answers {
            assert!(
                matches!(r.2["code"].as_str(), Some("pin.wrong" | "pin.blocked")),
                "{r:?}"
            );
        }
        let after = subscriber_row(&fx, &payer);
        assert_eq!(
            (after.state.to_string(), after.attempts),
            ("blocked".to_string(), 3),
            "round {round}: a renewal undid the wrong PINs"
        );
    }
    fx.finish().await;
}
on_both_backends_async!(
    core_bug1_renewals_racing_wrong_pins,
    renewals_racing_wrong_pins
);

// ---------------------------------------------------------------------------
// 2. Expiry: answered from the row as it is; GET never writes.

async fn reads_do_not_write_expiry(db: Db) {
    let Some(fx) = Fx::start(db, "core_bug2_reads").await else {
        return;
    };
    let payer = random_msisdn();
    let (h, _) = fx.s.active_subscriber(&payer, PIN).await;
    let id = fx
        .submit_ok(&fx.signed(&payer, "small", "EUR5.00", "R-expiry-read"))
        .await;
    fx.env.clock.advance(time::Duration::seconds(200));

    // Both views say expired …
    let v = fx.fsp_view(&id).await;
    assert_eq!(v["status"], "expired", "{v}");
    let r = fx
        .handset_get(&h, &format!("/v1/handset/requests/{id}"))
        .await;
    problem(&r, 409, "request.expired");
    let (st, _, list) = {
        let path = "/v1/handset/requests";
        let r = fx.handset_get(&h, path).await;
        (r.0, r.1, r.2)
    };
    assert_eq!(st, 200);
    assert_eq!(list["requests"].as_array().map(Vec::len), Some(0), "{list}");
    // … but neither wrote anything: expiry is the sweeper's job.
    assert_eq!(
        stored(&fx.s, &id).status.to_string(),
        "pending_authorization"
    );
    assert_eq!(request_events(&fx.s, &id, "request.expired"), 0);

    // The sweeper records it, once.
    assert_eq!(tmcs::signing::expire_overdue(&fx.s.app.svc).unwrap(), 1);
    assert_eq!(tmcs::signing::expire_overdue(&fx.s.app.svc).unwrap(), 0);
    assert_eq!(stored(&fx.s, &id).status.to_string(), "expired");
    assert_eq!(request_events(&fx.s, &id, "request.expired"), 1);
    let v = fx.fsp_view(&id).await;
    assert_eq!(v["status"], "expired", "{v}");
    fx.finish().await;
}
on_both_backends_async!(
    core_bug2_reads_do_not_write_expiry,
    reads_do_not_write_expiry
);

/// A stale copy of a request that was signed meanwhile (read while pending,
/// then the clock passed its expiry): expiring it must report what the row
/// says after the attempt, `signed`, not `expired`.
async fn stale_row_is_not_reported_expired(db: Db) {
    let Some(fx) = Fx::start(db, "core_bug2_stale").await else {
        return;
    };
    let payer = random_msisdn();
    let (h, _) = fx.s.active_subscriber(&payer, PIN).await;
    let id = fx
        .submit_ok(&fx.signed(&payer, "small", "EUR5.00", "R-expiry-stale"))
        .await;
    let stale = stored(&fx.s, &id);
    let r = fx.authorize(&h, &id, PIN).await;
    assert_eq!(r.0, 200, "{}", r.2);
    fx.env.clock.advance(time::Duration::seconds(200));

    let status = tmcs::signing::expire_if_overdue(&fx.s.app.svc, &stale).unwrap();
    assert_eq!(status.to_string(), "signed");
    assert_eq!(stored(&fx.s, &id).status.to_string(), "signed");
    assert_eq!(request_events(&fx.s, &id, "request.expired"), 0);
    assert_eq!(fx.fsp_view(&id).await["status"], "signed");
    fx.finish().await;
}
on_both_backends_async!(
    core_bug2_stale_row_is_not_reported_expired,
    stale_row_is_not_reported_expired
);

// ---------------------------------------------------------------------------
// 3. Sign exactly what the PIN block was bound to.

fn hsm_signatures(fx: &Fx) -> u64 {
    fx.s.app
        .hsm
        .metrics()
        .op_seconds
        .with_label_values(&["ecdsa_sign"])
        .get_sample_count()
}

async fn signs_only_the_bound_digest(db: Db) {
    let Some(fx) = Fx::start(db, "core_bug3").await else {
        return;
    };
    let payer = random_msisdn();
    let (h, _) = fx.s.active_subscriber(&payer, PIN).await;
    let id = fx
        .submit_ok(&fx.signed(&payer, "small", "EUR25.00", "R-bound"))
        .await;
    let d = fx.detail(&h, &id).await;
    let block = h
        .auth_pin_block(
            &id,
            d["nonce"].as_str().unwrap(),
            d["dtbs_sha256"].as_str().unwrap(),
            PIN,
        )
        .unwrap();
    // The stored message changes after the PIN block was bound to its digest
    // (a bug elsewhere, or someone with database access).
    {
        use tmcs::store::schema::requests;
        let row = stored(&fx.s, &id);
        let tampered = row.ims_xml.replace("EUR25.00", "EUR24.00");
        assert_ne!(tampered, row.ims_xml);
        fx.s.app
            .svc
            .store
            .write(|c| -> Result<usize, tmcs::store::StoreError> {
                Ok(diesel::update(requests::table.find(&id))
                    .set(requests::ims_xml.eq(&tampered))
                    .execute(c)?)
            })
            .unwrap();
    }
    let before = hsm_signatures(&fx);
    let r = fx.authorize_block(&h, &id, &block).await;
    problem(&r, 500, "internal");
    assert_eq!(hsm_signatures(&fx), before, "the HSM signed something");
    let row = stored(&fx.s, &id);
    assert_eq!(
        (row.status.to_string(), row.signature_b64.as_deref()),
        ("failed".to_string(), None)
    );
    assert_eq!(request_events(&fx.s, &id, "request.signed"), 0);
    let failed = events(&fx.s, Some(format!("request:{id}")), Some("request.failed"));
    assert_eq!(failed.len(), 1);
    let details: Value = serde_json::from_str(&failed[0].details).unwrap();
    assert_eq!(details["error"], "dtbs.mismatch", "{details}");
    let v = fx.fsp_view(&id).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v.get("ims").is_none(), "{v}");
    fx.finish().await;
}
on_both_backends_async!(
    core_bug3_signs_only_the_bound_digest,
    signs_only_the_bound_digest
);

// ---------------------------------------------------------------------------
// 4. One check for a signer: the same state gives the same refusal everywhere.

async fn one_refusal_per_signer_state(db: Db) {
    let Some(fx) = Fx::start(db, "core_bug4").await else {
        return;
    };
    let op = fx.s.as_client("operator");

    // Blocked by the operator: `subscriber.blocked`, at submission and at
    // authorisation of a request that was pending before the block.
    let a = random_msisdn();
    let (ha, _) = fx.s.active_subscriber(&a, PIN).await;
    let pending = fx
        .submit_ok(&fx.signed(&a, "small", "EUR5.00", "R-op-1"))
        .await;
    let (st, _, b) = post_json(
        &op,
        &fx.s.url(&format!("/v1/admin/subscribers/{a}/block")),
        &json!({}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    fx.refused(
        &fx.signed(&a, "small", "EUR5.00", "R-op-2").to_xml(),
        403,
        "subscriber.blocked",
    )
    .await;
    let r = fx.authorize(&ha, &pending, PIN).await;
    problem(&r, 403, "subscriber.blocked");
    let gw = fx.s.as_client("gateway-demo");
    let (st, ct, b) = post_json(
        &gw,
        &fx.s.url("/v1/gateway/authorize"),
        &json!({ "msisdn": a, "request_id": pending, "pin": PIN }),
    )
    .await;
    problem(&(st, ct, b), 403, "subscriber.blocked");
    assert_eq!(
        subscriber_row(&fx, &a).attempts,
        0,
        "a refused authorisation of a blocked payer uses no PIN attempt"
    );

    // Blocked by wrong PINs: `pin.blocked`, at authorisation and at submission.
    let p = random_msisdn();
    let (hp, _) = fx.s.active_subscriber(&p, PIN).await;
    let id = fx
        .submit_ok(&fx.signed(&p, "small", "EUR5.00", "R-pin-1"))
        .await;
    for code in ["pin.wrong", "pin.wrong", "pin.blocked"] {
        problem(&fx.authorize(&hp, &id, WRONG).await, 403, code);
    }
    problem(&fx.authorize(&hp, &id, PIN).await, 403, "pin.blocked");
    fx.refused(
        &fx.signed(&p, "small", "EUR5.00", "R-pin-2").to_xml(),
        403,
        "pin.blocked",
    )
    .await;
    let (st, _, view) = get_json(&op, &fx.s.url(&format!("/v1/admin/subscribers/{p}"))).await;
    assert_eq!(
        (st, view["state"].as_str()),
        (200, Some("blocked")),
        "{view}"
    );
    fx.finish().await;
}
on_both_backends_async!(
    core_bug4_one_refusal_per_signer_state,
    one_refusal_per_signer_state
);
