//! PEM keys: which algorithm a key is for (ES256 for EC P-256, RS256 for RSA), and errors that
//! say what is wrong with one without showing it.
//!
//! The JWT library is told the key's family up front and trusts it, so the family is read here
//! from the key's algorithm identifier: an EC key on another curve, or an Ed25519 key, would
//! otherwise be accepted and fail every signature later.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use super::{SigError, Signer, Verifier};

/// DER of the id-ecPublicKey object identifier, 1.2.840.10045.2.1.
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER of the prime256v1 (P-256) object identifier, 1.2.840.10045.3.1.7.
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the rsaEncryption object identifier, 1.2.840.113549.1.1.1.
const RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

/// What a PKCS#8 or SubjectPublicKeyInfo key is.
#[derive(Debug, PartialEq, Eq)]
enum Family {
    P256,
    OtherEc,
    Rsa,
    Other,
}

/// Reads the algorithm identifier, which both structures put within their first few dozen
/// bytes, ahead of the key material: looking only there, key bytes cannot be mistaken for it.
fn family(der: &[u8]) -> Family {
    let head = &der[..der.len().min(40)];
    if contains(head, EC_PUBLIC_KEY) {
        if contains(head, P256) {
            Family::P256
        } else {
            Family::OtherEc
        }
    } else if contains(head, RSA_ENCRYPTION) {
        Family::Rsa
    } else {
        Family::Other
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The first block whose label names a key (`openssl ecparam -genkey` writes its parameters
/// first), re-encoded alone for the JWT library, which reads only a text's first block.
fn key_block(text: &[u8]) -> Result<(String, Vec<u8>, String), SigError> {
    let blocks = ::pem::parse_many(text).map_err(|e| SigError::InvalidPem(pem_problem(&e)))?;
    let Some(first) = blocks.first() else {
        return Err(SigError::InvalidPem("no PEM block found".to_string()));
    };
    let block = blocks
        .iter()
        .find(|b| b.tag().ends_with("KEY"))
        .unwrap_or(first);
    // Every key structure is a DER SEQUENCE.
    if block.contents().first() != Some(&0x30) {
        return Err(SigError::InvalidPem(
            "its body is not a DER-encoded key".to_string(),
        ));
    }
    Ok((
        block.tag().to_string(),
        block.contents().to_vec(),
        ::pem::encode(block),
    ))
}

/// What is wrong with PEM text, without the base64 error's offending character (a character of
/// a key).
fn pem_problem(e: &::pem::PemError) -> String {
    match e {
        ::pem::PemError::InvalidData(_) => "its body is not valid base64".to_string(),
        e => e.to_string(),
    }
}

/// A private key that signs: PKCS#8 EC P-256 or RSA, or PKCS#1 RSA.
pub(super) fn signer(text: &[u8]) -> Result<Signer, SigError> {
    let (tag, der, one) = key_block(text)?;
    let (algorithm, key) = match tag.as_str() {
        "PRIVATE KEY" => match family(&der) {
            Family::P256 => (Algorithm::ES256, EncodingKey::from_ec_pem(one.as_bytes())),
            Family::Rsa => (Algorithm::RS256, EncodingKey::from_rsa_pem(one.as_bytes())),
            Family::OtherEc => return Err(SigError::NotP256),
            Family::Other => return Err(SigError::UnsupportedKeyType),
        },
        "RSA PRIVATE KEY" => (Algorithm::RS256, EncodingKey::from_rsa_pem(one.as_bytes())),
        "EC PRIVATE KEY" => return Err(SigError::Sec1Key),
        t if t.ends_with("PUBLIC KEY") => return Err(SigError::PublicKeyCannotSign(tag)),
        _ => return Err(SigError::NotAKey(tag)),
    };
    let signer = Signer {
        algorithm,
        key: key.map_err(|e| SigError::InvalidPem(format!("the key inside is malformed ({e})")))?,
    };
    // The JWT library hands the key to ring only when it signs: sign once now, so a key that
    // cannot (a malformed one) is refused when it is read, not on every request.
    signer
        .sign("check", 0, 0)
        .map_err(|e| SigError::UnusableKey(e.to_string()))?;
    Ok(signer)
}

/// A public key that verifies: SubjectPublicKeyInfo EC P-256 or RSA, or PKCS#1 RSA.
pub(super) fn verifier(text: &[u8]) -> Result<Verifier, SigError> {
    let (tag, der, one) = key_block(text)?;
    let (algorithm, key) = match tag.as_str() {
        "PUBLIC KEY" => match family(&der) {
            Family::P256 => (Algorithm::ES256, DecodingKey::from_ec_pem(one.as_bytes())),
            Family::Rsa => (Algorithm::RS256, DecodingKey::from_rsa_pem(one.as_bytes())),
            Family::OtherEc => return Err(SigError::NotP256),
            Family::Other => return Err(SigError::UnsupportedKeyType),
        },
        "RSA PUBLIC KEY" => (Algorithm::RS256, DecodingKey::from_rsa_pem(one.as_bytes())),
        t if t.ends_with("PRIVATE KEY") => return Err(SigError::PrivateKeyCannotVerify(tag)),
        _ => return Err(SigError::NotAKey(tag)),
    };
    Ok(Verifier {
        algorithm,
        key: key.map_err(|e| SigError::InvalidPem(format!("the key inside is malformed ({e})")))?,
    })
}
