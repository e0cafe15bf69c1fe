//! A test PKI made here: CSCA → document signer → EF.SOD over generated data groups, for RSA
//! (PKCS#1 v1.5 and PSS) and ECDSA (P-256, P-384, P-521, brainpoolP256r1 named and with explicit
//! parameters, brainpoolP384r1); then every failure passive authentication must tell apart —
//! wrong CSCA, expired signer, revoked signer, a flipped byte in DG2, in the signed attributes or
//! in the signature — and master lists, good and tampered.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use der::asn1::{BitString, OctetString, SetOfVec, UtcTime};
use der::{Any, Decode, Encode, Sequence, Tag};
use ecdsa::signature::hazmat::PrehashSigner;
use passport::pa::{self, Status};
use passport::sod;
use passport::trust::TrustStore;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::Attribute;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::time::Time;
use x509_cert::Certificate;

fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

const DAY: u64 = 86_400;

fn now() -> SystemTime {
    SystemTime::now()
}

fn time(t: SystemTime) -> Time {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(d.as_secs())).unwrap())
}

enum Key {
    Rsa(rsa::PrivateKey),
    RsaPss(rsa::PrivateKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
    Bp256 {
        key: ecdsa::SigningKey<bp256::BrainpoolP256r1>,
        explicit: bool,
    },
    Bp384(ecdsa::SigningKey<bp384::BrainpoolP384r1>),
}

fn sha256(b: &[u8]) -> Vec<u8> {
    use sha2_11::Digest;
    sha2_11::Sha256::digest(b).to_vec()
}

fn sha512(b: &[u8]) -> Vec<u8> {
    use sha2_11::Digest;
    sha2_11::Sha512::digest(b).to_vec()
}

fn sha384(b: &[u8]) -> Vec<u8> {
    use sha2_11::Digest;
    sha2_11::Sha384::digest(b).to_vec()
}

/// A fresh key of each kind; ECDSA keys from a counter so every call differs.
fn key(kind: &str) -> Key {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let scalar = |len: usize| {
        let mut b = vec![0x11u8; len];
        b[len - 1] = n;
        b
    };
    let mut rng = getrandom::SysRng;
    match kind {
        "rsa" => Key::Rsa(rsa::PrivateKey::new(&mut rng, 2048).unwrap()),
        "rsa-pss" => Key::RsaPss(rsa::PrivateKey::new(&mut rng, 2048).unwrap()),
        "p256" => Key::P256(p256::ecdsa::SigningKey::from_slice(&scalar(32)).unwrap()),
        "p384" => Key::P384(p384::ecdsa::SigningKey::from_slice(&scalar(48)).unwrap()),
        "p521" => Key::P521(p521::ecdsa::SigningKey::from_slice(&scalar(66)).unwrap()),
        "bp256" | "bp256-explicit" => Key::Bp256 {
            key: ecdsa::SigningKey::from_slice(&scalar(32)).unwrap(),
            explicit: kind == "bp256-explicit",
        },
        "bp384" => Key::Bp384(ecdsa::SigningKey::from_slice(&scalar(48)).unwrap()),
        _ => panic!("{kind}"),
    }
}

/// SEC 1 SpecifiedECDomain for brainpoolP256r1 (RFC 5639), as early German certificates spell
/// out their curve.
#[derive(Sequence)]
struct SpecifiedDomain {
    version: u8,
    field: FieldId,
    curve: Coefficients,
    base: OctetString,
    order: der::asn1::Uint,
    cofactor: der::asn1::Uint,
}
#[derive(Sequence)]
struct FieldId {
    field_type: ObjectIdentifier,
    prime: der::asn1::Uint,
}
#[derive(Sequence)]
struct Coefficients {
    a: OctetString,
    b: OctetString,
}

fn bp256_explicit(b_tweak: u8) -> Any {
    let h = |s: &str| hex::decode(s).unwrap();
    let mut b = h("26dc5c6ce94a4b44f330b5d9bbd77cbf958416295cf7e1ce6bccdc18ff8c07b6");
    b[31] ^= b_tweak;
    let d = SpecifiedDomain {
        version: 1,
        field: FieldId {
            field_type: oid("1.2.840.10045.1.1"),
            prime: der::asn1::Uint::new(&h("a9fb57dba1eea9bc3e660a909d838d726e3bf623d52620282013481d1f6e5377")).unwrap(),
        },
        curve: Coefficients {
            a: OctetString::new(h("7d5a0975fc2c3057eef67530417affe7fb8055c126dc5c6ce94a4b44f330b5d9")).unwrap(),
            b: OctetString::new(b).unwrap(),
        },
        base: OctetString::new(h("048bd2aeb9cb7e57cb2c4b482ffc81b7afb9de27e1e3bd23c23a4453bd9ace3262547ef835c3dac4fd97f8461a14611dc9c27745132ded8e545c1d54c72f046997")).unwrap(),
        order: der::asn1::Uint::new(&h("a9fb57dba1eea9bc3e660a909d838d718c397aa3b561a6f7901e0e82974856a7")).unwrap(),
        cofactor: der::asn1::Uint::new(&[1]).unwrap(),
    };
    Any::from_der(&d.to_der().unwrap()).unwrap()
}

impl Key {
    fn spki(&self) -> SubjectPublicKeyInfoOwned {
        self.spki_with(0)
    }

    /// `b_tweak` changes the explicit curve's b (a curve equal to no named one).
    fn spki_with(&self, b_tweak: u8) -> SubjectPublicKeyInfoOwned {
        let ec = |curve: Any, point: &[u8]| SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: oid("1.2.840.10045.2.1"),
                parameters: Some(curve),
            },
            subject_public_key: BitString::from_bytes(point).unwrap(),
        };
        let named = |o: &str| Any::from(oid(o));
        match self {
            Key::Rsa(k) | Key::RsaPss(k) => {
                use rsa::pkcs8::EncodePublicKey;
                let der = k.to_public_key().to_public_key_der().unwrap();
                SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).unwrap()
            }
            Key::P256(k) => ec(
                named("1.2.840.10045.3.1.7"),
                &k.verifying_key().to_sec1_bytes(),
            ),
            Key::P384(k) => ec(named("1.3.132.0.34"), &k.verifying_key().to_sec1_bytes()),
            Key::P521(k) => ec(named("1.3.132.0.35"), &k.verifying_key().to_sec1_bytes()),
            Key::Bp256 { key, explicit } => {
                let curve = if *explicit {
                    bp256_explicit(b_tweak)
                } else {
                    named("1.3.36.3.3.2.8.1.1.7")
                };
                ec(curve, &key.verifying_key().to_sec1_bytes())
            }
            Key::Bp384(k) => ec(
                named("1.3.36.3.3.2.8.1.1.11"),
                &k.verifying_key().to_sec1_bytes(),
            ),
        }
    }

    fn alg(&self) -> AlgorithmIdentifierOwned {
        let plain = |o: &str| AlgorithmIdentifierOwned {
            oid: oid(o),
            parameters: None,
        };
        match self {
            Key::Rsa(_) => AlgorithmIdentifierOwned {
                oid: oid("1.2.840.113549.1.1.11"),
                parameters: Some(Any::null()),
            },
            Key::RsaPss(_) => {
                let params = rsa::pkcs1::RsaPssParams::<der::AnyRef>::new::<sha2_11::Sha256>(32);
                AlgorithmIdentifierOwned {
                    oid: oid("1.2.840.113549.1.1.10"),
                    parameters: Some(Any::from_der(&params.to_der().unwrap()).unwrap()),
                }
            }
            Key::P384(_) | Key::Bp384(_) => plain("1.2.840.10045.4.3.3"),
            Key::P521(_) => plain("1.2.840.10045.4.3.4"),
            _ => plain("1.2.840.10045.4.3.2"),
        }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Key::Rsa(k) => k
                .sign(rsa::Pkcs1v15Sign::new::<sha2_11::Sha256>(), &sha256(msg))
                .unwrap(),
            Key::RsaPss(k) => k
                .sign_with_rng(
                    &mut getrandom::SysRng,
                    rsa::pss::Pss::<sha2_11::Sha256>::new_with_salt(32),
                    &sha256(msg),
                )
                .unwrap(),
            Key::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign_prehash(&sha256(msg)).unwrap();
                s.to_der().as_bytes().to_vec()
            }
            Key::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign_prehash(&sha384(msg)).unwrap();
                s.to_der().as_bytes().to_vec()
            }
            Key::P521(k) => {
                let s: p521::ecdsa::Signature = k.sign_prehash(&sha512(msg)).unwrap();
                s.to_der().as_bytes().to_vec()
            }
            Key::Bp256 { key, .. } => {
                let s: ecdsa::Signature<bp256::BrainpoolP256r1> =
                    key.sign_prehash(&sha256(msg)).unwrap();
                s.to_der().as_bytes().to_vec()
            }
            Key::Bp384(k) => {
                let s: ecdsa::Signature<bp384::BrainpoolP384r1> =
                    k.sign_prehash(&sha384(msg)).unwrap();
                s.to_der().as_bytes().to_vec()
            }
        }
    }

    fn digest_alg(&self) -> AlgorithmIdentifierOwned {
        let o = match self {
            Key::P384(_) | Key::Bp384(_) => "2.16.840.1.101.3.4.2.2",
            Key::P521(_) => "2.16.840.1.101.3.4.2.3",
            _ => "2.16.840.1.101.3.4.2.1",
        };
        AlgorithmIdentifierOwned {
            oid: oid(o),
            parameters: None,
        }
    }

    fn digest(&self, b: &[u8]) -> Vec<u8> {
        match self {
            Key::P384(_) | Key::Bp384(_) => sha384(b),
            Key::P521(_) => sha512(b),
            _ => sha256(b),
        }
    }
}

#[derive(Sequence)]
struct Validity {
    not_before: Time,
    not_after: Time,
}

#[derive(Sequence)]
struct Tbs {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: u8,
    serial: der::asn1::Uint,
    signature: AlgorithmIdentifierOwned,
    issuer: Name,
    validity: Validity,
    subject: Name,
    spki: SubjectPublicKeyInfoOwned,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    extensions: Option<Vec<Extension>>,
}

#[derive(Sequence)]
struct RawCert {
    tbs: Tbs,
    alg: AlgorithmIdentifierOwned,
    sig: BitString,
}

/// A certificate for `subject`'s key `spki`, signed by `issuer_key` under `issuer`'s name.
fn certificate(
    subject: &str,
    spki: SubjectPublicKeyInfoOwned,
    issuer: &str,
    issuer_key: &Key,
    serial: u8,
    valid: (SystemTime, SystemTime),
    ca: bool,
) -> Certificate {
    let bc = BasicConstraints {
        ca,
        path_len_constraint: None,
    };
    let tbs = Tbs {
        version: 2,
        serial: der::asn1::Uint::new(&[serial]).unwrap(),
        signature: issuer_key.alg(),
        issuer: Name::from_str(issuer).unwrap(),
        validity: Validity {
            not_before: time(valid.0),
            not_after: time(valid.1),
        },
        subject: Name::from_str(subject).unwrap(),
        spki,
        extensions: Some(vec![Extension {
            extn_id: oid("2.5.29.19"),
            critical: true,
            extn_value: OctetString::new(bc.to_der().unwrap()).unwrap(),
        }]),
    };
    let sig = issuer_key.sign(&tbs.to_der().unwrap());
    let raw = RawCert {
        alg: issuer_key.alg(),
        tbs,
        sig: BitString::from_bytes(&sig).unwrap(),
    };
    Certificate::from_der(&raw.to_der().unwrap()).unwrap()
}

#[derive(Sequence)]
struct LdsSecurityObject {
    version: u8,
    hash_algorithm: AlgorithmIdentifierOwned,
    hashes: Vec<DgHash>,
}
#[derive(Sequence)]
struct DgHash {
    number: u8,
    hash: OctetString,
}

#[derive(Clone, Copy, PartialEq)]
enum Tamper {
    None,
    SignedAttributes,
    Signature,
}

/// CMS SignedData over `content` (of `content_type`), signed by `key` whose certificate is `cert`.
fn signed_data(
    content_type: &str,
    content: &[u8],
    cert: &Certificate,
    key: &Key,
    tamper: Tamper,
) -> Vec<u8> {
    let attr = |o: &str, v: Any| Attribute {
        oid: oid(o),
        values: SetOfVec::try_from(vec![v]).unwrap(),
    };
    let mut digest = key.digest(content);
    let signed_for = digest.clone();
    let attrs = |d: Vec<u8>| {
        SetOfVec::try_from(vec![
            attr("1.2.840.113549.1.9.3", Any::from(oid(content_type))),
            attr(
                "1.2.840.113549.1.9.4",
                Any::from_der(&OctetString::new(d).unwrap().to_der().unwrap()).unwrap(),
            ),
        ])
        .unwrap()
    };
    let mut signature = key.sign(&attrs(signed_for).to_der().unwrap());
    match tamper {
        Tamper::None => {}
        Tamper::SignedAttributes => digest[3] ^= 1,
        Tamper::Signature => {
            let i = signature.len() / 2;
            signature[i] ^= 1;
        }
    }
    let tbs = cert.tbs_certificate();
    let si = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }),
        digest_alg: key.digest_alg(),
        signed_attrs: Some(attrs(digest)),
        signature_algorithm: key.alg(),
        signature: OctetString::new(signature).unwrap(),
        unsigned_attrs: None,
    };
    let sd = SignedData {
        version: CmsVersion::V3,
        digest_algorithms: SetOfVec::try_from(vec![key.digest_alg()]).unwrap(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oid(content_type),
            econtent: Some(Any::new(Tag::OctetString, content.to_vec()).unwrap()),
        },
        certificates: Some(CertificateSet(
            SetOfVec::try_from(vec![CertificateChoices::Certificate(cert.clone())]).unwrap(),
        )),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![si]).unwrap()),
    };
    ContentInfo {
        content_type: oid("1.2.840.113549.1.7.2"),
        content: Any::encode_from(&sd).unwrap(),
    }
    .to_der()
    .unwrap()
}

/// EF.SOD (`0x77` around SignedData) over the given data groups.
fn ef_sod(groups: &[(u8, &[u8])], cert: &Certificate, key: &Key, tamper: Tamper) -> Vec<u8> {
    let lds = LdsSecurityObject {
        version: 0,
        hash_algorithm: key.digest_alg(),
        hashes: groups
            .iter()
            .map(|(n, b)| DgHash {
                number: *n,
                hash: OctetString::new(key.digest(b)).unwrap(),
            })
            .collect(),
    };
    let sd = signed_data("2.23.136.1.1.1", &lds.to_der().unwrap(), cert, key, tamper);
    Any::new(
        Tag::Application {
            constructed: true,
            number: der::TagNumber(23),
        },
        sd,
    )
    .unwrap()
    .to_der()
    .unwrap()
}

/// DG1 with Doc 9303's specimen MRZ, and a DG2 with one small JPEG face record.
fn data_groups() -> (Vec<u8>, Vec<u8>) {
    let mrz =
        b"P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<L898902C36UTO7408122F1204159ZE184226B<<<<<10";
    let mut dg1 = vec![0x61, 0x5B, 0x5F, 0x1F, 0x58];
    dg1.extend_from_slice(mrz);
    let jpeg: Vec<u8> = [0xFF, 0xD8, 0xFF, 0xE0]
        .into_iter()
        .chain((0..200).map(|i| i as u8))
        .collect();
    let face_len = 20 + 12 + jpeg.len();
    let mut rec = b"FAC\x00010\x00".to_vec();
    rec.extend(((14 + face_len) as u32).to_be_bytes());
    rec.extend(1u16.to_be_bytes());
    rec.extend((face_len as u32).to_be_bytes());
    rec.extend([0u8; 16]); // no feature points, unspecified attributes and pose
    rec.extend([1, 0]); // full frontal, JPEG
    rec.extend(120u16.to_be_bytes());
    rec.extend(160u16.to_be_bytes());
    rec.extend([1, 2, 0, 0, 0, 0]);
    rec.extend(&jpeg);
    let tlv = |tag: &[u8], v: &[u8]| {
        let mut o = tag.to_vec();
        if v.len() < 128 {
            o.push(v.len() as u8);
        } else {
            o.extend([0x82, (v.len() >> 8) as u8, v.len() as u8]);
        }
        o.extend_from_slice(v);
        o
    };
    let header = tlv(&[0xA1], &tlv(&[0x87], &[1, 1]));
    let template = tlv(&[0x7F, 0x60], &[header, tlv(&[0x5F, 0x2E], &rec)].concat());
    let group = tlv(&[0x7F, 0x61], &[vec![0x02, 0x01, 0x01], template].concat());
    (dg1, tlv(&[0x75], &group))
}

struct Pki {
    csca_key: Key,
    csca: Certificate,
    ds_key: Key,
    ds: Certificate,
}

fn pki(kind: &str, ds_valid: (SystemTime, SystemTime)) -> Pki {
    let csca_key = key(kind);
    let csca_name = "CN=CSCA Utopia Test,C=UT";
    let year = Duration::from_secs(365 * DAY);
    let csca = certificate(
        csca_name,
        csca_key.spki(),
        csca_name,
        &csca_key,
        1,
        (now() - year, now() + 10 * year),
        true,
    );
    let ds_key = key(kind);
    let ds = certificate(
        "CN=DS Utopia Test,C=UT",
        ds_key.spki(),
        csca_name,
        &csca_key,
        7,
        ds_valid,
        false,
    );
    Pki {
        csca_key,
        csca,
        ds_key,
        ds,
    }
}

fn current() -> (SystemTime, SystemTime) {
    (
        now() - Duration::from_secs(30 * DAY),
        now() + Duration::from_secs(300 * DAY),
    )
}

fn store(cscas: &[&Certificate]) -> TrustStore {
    let mut s = TrustStore::default();
    for c in cscas {
        s.add_certificate(&c.to_der().unwrap()).unwrap();
    }
    s
}

fn crl(p: &Pki, revoked: &[u8]) -> Vec<u8> {
    crl_by(&p.csca, &p.csca_key, revoked)
}

/// A CRL in the name of `csca`, signed with `key`.
fn crl_by(csca: &Certificate, key: &Key, revoked: &[u8]) -> Vec<u8> {
    let tbs = TbsCertList {
        version: x509_cert::Version::V2,
        signature: key.alg(),
        issuer: csca.tbs_certificate().subject().clone(),
        this_update: time(now() - Duration::from_secs(DAY)),
        next_update: Some(time(now() + Duration::from_secs(30 * DAY))),
        revoked_certificates: if revoked.is_empty() {
            None
        } else {
            Some(
                revoked
                    .iter()
                    .map(|s| RevokedCert {
                        serial_number: x509_cert::serial_number::SerialNumber::<
                            x509_cert::certificate::Rfc5280,
                        >::new(&[*s])
                        .unwrap(),
                        revocation_date: time(now() - Duration::from_secs(DAY)),
                        crl_entry_extensions: None,
                    })
                    .collect(),
            )
        },
        crl_extensions: None,
    };
    let sig = key.sign(&tbs.to_der().unwrap());
    CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: key.alg(),
        signature: BitString::from_bytes(&sig).unwrap(),
    }
    .to_der()
    .unwrap()
}

fn run(p: &Pki, trust: &TrustStore, tamper: Tamper, dg2_flip: bool) -> pa::Report {
    let (dg1, mut dg2) = data_groups();
    let sod_bytes = ef_sod(&[(1, &dg1), (2, &dg2)], &p.ds, &p.ds_key, tamper);
    if dg2_flip {
        let i = dg2.len() - 10;
        dg2[i] ^= 0x01;
    }
    let s = sod::parse_sod(&sod_bytes).unwrap();
    pa::authenticate(&s, &[(1, &dg1), (2, &dg2)], Some(trust), now())
}

#[test]
fn every_algorithm_passes_every_check() {
    for kind in [
        "rsa",
        "rsa-pss",
        "p256",
        "p384",
        "bp256",
        "bp256-explicit",
        "bp384",
    ] {
        let p = pki(kind, current());
        let mut trust = store(&[&p.csca]);
        trust.add_crl(&crl(&p, &[3, 4])).unwrap();
        let r = run(&p, &trust, Tamper::None, false);
        assert!(r.hashes_ok(), "{kind}: {:?}", r.data_groups);
        for (name, c) in r.checks() {
            assert_eq!(c.status, Status::Passed, "{kind} {name}: {}", c.detail);
        }
        assert!(pa::Policy::default().refusals(&r).is_empty(), "{kind}");
        if kind == "bp256-explicit" {
            assert!(
                r.signature
                    .detail
                    .contains("brainpoolP256r1 (explicit parameters)"),
                "{}",
                r.signature.detail
            );
        }
        if kind == "rsa-pss" {
            assert!(
                r.signature.detail.starts_with("RSASSA-PSS"),
                "{}",
                r.signature.detail
            );
        }
    }
}

#[test]
fn wrong_csca_is_a_chain_failure() {
    let p = pki("p256", current());
    // Same name, different key: a forger's CSCA.
    let other = pki("p256", current());
    let r = run(&p, &store(&[&other.csca]), Tamper::None, false);
    assert_eq!(r.signature.status, Status::Passed);
    assert_eq!(r.chain.status, Status::Failed, "{}", r.chain.detail);
    assert_eq!(pa::Policy::default().refusals(&r), ["chain to CSCA"]);
    // A CSCA of another name.
    let k = key("rsa");
    let stranger = certificate(
        "CN=CSCA Elsewhere,C=EW",
        k.spki(),
        "CN=CSCA Elsewhere,C=EW",
        &k,
        1,
        current(),
        true,
    );
    let r = run(&p, &store(&[&stranger]), Tamper::None, false);
    assert_eq!(r.chain.status, Status::Failed);
    assert!(
        r.chain.detail.contains("no CSCA named"),
        "{}",
        r.chain.detail
    );
    // The right name and key, but not a CA: a certificate that may not certify.
    let not_ca = certificate(
        "CN=CSCA Utopia Test,C=UT",
        p.csca_key.spki(),
        "CN=CSCA Utopia Test,C=UT",
        &p.csca_key,
        2,
        current(),
        false,
    );
    let r = run(&p, &store(&[&not_ca]), Tamper::None, false);
    assert_eq!(r.chain.status, Status::Failed);
    assert!(r.chain.detail.contains("is not a CA"), "{}", r.chain.detail);
}

#[test]
fn expired_signer_is_reported_and_policy_decides() {
    let long_ago = (
        now() - Duration::from_secs(800 * DAY),
        now() - Duration::from_secs(400 * DAY),
    );
    let p = pki("bp256", long_ago);
    let r = run(&p, &store(&[&p.csca]), Tamper::None, false);
    assert_eq!(r.signer_validity.status, Status::Failed);
    assert_eq!(r.signature.status, Status::Passed);
    assert_eq!(r.chain.status, Status::Passed);
    assert_eq!(pa::Policy::default().refusals(&r), ["signer validity"]);
    let lenient = pa::Policy {
        allow_expired_signer: true,
        ..pa::Policy::default()
    };
    assert!(lenient.refusals(&r).is_empty());
}

#[test]
fn revoked_signer_is_refused_whatever_the_policy() {
    let p = pki("rsa", current());
    let mut trust = store(&[&p.csca]);
    trust.add_crl(&crl(&p, &[7])).unwrap();
    let r = run(&p, &trust, Tamper::None, false);
    assert_eq!(
        r.revocation.status,
        Status::Failed,
        "{}",
        r.revocation.detail
    );
    assert!(r.revocation.detail.contains("revoked"));
    let lenient = pa::Policy {
        allow_expired_signer: true,
        require_chain: false,
        require_revocation: false,
    };
    assert_eq!(lenient.refusals(&r), ["revocation"]);
    // A CRL not signed by the CSCA is a failure, not a pass.
    let forger = pki("rsa", current());
    let forged = crl(&forger, &[]);
    let mut trust = store(&[&p.csca]);
    trust.add_crl(&forged).unwrap();
    assert_eq!(
        run(&p, &trust, Tamper::None, false).revocation.status,
        Status::Failed
    );
    // Without a CRL, revocation is not checked, and only a policy that requires it refuses.
    let r = run(&p, &store(&[&p.csca]), Tamper::None, false);
    assert_eq!(r.revocation.status, Status::NotChecked);
    assert!(pa::Policy::default().refusals(&r).is_empty());
    let strict = pa::Policy {
        require_revocation: true,
        ..pa::Policy::default()
    };
    assert_eq!(strict.refusals(&r), ["revocation"]);
}

/// A renewed CSCA (same name, new key) signs the CRLs; the signer was certified by the old key.
#[test]
fn a_renewed_csca_signs_the_crl_of_a_signer_certified_by_its_predecessor() {
    let p = pki("p256", current());
    let name = "CN=CSCA Utopia Test,C=UT";
    let new_key = key("p256");
    let renewed = certificate(name, new_key.spki(), name, &new_key, 2, current(), true);
    let mut trust = store(&[&p.csca, &renewed]);
    trust.add_crl(&crl_by(&renewed, &new_key, &[3])).unwrap();
    let r = run(&p, &trust, Tamper::None, false);
    assert_eq!(r.chain.status, Status::Passed, "{}", r.chain.detail);
    assert_eq!(
        r.revocation.status,
        Status::Passed,
        "{}",
        r.revocation.detail
    );
    let mut trust = store(&[&renewed, &p.csca]);
    trust.add_crl(&crl_by(&renewed, &new_key, &[7])).unwrap();
    assert_eq!(
        run(&p, &trust, Tamper::None, false).revocation.status,
        Status::Failed
    );
}

#[test]
fn flipped_bytes_fail_exactly_their_check() {
    for kind in ["rsa", "bp256"] {
        let p = pki(kind, current());
        let trust = store(&[&p.csca]);
        let r = run(&p, &trust, Tamper::None, true);
        assert_eq!(r.data_groups[0].status, Status::Passed);
        assert_eq!(r.data_groups[1].status, Status::Failed, "{kind}");
        assert_eq!(r.signature.status, Status::Passed, "{kind}");
        assert_eq!(pa::Policy::default().refusals(&r), ["data-group hash"]);

        let r = run(&p, &trust, Tamper::SignedAttributes, false);
        assert!(r.hashes_ok());
        assert_eq!(r.signed_attributes.status, Status::Failed, "{kind}");
        assert_eq!(r.signature.status, Status::Failed, "{kind}");

        let r = run(&p, &trust, Tamper::Signature, false);
        assert!(r.hashes_ok());
        assert_eq!(r.signed_attributes.status, Status::Passed, "{kind}");
        assert_eq!(
            r.signature.status,
            Status::Failed,
            "{kind}: {}",
            r.signature.detail
        );
        assert_eq!(pa::Policy::default().refusals(&r), ["signature"]);
    }
}

#[test]
fn explicit_parameters_of_an_unknown_curve_are_refused() {
    let csca_key = key("bp256-explicit");
    let name = "CN=CSCA Utopia Test,C=UT";
    let csca = certificate(name, csca_key.spki(), name, &csca_key, 1, current(), true);
    let ds_key = key("bp256-explicit");
    let ds = certificate(
        "CN=DS,C=UT",
        ds_key.spki_with(0x40),
        name,
        &csca_key,
        2,
        current(),
        false,
    );
    let (dg1, _) = data_groups();
    let s = sod::parse_sod(&ef_sod(&[(1, &dg1)], &ds, &ds_key, Tamper::None)).unwrap();
    let r = pa::authenticate(&s, &[(1, &dg1)], Some(&store(&[&csca])), now());
    assert_eq!(
        r.signature.status,
        Status::NotChecked,
        "{}",
        r.signature.detail
    );
    assert!(
        r.signature
            .detail
            .contains("equal no supported named curve"),
        "{}",
        r.signature.detail
    );
    assert_eq!(r.chain.status, Status::Passed);
    assert_eq!(pa::Policy::default().refusals(&r), ["signature"]);
}

#[derive(Sequence)]
struct CscaMasterList {
    version: u8,
    certs: SetOfVec<Certificate>,
}

#[test]
fn master_list_is_verified_then_trusted() {
    let p = pki("p256", current());
    // The list signer is certified by the CSCA of the country publishing the list.
    let ml_key = key("p256");
    let ml_signer = certificate(
        "CN=Master List Signer Utopia,C=UT",
        ml_key.spki(),
        "CN=CSCA Utopia Test,C=UT",
        &p.csca_key,
        9,
        current(),
        false,
    );
    let other = pki("rsa", current());
    let other_csca = certificate(
        "CN=CSCA Other,C=OT",
        other.csca_key.spki(),
        "CN=CSCA Other,C=OT",
        &other.csca_key,
        1,
        current(),
        true,
    );
    let list = CscaMasterList {
        version: 0,
        certs: SetOfVec::try_from(vec![p.csca.clone(), other_csca]).unwrap(),
    };
    let ml = signed_data(
        "2.23.136.1.1.2",
        &list.to_der().unwrap(),
        &ml_signer,
        &ml_key,
        Tamper::None,
    );

    let mut trust = TrustStore::default();
    let report = trust.add_master_list(&ml, now()).unwrap();
    assert_eq!(report.certificates, 2);
    assert!(!report.anchored);
    assert!(report.signer_chains_to.contains("CSCA Utopia Test"));
    let r = run(&p, &trust, Tamper::None, false);
    assert_eq!(r.chain.status, Status::Passed, "{}", r.chain.detail);

    // Anchored: the list signer must chain to a CSCA trusted beforehand.
    let mut anchored = store(&[&p.csca]);
    assert!(anchored.add_master_list(&ml, now()).unwrap().anchored);
    let mut wrong_anchor = store(&[&other.csca]);
    assert!(wrong_anchor.add_master_list(&ml, now()).is_err());

    // Tampered: the signature no longer verifies.
    let bad = signed_data(
        "2.23.136.1.1.2",
        &list.to_der().unwrap(),
        &ml_signer,
        &ml_key,
        Tamper::Signature,
    );
    assert!(TrustStore::default().add_master_list(&bad, now()).is_err());
    let mut flipped = ml.clone();
    let i = flipped.len() / 3;
    flipped[i] ^= 0x20;
    assert!(TrustStore::default()
        .add_master_list(&flipped, now())
        .is_err());
    // An SOD is not a master list.
    let (dg1, _) = data_groups();
    let sod_cms = signed_data("2.23.136.1.1.1", &dg1, &p.ds, &p.ds_key, Tamper::None);
    assert!(TrustStore::default()
        .add_master_list(&sod_cms, now())
        .is_err());
}

#[test]
fn csca_directory_reads_certificates_and_crls_and_skips_junk() {
    let p = pki("p256", current());
    let dir = std::env::temp_dir().join(format!("facegate-csca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("utopia.der"), p.csca.to_der().unwrap()).unwrap();
    std::fs::write(dir.join("broken.cer"), b"not a certificate").unwrap();
    std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
    std::fs::write(dir.join("utopia.crl"), crl(&p, &[])).unwrap();
    let trust = TrustStore::from_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(trust.cscas.len(), 1);
    assert_eq!(trust.crls.len(), 1);
    assert_eq!(trust.skipped.len(), 1, "{:?}", trust.skipped);
    let r = run(&p, &trust, Tamper::None, false);
    assert_eq!(r.chain.status, Status::Passed);
    assert_eq!(r.revocation.status, Status::Passed);
}
