use std::sync::Arc;

use bytes::Bytes;

use super::super::{Sealing, SEALED_HEADER};
use super::*;
use crate::IdempotencyKey;

const K1: [u8; 32] = [1; 32];
const K2: [u8; 32] = [2; 32];

fn id(scope: &str, key: &str) -> RecordId {
    RecordId::new(scope, None, &IdempotencyKey::parse(key.as_bytes()).unwrap())
}

fn response() -> Arc<StoredResponse> {
    Arc::new(
        StoredResponse::new(201, r#"{"account":"DE89370400440532013000"}"#)
            .with_header("location", "/payments/p-1"),
    )
}

fn sealing(ring: KeyRing) -> Sealing {
    Sealing::with(ring)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_sealed_response_opens_to_the_original_and_holds_none_of_it() {
    let s = sealing(KeyRing::new("k1", K1).unwrap());
    let rid = id("payments", "key-1");
    let sealed = s.seal(&rid, response()).unwrap();
    assert_eq!(sealed.status, 200);
    assert_eq!(
        sealed.headers,
        vec![(SEALED_HEADER.to_owned(), Bytes::from_static(b"k1"))]
    );
    let at_rest = crate::Record::Completed {
        fingerprint: crate::Fingerprint([0; 32]),
        response: sealed.clone(),
    }
    .encode();
    for plain in [
        &b"DE89370400440532013000"[..],
        b"/payments/p-1",
        b"location",
    ] {
        assert!(!contains(&at_rest, plain));
    }
    assert_eq!(s.open(&rid, sealed).unwrap(), response());
}

#[test]
fn a_response_kept_without_its_body_is_sealed_too() {
    let s = sealing(KeyRing::new("k1", K1).unwrap());
    let rid = id("payments", "key-1");
    let no_body = Arc::new(StoredResponse {
        status: 201,
        headers: vec![("location".into(), Bytes::from_static(b"/payments/p-9"))],
        body: None,
    });
    let sealed = s.seal(&rid, no_body.clone()).unwrap();
    assert!(!contains(sealed.body.as_deref().unwrap(), b"/payments/p-9"));
    assert_eq!(s.open(&rid, sealed).unwrap(), no_body);
}

#[test]
fn every_seal_has_its_own_nonce() {
    let s = sealing(KeyRing::new("k1", K1).unwrap());
    let rid = id("payments", "key-1");
    let a = s.seal(&rid, response()).unwrap();
    let b = s.seal(&rid, response()).unwrap();
    assert_ne!(
        a.body.as_ref().unwrap()[..24],
        b.body.as_ref().unwrap()[..24]
    );
    assert_ne!(a.body, b.body);
    // Two rings (two processes) under one key: different prefixes.
    let other = sealing(KeyRing::new("k1", K1).unwrap());
    let c = other.seal(&rid, response()).unwrap();
    assert_ne!(
        a.body.as_ref().unwrap()[..16],
        c.body.as_ref().unwrap()[..16]
    );
}

#[test]
fn a_tampered_record_does_not_open() {
    let s = sealing(KeyRing::new("k1", K1).unwrap());
    let rid = id("payments", "key-1");
    let sealed = s.seal(&rid, response()).unwrap();
    let body = sealed.body.clone().unwrap();
    for at in [0, 24, body.len() / 2, body.len() - 1] {
        let mut altered = body.to_vec();
        altered[at] ^= 0x01;
        let altered = Arc::new(StoredResponse {
            body: Some(altered.into()),
            ..(*sealed).clone()
        });
        let e = s.open(&rid, altered).unwrap_err();
        assert!(e.to_string().contains("failed authentication"), "{e}");
    }
    let truncated = Arc::new(StoredResponse {
        body: Some(body.slice(..30)),
        ..(*sealed).clone()
    });
    assert!(s.open(&rid, truncated).is_err());
}

#[test]
fn a_record_moved_to_another_key_or_scope_does_not_open() {
    let s = sealing(KeyRing::new("k1", K1).unwrap());
    let sealed = s.seal(&id("payments", "key-1"), response()).unwrap();
    assert!(s.open(&id("payments", "key-2"), sealed.clone()).is_err());
    assert!(s.open(&id("refunds", "key-1"), sealed).is_err());
}

#[test]
fn records_sealed_under_an_older_key_still_open_after_rotation() {
    let rid = id("payments", "key-1");
    let before = sealing(KeyRing::new("k1", K1).unwrap());
    let old = before.seal(&rid, response()).unwrap();
    let after = sealing(
        KeyRing::new("k2", K2)
            .unwrap()
            .with_older_key("k1", K1)
            .unwrap(),
    );
    assert_eq!(after.open(&rid, old).unwrap(), response());
    let new = after.seal(&rid, response()).unwrap();
    assert_eq!(new.header(SEALED_HEADER).unwrap().as_ref(), b"k2");
    // The ring of before the rotation does not hold k2.
    let e = before.open(&rid, new).unwrap_err();
    assert!(e.to_string().contains("does not hold"), "{e}");
}

#[test]
fn the_wrong_key_under_a_known_id_does_not_open() {
    let rid = id("payments", "key-1");
    let sealed = sealing(KeyRing::new("k1", K1).unwrap())
        .seal(&rid, response())
        .unwrap();
    let wrong = sealing(KeyRing::new("k1", K2).unwrap());
    assert!(wrong.open(&rid, sealed).is_err());
}

#[test]
fn plaintext_records_open_only_when_the_ring_accepts_them() {
    let rid = id("payments", "key-1");
    let strict = sealing(KeyRing::new("k1", K1).unwrap());
    let e = strict.open(&rid, response()).unwrap_err();
    assert!(e.to_string().contains("accept_unsealed"), "{e}");
    let lenient = sealing(KeyRing::new("k1", K1).unwrap().accept_unsealed());
    assert_eq!(lenient.open(&rid, response()).unwrap(), response());
}

#[test]
fn a_runtime_without_keys_refuses_sealed_records() {
    let rid = id("payments", "key-1");
    let sealed = sealing(KeyRing::new("k1", K1).unwrap())
        .seal(&rid, response())
        .unwrap();
    let plain = Sealing::default();
    assert!(plain.open(&rid, sealed).is_err());
    assert_eq!(plain.open(&rid, response()).unwrap(), response());
    assert_eq!(plain.seal(&rid, response()).unwrap(), response());
}

#[test]
fn rings_parse_from_the_environment_format() {
    let hex1 = "01".repeat(32);
    let hex2 = "0A".repeat(32);
    let ring: KeyRing = format!(" new:{hex2} , old:{hex1}").parse().unwrap();
    assert_eq!(ring.current_key_id(), "new");
    let rid = id("payments", "key-1");
    let old = sealing(KeyRing::new("old", K1).unwrap())
        .seal(&rid, response())
        .unwrap();
    assert_eq!(sealing(ring).open(&rid, old).unwrap(), response());

    let refused = |spec: String, why: &str| {
        let e = spec.parse::<KeyRing>().unwrap_err().to_string();
        assert!(e.contains(why), "{spec}: {e}");
        // A key never shows in the error.
        assert!(!e.contains(&hex1) && !e.contains("0101"), "{e}");
    };
    refused(String::new(), "is not ID:HEX64");
    refused(format!("k1{hex1}"), "is not ID:HEX64");
    refused(format!("k1:{}", &hex1[..62]), "64 hex digits");
    refused(format!("k1:{}zz", &hex1[..62]), "not a hex digit");
    refused(format!("k1:{hex1},k1:{hex2}"), "appears twice");
    refused(format!(":{hex1}"), "key id");
    refused(format!("a key:{hex1}"), "key id");
    refused(format!("{}:{hex1}", "k".repeat(33)), "key id");
}

#[test]
fn debug_shows_key_ids_only() {
    let ring = KeyRing::new("k1", K1).unwrap();
    let shown = format!("{ring:?}");
    assert!(shown.contains("k1") && !shown.contains("[1, 1"), "{shown}");
}
