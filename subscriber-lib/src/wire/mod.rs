//! The wire contract between the validator and subscribers: names, KV key layout, subjects,
//! the rkyv change event, the JSON records in KV, and the validator's request/reply messages.
//!
//! **Invariant:** nothing outside this module spells a subject, a KV key or an encoding. The
//! validator, the CLI and the subscriber all use these items, and `contract_tests` below pins
//! their bytes so that a change to the wire is a deliberate, visible one.

mod api;
mod audit;
mod auth;
mod event;
mod external;
mod fleet;
mod impact;
mod inherit;
mod layout;
mod names;
mod permissions;
mod proposals;
mod records;
mod rollouts;
mod schema_rules;
mod sealed;
mod site;

pub use api::*;
pub use audit::*;
pub use auth::*;
pub use event::*;
pub use external::*;
pub use fleet::*;
pub use impact::*;
pub use inherit::*;
pub use layout::*;
pub use names::*;
pub use permissions::*;
pub use proposals::*;
pub use records::*;
pub use rollouts::*;
pub use schema_rules::*;
pub use sealed::*;
pub use site::*;

#[cfg(test)]
mod contract_tests {
    use super::*;

    fn ns() -> Namespace {
        Namespace::new("payment-service").unwrap()
    }
    fn env() -> Environment {
        Environment::new("production").unwrap()
    }

    #[test]
    fn site_subjects_are_pinned() {
        assert_eq!(
            site_head_subject(&ns(), &env()),
            "mycosynth.site.heads.production.payment-service"
        );
        assert_eq!(
            site_schema_subject(&ns()),
            "mycosynth.site.schemas.payment-service"
        );
        assert_eq!(
            site_head_republish(),
            (
                "$KV.mycosynth-config.*.*._meta.head".to_owned(),
                "mycosynth.site.heads.{{wildcard(2)}}.{{wildcard(1)}}".to_owned()
            )
        );
        assert_eq!(
            site_schema_republish(),
            (
                "$KV.mycosynth-schemas.*".to_owned(),
                "mycosynth.site.schemas.{{wildcard(1)}}".to_owned()
            )
        );
        assert_eq!(
            site_stream_info_subject("eu"),
            "$JS.eu.API.STREAM.INFO.KV_mycosynth-config"
        );
        assert_eq!(
            site_reply_subject("eu", "x1"),
            "mycosynth.site.replies.eu.x1"
        );
    }

    #[test]
    fn identity_names_are_pinned() {
        assert_eq!(
            [HEADER_KEY, HEADER_TIME, HEADER_NONCE, HEADER_SIGNATURE],
            [
                "Mycosynth-Key",
                "Mycosynth-Time",
                "Mycosynth-Nonce",
                "Mycosynth-Signature"
            ]
        );
        assert_eq!((POLICY_BUCKET, POLICY_KEY), ("mycosynth-policy", "policy"));
        assert_eq!(
            (endpoint::POLICY_GET, endpoint::POLICY_SET),
            ("policy-get", "policy-set")
        );
        assert_eq!(inbox_prefix("UKEY"), "_INBOX_UKEY");
        let policy: Policy = serde_json::from_str(
            r#"{"identities":{"a":{"public_key":"UA"}},"grants":[{"identity":"a","role":"admin","namespace":"*","environment":"*"}]}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&policy).unwrap(),
            r#"{"identities":{"a":{"public_key":"UA"}},"grants":[{"identity":"a","role":"admin","namespace":"*","environment":"*"}]}"#
        );
    }

    #[test]
    fn subjects_and_keys_are_pinned() {
        assert_eq!(CONFIG_BUCKET, "mycosynth-config");
        assert_eq!(SCHEMA_BUCKET, "mycosynth-schemas");
        assert_eq!(
            value_key(&ns(), &env(), "database.pool_size"),
            "payment-service.production.database.pool_size"
        );
        assert_eq!(
            head_key(&ns(), &env()),
            "payment-service.production._meta.head"
        );
        assert_eq!(
            history_key(&ns(), &env(), 42),
            "_history.payment-service.production.42"
        );
        assert_eq!(state_filter(&ns(), &env()), "payment-service.production.>");
        assert_eq!(
            history_filter(&ns(), &env()),
            "_history.payment-service.production.*"
        );
        assert_eq!(heads_filter(&ns()), "payment-service.*._meta.head");
        assert_eq!(parents_filter(), "*.*._meta.parent");
        assert_eq!(
            parent_key(&ns(), &env()),
            "payment-service.production._meta.parent"
        );
        assert_eq!(
            classify_state_key(&ns(), &env(), &parent_key(&ns(), &env())),
            Some(StateEntry::OtherMeta),
            "readers of older versions ignore the parent declaration"
        );
        assert_eq!(api_subject(endpoint::PARENT), "mycosynth.api.parent");
        assert_eq!(kv_subject(CONFIG_BUCKET, "a.b"), "$KV.mycosynth-config.a.b");
        assert_eq!(kv_stream(CONFIG_BUCKET), "KV_mycosynth-config");
        assert_eq!(
            event_subject(&ns(), &env()),
            "mycosynth.events.production.payment-service"
        );
        assert_eq!(schema_subject(&ns()), "mycosynth.schema.payment-service");
        assert_eq!(
            receipt_subject(&ns(), &env()),
            "mycosynth.receipts.production.payment-service"
        );
        assert_eq!(RECEIPTS_ALL, "mycosynth.receipts.>");
        assert_eq!(api_subject(endpoint::STATUS), "mycosynth.api.status");
        assert_eq!(api_subject(endpoint::IMPACT), "mycosynth.api.impact");
        assert_eq!(api_subject(endpoint::CHANGE), "mycosynth.api.change");
        assert_eq!(
            direct_subject("Xq3k9", endpoint::CHANGE),
            "mycosynth.api.direct.Xq3k9.change"
        );
        assert_eq!(validator_ping_subject(), "$SRV.PING.mycosynth-validator");
        assert_eq!(AUDIT_STREAM, "MYCOSYNTH_AUDIT");
        assert_eq!(KEYS_BUCKET, "mycosynth-keys");
        assert_eq!(data_key_key(&ns()), "payment-service");
        assert_eq!(SENSITIVE_KEYWORD, "x-mycosynth-sensitive");
        assert_eq!(AUDIT_SUBJECTS, "mycosynth.audit.>");
        assert_eq!(audit_subject(endpoint::CHANGE), "mycosynth.audit.change");
        assert_eq!(
            api_subject(endpoint::AUDIT_VERIFY),
            "mycosynth.api.audit-verify"
        );
        assert_eq!(
            classify_state_key(
                &ns(),
                &env(),
                "payment-service.production.database.pool_size"
            ),
            Some(StateEntry::Value("database.pool_size"))
        );
        assert_eq!(
            classify_state_key(&ns(), &env(), "payment-service.production._meta.head"),
            Some(StateEntry::Head)
        );
        assert_eq!(
            classify_state_key(&ns(), &env(), "payment-service.staging.x"),
            None
        );
    }

    fn pinned_event() -> ChangeEvent {
        ChangeEvent {
            format: EVENT_FORMAT,
            namespace: "ns".into(),
            environment: "prod".into(),
            version: 2,
            previous_version: 1,
            changes: vec![
                EventChange {
                    key: "a".into(),
                    value_json: Some("1".into()),
                },
                EventChange {
                    key: "b".into(),
                    value_json: None,
                },
            ],
            change_id: "c".into(),
            author: "al".into(),
            reason: "".into(),
            source: "cli".into(),
            committed_at_us: 1,
            approved_by: vec!["bo".into()],
            change_request: Some("r".into()),
        }
    }

    /// The exact bytes of an event. If this test fails, the event format changed: bump
    /// `EVENT_FORMAT`, and plan how old subscribers and new validators coexist.
    #[test]
    fn impact_bodies_are_pinned() {
        let request = ImpactRequest {
            namespace: "payment-service".into(),
            environment: "production".into(),
            version: Some(7),
            window_s: Some(300),
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"namespace":"payment-service","environment":"production","version":7,"window_s":300}"#
        );
        let window = SignalWindow {
            instances: 2,
            samples: 5,
            mean: 0.5,
            max: 1.0,
        };
        let outcome = ImpactOutcome {
            version: 7,
            committed_at_us: 1,
            window_s: 300,
            signals: vec![SignalImpact {
                signal: "errors".into(),
                before: Some(window),
                after: None,
            }],
            rollout: None,
        };
        assert_eq!(
            serde_json::to_string(&outcome).unwrap(),
            r#"{"version":7,"committed_at_us":1,"window_s":300,"signals":[{"signal":"errors","before":{"instances":2,"samples":5,"mean":0.5,"max":1.0},"after":null}]}"#
        );
    }

    #[test]
    fn namespaces_bodies_are_pinned() {
        assert_eq!(serde_json::to_string(&NamespacesRequest {}).unwrap(), "{}");
        assert_eq!(endpoint::NAMESPACES, "namespaces");
        assert_eq!(all_heads_filter(), "*.*._meta.head");
        let outcome = NamespacesOutcome {
            environments: vec![EnvironmentSummary {
                namespace: "payment-service".into(),
                environment: "production".into(),
                version: 7,
                keys: 3,
                last: ChangeMeta {
                    change_id: "c1".into(),
                    author: "alice".into(),
                    time: "2026-12-04T10:00:00Z".into(),
                    time_us: 1,
                    reason: "peak".into(),
                    source: ChangeSource::Cli,
                    git_commit: None,
                    request_id: None,
                    emergency: false,
                    approved_by: vec![],
                    change_request: None,
                },
            }],
        };
        assert_eq!(
            serde_json::to_string(&outcome).unwrap(),
            r#"{"environments":[{"namespace":"payment-service","environment":"production","version":7,"keys":3,"last":{"change_id":"c1","author":"alice","time":"2026-12-04T10:00:00Z","time_us":1,"reason":"peak","source":"cli"}}]}"#
        );
    }

    #[test]
    fn event_bytes_are_pinned() {
        let bytes = pinned_event().encode();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, PINNED_EVENT_HEX, "event encoding changed");
        assert_eq!(ChangeEvent::decode(&bytes).unwrap(), pinned_event());
    }

    const PINNED_EVENT_HEX: &str = "61ffffffffffffff0100000031ffffffffffffff62ffffffffffffff000000000000000000000000626fffffffffffff020000006e73ffffffffffff70726f64ffffffff0000000002000000000000000100000000000000a8ffffff0200000063ffffffffffffff616cffffffffffffffffffffffffffff636c69ffffffffff0100000000000000a0ffffff010000000100000072ffffffffffffff00000000";

    #[test]
    fn records_are_plain_json() {
        let meta = ChangeMeta {
            change_id: "c1".into(),
            author: "alice".into(),
            time: "2026-01-01T00:00:00Z".into(),
            time_us: 1_767_225_600_000_000,
            reason: "why".into(),
            source: ChangeSource::Cli,
            git_commit: None,
            request_id: None,
            emergency: false,
            approved_by: Vec::new(),
            change_request: None,
        };
        let record = ValueRecord {
            value: serde_json::json!(50),
            version: 3,
            meta: meta.clone(),
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"value":50,"version":3,"change_id":"c1","author":"alice","time":"2026-01-01T00:00:00Z","time_us":1767225600000000,"reason":"why","source":"cli"}"#
        );
        let set = ChangeSetRecord {
            namespace: "ns".into(),
            environment: "prod".into(),
            version: 3,
            previous_version: 2,
            meta,
            changes: vec![
                KeyChange {
                    key: "a".into(),
                    value: Some(serde_json::Value::Null),
                },
                KeyChange {
                    key: "b".into(),
                    value: None,
                },
            ],
        };
        let json = serde_json::to_string(&set).unwrap();
        assert!(
            json.ends_with(r#""changes":[{"key":"a","value":null},{"key":"b"}]}"#),
            "{json}"
        );
        let back: ChangeSetRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set, "null value and deletion must stay distinct");
        // The head is the commit point: it carries its change set, and the history record
        // derived from it is the one the validator writes.
        let head = HeadRecord {
            version: 3,
            keys: 1,
            meta: set.meta.clone(),
            changes: Some(set.changes.clone()),
        };
        assert_eq!(
            serde_json::to_string(&head).unwrap(),
            r#"{"version":3,"keys":1,"change_id":"c1","author":"alice","time":"2026-01-01T00:00:00Z","time_us":1767225600000000,"reason":"why","source":"cli","changes":[{"key":"a","value":null},{"key":"b"}]}"#
        );
        assert_eq!(head.change_set("ns", "prod"), Some(set));
        // Heads written before the head carried its change set still read.
        let old: HeadRecord = serde_json::from_str(
            r#"{"version":3,"keys":1,"change_id":"c1","author":"alice","time":"2026-01-01T00:00:00Z","time_us":1,"source":"cli"}"#,
        )
        .unwrap();
        assert_eq!(old.changes, None);
        assert!(!old.roll_forward(|_, _| true, |_| true));
    }

    /// The chain's hash is part of the contract: a change here breaks every stored chain.
    #[test]
    fn audit_hash_is_pinned() {
        let record = AuditRecord {
            seq: 1,
            identity: "alice".into(),
            via: None,
            time: "2026-01-01T00:00:00Z".into(),
            time_us: 1,
            action: "change".into(),
            namespace: "ns".into(),
            environment: "prod".into(),
            keys: vec!["a".into()],
            more_keys: 0,
            outcome: "ok".into(),
            reason: String::new(),
            version: Some(1),
            change_id: None,
            change_request: None,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"seq":1,"identity":"alice","time":"2026-01-01T00:00:00Z","time_us":1,"action":"change","namespace":"ns","environment":"prod","keys":["a"],"more_keys":0,"outcome":"ok","reason":"","version":1,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","hash":""}"#
        );
        assert_eq!(record.compute_hash(), PINNED_AUDIT_HASH);
        // A request relayed by a console names it; records without one hash as before.
        let relayed = AuditRecord {
            via: Some("console".into()),
            ..record
        };
        assert!(serde_json::to_string(&relayed)
            .unwrap()
            .starts_with(r#"{"seq":1,"identity":"alice","via":"console","time""#));
    }

    /// Session tokens are signed by people's keys and checked by validators of other builds:
    /// their bytes are part of the contract.
    #[test]
    fn session_token_is_pinned() {
        let person = nkeys::KeyPair::from_seed(PINNED_SEED).unwrap();
        let claims = SessionClaims {
            identity_key: person.public_key(),
            audience: "UCONSOLE".into(),
            issued_at_ms: 1_767_225_600_000,
            expires_at_ms: 1_767_225_600_000 + DEFAULT_SESSION_TTL_MS,
            nonce: "n1".into(),
        };
        let json = serde_json::to_vec(&claims).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&json),
            format!(
                r#"{{"identity_key":"{}","audience":"UCONSOLE","issued_at_ms":1767225600000,"expires_at_ms":1767254400000,"nonce":"n1"}}"#,
                person.public_key()
            )
        );
        let signature = person.sign(&session_signing_payload(&json)).unwrap();
        let token = SessionToken::encode(&json, &signature);
        assert_eq!(token, PINNED_SESSION_TOKEN);
        let parsed = SessionToken::parse(&token).unwrap();
        assert_eq!(parsed.claims, claims);
        assert_eq!(parsed.claims_json, json);
        assert!(person
            .verify(
                &session_signing_payload(&parsed.claims_json),
                &parsed.signature
            )
            .is_ok());
        assert_eq!(HEADER_SESSION, "Mycosynth-Session");
        assert_eq!(CONSOLE_INFO_PATH, "/.well-known/mycosynth-console");
        assert_eq!(
            serde_json::to_string(&ConsoleInfo {
                public_key: "UC".into()
            })
            .unwrap(),
            r#"{"public_key":"UC"}"#
        );
        assert!(matches!(
            SessionToken::parse("no-dot"),
            Err(SessionTokenError::Malformed(_))
        ));
    }

    const PINNED_SEED: &str = "SUAKGLM3BYXDLPRTDIPB7QDZYXTY6HEWGJRHB5ZGROWYYK5NEWFADYBK24";
    /// Ed25519 signatures are deterministic: the same seed and claims give these bytes.
    const PINNED_SESSION_TOKEN: &str = concat!(
        "eyJpZGVudGl0eV9rZXkiOiJVQ1lEV1dGSU1BTTdQMjVWQkRSWEUzUlFBVVlPWUxDUUxBNFBYTU5KN1pV",
        "UjJDREtIQUVQVkNLSSIsImF1ZGllbmNlIjoiVUNPTlNPTEUiLCJpc3N1ZWRfYXRfbXMiOjE3NjcyMjU2",
        "MDAwMDAsImV4cGlyZXNfYXRfbXMiOjE3NjcyNTQ0MDAwMDAsIm5vbmNlIjoibjEifQ",
        ".",
        "IQ_Uks5lmQNc65QY9rVWh4If25efpcrdAT60SLEDlHUbwlwv1_EouF_fWyAHfWRGvC3H_OLGCKHu0mCgdnAWDg"
    );

    const PINNED_AUDIT_HASH: &str =
        "d450a762f747497805e369e5a4ebdf284bb020983cba2d890813545f92d00a5e";

    #[test]
    fn inheritance_and_emergency_records_are_pinned() {
        let record = ParentRecord {
            parent: "production".into(),
            author: "alice".into(),
            time: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"parent":"production","author":"alice","time":"2026-01-01T00:00:00Z"}"#
        );
        let meta: ChangeMeta = serde_json::from_str(
            r#"{"change_id":"c","author":"a","time":"t","time_us":1,"source":"cli","emergency":true}"#,
        )
        .unwrap();
        assert!(meta.emergency);
        let plain = ChangeMeta {
            emergency: false,
            ..meta.clone()
        };
        assert!(!serde_json::to_string(&plain).unwrap().contains("emergency"));
    }

    #[test]
    fn replies_are_tagged() {
        let reply: Reply<u64> = Reply::Error(ApiError {
            kind: ErrorKind::Conflict,
            message: "m".into(),
            violations: vec![],
            current_version: Some(4),
        });
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"error":{"kind":"conflict","message":"m","current_version":4}}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::Ok(7u64)).unwrap(),
            r#"{"ok":7}"#
        );
    }
}
