//! Domain services for unit tests, without a token: a software custodian
//! ([`SoftCustody`]), SQLite in a temp dir, the real bootstrap (CA
//! hierarchy, server keys and certificates), a merchant and an FSP
//! registered by CSR, and helpers to make subscribers and iMS messages. The
//! integration suite (`tests/it/`) runs the same flows on SoftHSM2 and both
//! databases.

use std::sync::Arc;

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;

use crate::app::{store_settings, Services};
use crate::audit::Actor;
use crate::clock::{Clock, OffsetClock, SharedClock};
use crate::config::Config;
use crate::hsm::soft::SoftCustody;
use crate::ims::{ImsMessage, Money, PartyId, Ref};
use crate::party::{self, Credential, NewParty};
use crate::store::Store;
use crate::subscriber::{self, ActivateRequest, Registration};
use tmcs_client::Handset;

pub const MERCHANT: &str = "Shop.One@merchant.kit";
pub const FSP: &str = "Kit.FSP@fsp.kit";
pub const PIN: &str = "482619";

pub struct Kit {
    _dir: tempfile::TempDir,
    pub svc: Services,
    pub soft: Arc<SoftCustody>,
    pub clock: Arc<OffsetClock>,
    pub merchant: PKey<Private>,
    pub fsp: PKey<Private>,
    pub operator: Actor,
    pub fsp_actor: Actor,
}

fn party_key(svc: &Services, id: &str, kind: &str) -> PKey<Private> {
    let kp = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec![])
        .unwrap()
        .serialize_request(&kp)
        .unwrap()
        .pem()
        .unwrap();
    party::register(
        svc,
        &Actor::System,
        NewParty {
            party_id: id.into(),
            kind: kind.into(),
            credential: Credential::Csr(csr),
            callback_url: None,
        },
    )
    .unwrap();
    PKey::private_key_from_pem(kp.serialize_pem().as_bytes()).unwrap()
}

fn sign(key: &PKey<Private>, data: &[u8]) -> Vec<u8> {
    let mut s = Signer::new(MessageDigest::sha256(), key).unwrap();
    s.sign_oneshot_to_vec(data).unwrap()
}

impl Default for Kit {
    fn default() -> Kit {
        Kit::new()
    }
}

impl Kit {
    pub fn new() -> Kit {
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("TMCS_PIN__ARGON2_MEMORY_KIB", "64"),
            ("TMCS_PIN__ARGON2_ITERATIONS", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let cfg = Config::load(None, dir.path(), env).unwrap();
        let store = Store::open(&store_settings(&cfg)).unwrap();
        store.migrate().unwrap();
        let soft = Arc::new(SoftCustody::new());
        let clock = Arc::new(OffsetClock::new());
        crate::init::bootstrap(
            &cfg,
            clock.as_ref(),
            store.clone(),
            soft.clone(),
            crate::init::InitReport::default(),
        )
        .unwrap();
        let kek = soft.generate_kek().unwrap();
        store
            .write(|c| {
                crate::store::wrapped::insert_kek(
                    c,
                    &crate::store::wrapped::KekRow {
                        version: 1,
                        key_id: kek.to_hex(),
                        created_at: 0,
                    },
                )
            })
            .unwrap();
        let shared: SharedClock = clock.clone();
        let svc = Services::build(&cfg, shared, store, soft.clone()).unwrap();
        let merchant = party_key(&svc, MERCHANT, "merchant");
        let fsp = party_key(&svc, FSP, "fsp");
        Kit {
            _dir: dir,
            svc,
            soft,
            clock,
            merchant,
            fsp,
            operator: Actor::Client {
                role: "operator".into(),
                fingerprint: "00".into(),
            },
            fsp_actor: Actor::Client {
                role: "fsp".into(),
                fingerprint: "01".into(),
            },
        }
    }

    /// A subscriber registered and activated with `pin`; its handset.
    pub fn subscriber(&self, msisdn: &str, pin: &str) -> Handset {
        let code = subscriber::register(
            &self.svc,
            &self.operator,
            Registration {
                msisdn: msisdn.into(),
                display_name: "Kit Person".into(),
                kyc_ref: "KYC".into(),
                party_id: None,
            },
        )
        .unwrap()
        .activation_code
        .expose()
        .to_string();
        let h = Handset::new(msisdn, self.svc.pki.transport.info.pem.as_bytes()).unwrap();
        let body = h.activation_body(&code, pin).unwrap();
        let req: ActivateRequest = serde_json::from_value(body).unwrap();
        subscriber::activate(&self.svc, req, None).unwrap();
        h
    }

    /// The subscriber row of `msisdn`.
    pub fn row(&self, msisdn: &str) -> crate::store::subscribers::SubscriberRow {
        self.svc
            .store
            .read(|c| crate::store::subscribers::by_msisdn(c, msisdn))
            .unwrap()
            .unwrap()
    }

    /// An iMS from `tel:<msisdn>` to the merchant, timestamped now, unsigned.
    pub fn ims(&self, msisdn: &str, tier: &str, amount: &str, reference: &str) -> ImsMessage {
        let now = self.clock.now();
        ImsMessage {
            tier: tier.parse().unwrap(),
            reference: Some(Ref::new(reference).unwrap()),
            from: PartyId::parse(&format!("tel:{msisdn}")).unwrap(),
            from_sign: None,
            to: PartyId::parse(MERCHANT).unwrap(),
            to_sign: None,
            fsp_sign: None,
            timestamp: now.replace_nanosecond(0).unwrap(),
            account_payable: "1234-5678".into(),
            account_receivable: "9876-5432".into(),
            amount: Money::parse(amount).unwrap(),
        }
    }

    /// Merchant signs M, FSP signs F.
    pub fn sign(&self, m: &mut ImsMessage) {
        m.to_sign = Some(sign(&self.merchant, &m.canonical_m()));
        m.fsp_sign = Some(sign(&self.fsp, &m.canonical_f().unwrap()));
    }

    pub fn signed(&self, msisdn: &str, tier: &str, amount: &str, reference: &str) -> ImsMessage {
        let mut m = self.ims(msisdn, tier, amount, reference);
        self.sign(&mut m);
        m
    }

    /// Submits as the FSP.
    pub fn submit(&self, m: &ImsMessage) -> crate::error::DomainResult<crate::signing::Submitted> {
        crate::signing::submit(&self.svc, Some(FSP), &self.fsp_actor, m.to_xml().as_bytes())
    }

    /// A PIN block for request `id` as its handset would make it.
    pub fn auth_block(&self, h: &Handset, id: &str, pin: &str) -> String {
        let row = self
            .svc
            .store
            .read(|c| crate::store::requests::get(c, id))
            .unwrap()
            .unwrap();
        h.auth_pin_block(id, &row.nonce, &row.dtbs_sha256, pin)
            .unwrap()
    }

    pub fn request(&self, id: &str) -> crate::store::requests::RequestRow {
        self.svc
            .store
            .read(|c| crate::store::requests::get(c, id))
            .unwrap()
            .unwrap()
    }

    /// How many requests exist.
    pub fn request_count(&self) -> i64 {
        use diesel::prelude::*;
        self.svc
            .store
            .read(|c| -> Result<i64, crate::store::StoreError> {
                Ok(crate::store::schema::requests::table
                    .count()
                    .get_result(c)?)
            })
            .unwrap()
    }

    /// Events with `action`.
    pub fn events(&self, action: &str) -> Vec<crate::store::audit_rows::EventRow> {
        self.svc
            .store
            .read(|c| {
                crate::store::audit_rows::list(
                    c,
                    &crate::store::audit_rows::EventFilter {
                        subject: None,
                        action: Some(action.into()),
                        after_seq: 0,
                        limit: 100_000,
                    },
                )
            })
            .unwrap()
    }
}
