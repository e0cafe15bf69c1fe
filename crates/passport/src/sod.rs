//! EF.SOD, the document security object (Doc 9303 part 10 §4.6.2): tag `0x77` around a CMS
//! SignedData whose content is the LDS security object (the hash algorithm and one hash per data
//! group), signed by the document signer, usually with its certificate inside.
//!
//! The CMS part ([`SignedContent`]) is shared with ICAO master lists, which are CMS SignedData too.

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use const_oid::ObjectIdentifier;
use der::{asn1::OctetString, Decode, Encode, Sequence};
use serde::Serialize;
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use crate::crypto::{self, HashAlgorithm, SignatureError};
use crate::{tlv, PassportError};

/// Largest EF.SOD accepted (they are 1–4 KB; a few issuers embed a chain).
pub const MAX_SOD_BYTES: usize = 256 << 10;

const ID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const ID_LDS_SECURITY_OBJECT: &str = "2.23.136.1.1.1";
const ID_CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const ID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";

/// LDSSecurityObject ::= SEQUENCE { version, hashAlgorithm, dataGroupHashValues, ldsVersionInfo OPTIONAL }
#[derive(Sequence)]
struct LdsSecurityObject {
    version: u8,
    hash_algorithm: AlgorithmIdentifierOwned,
    data_group_hash_values: Vec<DataGroupHash>,
    lds_version_info: Option<der::Any>,
}

#[derive(Sequence)]
struct DataGroupHash {
    data_group_number: u8,
    hash_value: OctetString,
}

/// A CMS SignedData with one signer, and its encapsulated content's bytes.
pub struct SignedContent {
    pub signed_data: SignedData,
    pub content_type: ObjectIdentifier,
    /// The eContent octets: what the messageDigest attribute is a hash of.
    pub content: Vec<u8>,
}

/// A parsed EF.SOD.
pub struct Sod {
    pub cms: SignedContent,
    pub hash_algorithm: HashAlgorithm,
    /// (data-group number, hash) as signed, in the SOD's order.
    pub hashes: Vec<(u8, Vec<u8>)>,
}

/// The document signer as its certificate names it (public data, fine to log).
#[derive(Debug, Clone, Serialize)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
}

impl CertSummary {
    pub fn of(cert: &Certificate) -> Self {
        let tbs = cert.tbs_certificate();
        CertSummary {
            subject: tbs.subject().to_string(),
            issuer: tbs.issuer().to_string(),
            serial: hex::encode(tbs.serial_number().as_bytes()),
            not_before: tbs.validity().not_before.to_string(),
            not_after: tbs.validity().not_after.to_string(),
        }
    }
}

/// Parses EF.SOD (with its `0x77` tag).
pub fn parse_sod(bytes: &[u8]) -> Result<Sod, PassportError> {
    if bytes.len() > MAX_SOD_BYTES {
        return Err(PassportError::TooLarge {
            what: "EF.SOD",
            limit: MAX_SOD_BYTES,
        });
    }
    let outer = tlv::single(bytes, 0x77, "EF.SOD")?;
    let cms = SignedContent::parse(outer.value, "EF.SOD")?;
    if cms.content_type.to_string() != ID_LDS_SECURITY_OBJECT {
        return Err(PassportError::malformed(
            "EF.SOD",
            format!(
                "content type {} is not the LDS security object",
                cms.content_type
            ),
        ));
    }
    let lds = LdsSecurityObject::from_der(&cms.content)
        .map_err(|e| PassportError::malformed("EF.SOD", format!("LDS security object: {e}")))?;
    let _ = (lds.version, &lds.lds_version_info);
    let hash_algorithm = HashAlgorithm::from_oid(&lds.hash_algorithm.oid).ok_or_else(|| {
        PassportError::Unsupported(format!(
            "data-group hash algorithm {}",
            lds.hash_algorithm.oid
        ))
    })?;
    let mut hashes: Vec<(u8, Vec<u8>)> = Vec::new();
    for h in lds.data_group_hash_values {
        let n = h.data_group_number;
        if !(1..=16).contains(&n) || hashes.iter().any(|(m, _)| *m == n) {
            return Err(PassportError::malformed(
                "EF.SOD",
                format!("data-group number {n} out of range or repeated"),
            ));
        }
        hashes.push((n, h.hash_value.as_bytes().to_vec()));
    }
    Ok(Sod {
        cms,
        hash_algorithm,
        hashes,
    })
}

impl SignedContent {
    /// Parses a ContentInfo holding SignedData (BER indefinite lengths accepted).
    pub fn parse(bytes: &[u8], what: &'static str) -> Result<Self, PassportError> {
        let der = tlv::definite_lengths(bytes, what)?;
        let ci = ContentInfo::from_der(&der)
            .map_err(|e| PassportError::malformed(what, format!("CMS ContentInfo: {e}")))?;
        if ci.content_type.to_string() != ID_SIGNED_DATA {
            return Err(PassportError::malformed(
                what,
                "CMS content is not SignedData",
            ));
        }
        let signed_data: SignedData = ci
            .content
            .decode_as()
            .map_err(|e| PassportError::malformed(what, format!("CMS SignedData: {e}")))?;
        if signed_data.signer_infos.0.len() != 1 {
            return Err(PassportError::malformed(
                what,
                format!(
                    "{} signer infos (one expected)",
                    signed_data.signer_infos.0.len()
                ),
            ));
        }
        let eci = &signed_data.encap_content_info;
        let content = eci
            .econtent
            .as_ref()
            .ok_or_else(|| PassportError::malformed(what, "no encapsulated content"))?
            .decode_as::<OctetString>()
            .map_err(|e| PassportError::malformed(what, format!("encapsulated content: {e}")))?
            .as_bytes()
            .to_vec();
        Ok(SignedContent {
            content_type: eci.econtent_type,
            signed_data,
            content,
        })
    }

    pub fn signer_info(&self) -> Option<&SignerInfo> {
        self.signed_data.signer_infos.0.get(0)
    }

    /// The certificates carried in the SignedData.
    pub fn certificates(&self) -> impl Iterator<Item = &Certificate> {
        self.signed_data
            .certificates
            .iter()
            .flat_map(|set| set.0.iter())
            .filter_map(|c| match c {
                CertificateChoices::Certificate(cert) => Some(cert),
                _ => None,
            })
    }

    /// The carried certificate the signer info names (issuer and serial, or key identifier).
    pub fn signer_certificate(&self) -> Option<&Certificate> {
        let si = self.signer_info()?;
        self.certificates().find(|c| names(si, c))
    }

    /// The signed-attributes check: contentType equals the content's type and messageDigest
    /// equals the hash of the content. `Ok(None)` when there are no signed attributes (the
    /// signature then covers the content directly).
    pub fn check_signed_attributes(&self) -> Result<Option<()>, String> {
        let si = self.signer_info().ok_or("no signer info")?;
        let Some(attrs) = &si.signed_attrs else {
            return Ok(None);
        };
        let digest_alg = HashAlgorithm::from_oid(&si.digest_alg.oid)
            .ok_or_else(|| format!("digest algorithm {}", si.digest_alg.oid))?;
        let single = |oid: &str| -> Result<&der::Any, String> {
            let mut found = attrs.iter().filter(|a| a.oid.to_string() == oid);
            let attr = found.next().ok_or_else(|| format!("no {oid} attribute"))?;
            if found.next().is_some() || attr.values.len() != 1 {
                return Err(format!("{oid} attribute is not single-valued"));
            }
            attr.values
                .iter()
                .next()
                .ok_or_else(|| format!("{oid} has no value"))
        };
        let content_type = single(ID_CONTENT_TYPE)?
            .decode_as::<ObjectIdentifier>()
            .map_err(|e| format!("contentType attribute: {e}"))?;
        if content_type != self.content_type {
            return Err("the contentType attribute differs from the content's type".into());
        }
        let digest = single(ID_MESSAGE_DIGEST)?
            .decode_as::<OctetString>()
            .map_err(|e| format!("messageDigest attribute: {e}"))?;
        if digest.as_bytes() != digest_alg.digest(&self.content).as_slice() {
            return Err("the messageDigest attribute is not the content's hash".into());
        }
        Ok(Some(()))
    }

    /// Verifies the signer info's signature with `signer`'s key (over the DER of the signed
    /// attributes when present, else over the content).
    pub fn verify_signature(&self, signer: &Certificate) -> Result<String, SignatureError> {
        let si = self
            .signer_info()
            .ok_or_else(|| SignatureError::Invalid("no signer info".into()))?;
        let digest = HashAlgorithm::from_oid(&si.digest_alg.oid);
        let scheme = crypto::scheme(&si.signature_algorithm, digest)?;
        let message = match &si.signed_attrs {
            // RFC 5652 §5.4: the signature covers the attributes' DER with the SET OF tag.
            Some(attrs) => attrs
                .to_der()
                .map_err(|e| SignatureError::Invalid(format!("signed attributes: {e}")))?,
            None => self.content.clone(),
        };
        crypto::verify(
            signer.tbs_certificate().subject_public_key_info(),
            scheme,
            &message,
            si.signature.as_bytes(),
        )
    }
}

/// Whether `cert` is the one a signer info identifies.
fn names(si: &SignerInfo, cert: &Certificate) -> bool {
    let tbs = cert.tbs_certificate();
    match &si.sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => {
            isn.issuer == *tbs.issuer() && isn.serial_number == *tbs.serial_number()
        }
        SignerIdentifier::SubjectKeyIdentifier(skid) => {
            crate::trust::subject_key_id(cert).is_some_and(|k| k == skid.0.as_bytes())
        }
    }
}
