//! Elliptic curves a document signer may use, and the mapping from explicit curve parameters to
//! them.
//!
//! ICAO allows certificates to spell a curve out (prime, coefficients, generator, order) instead of
//! naming it, and early German passports do. Such parameters are compared, field by field, with the
//! curves below and verified as the curve they equal; parameters equal to none of them are refused
//! (verifying with arbitrary parameters would trust an attacker's curve).

pub mod bp224;

use const_oid::ObjectIdentifier;
use der::{asn1::OctetString, Decode, Sequence};

/// The curves signatures are verified on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
    BrainpoolP224r1,
    BrainpoolP256r1,
    BrainpoolP384r1,
}

impl Curve {
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
            Curve::BrainpoolP224r1 => "brainpoolP224r1",
            Curve::BrainpoolP256r1 => "brainpoolP256r1",
            Curve::BrainpoolP384r1 => "brainpoolP384r1",
        }
    }

    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        Some(match oid.to_string().as_str() {
            "1.2.840.10045.3.1.7" => Curve::P256,
            "1.3.132.0.34" => Curve::P384,
            "1.3.132.0.35" => Curve::P521,
            "1.3.36.3.3.2.8.1.1.5" => Curve::BrainpoolP224r1,
            "1.3.36.3.3.2.8.1.1.7" => Curve::BrainpoolP256r1,
            "1.3.36.3.3.2.8.1.1.11" => Curve::BrainpoolP384r1,
            _ => return None,
        })
    }

    /// (p, a, b, uncompressed generator without the 04 prefix, n), big-endian hex, from SEC 2 and
    /// RFC 5639.
    fn constants(self) -> [&'static str; 5] {
        match self {
            Curve::P256 => [
                "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
                "ffffffff00000001000000000000000000000000fffffffffffffffffffffffc",
                "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
                "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
                "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
            ],
            Curve::P384 => [
                "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff",
                "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000fffffffc",
                "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
                "aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab73617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5f",
                "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
            ],
            Curve::P521 => [
                "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                "01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffc",
                "0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00",
                "00c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d3dbaa14b5e77efe75928fe1dc127a2ffa8de3348b3c1856a429bf97e7e31c2e5bd66011839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e662c97ee72995ef42640c550b9013fad0761353c7086a272c24088be94769fd16650",
                "01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409",
            ],
            Curve::BrainpoolP224r1 => [
                bp224::MODULUS_HEX,
                bp224::A_HEX,
                bp224::B_HEX,
                concat!(
                    "0d9029ad2c7e5cf4340823b2a87dc68c9e4ce3174c1e6efdee12c07d",
                    "58aa56f772c0726f24c6b89e4ecdac24354b9e99caa3f6d3761402cd"
                ),
                bp224::ORDER_HEX,
            ],
            Curve::BrainpoolP256r1 => [
                "a9fb57dba1eea9bc3e660a909d838d726e3bf623d52620282013481d1f6e5377",
                "7d5a0975fc2c3057eef67530417affe7fb8055c126dc5c6ce94a4b44f330b5d9",
                "26dc5c6ce94a4b44f330b5d9bbd77cbf958416295cf7e1ce6bccdc18ff8c07b6",
                "8bd2aeb9cb7e57cb2c4b482ffc81b7afb9de27e1e3bd23c23a4453bd9ace3262547ef835c3dac4fd97f8461a14611dc9c27745132ded8e545c1d54c72f046997",
                "a9fb57dba1eea9bc3e660a909d838d718c397aa3b561a6f7901e0e82974856a7",
            ],
            Curve::BrainpoolP384r1 => [
                "8cb91e82a3386d280f5d6f7e50e641df152f7109ed5456b412b1da197fb71123acd3a729901d1a71874700133107ec53",
                "7bc382c63d8c150c3c72080ace05afa0c2bea28e4fb22787139165efba91f90f8aa5814a503ad4eb04a8c7dd22ce2826",
                "04a8c7dd22ce28268b39b55416f0447c2fb77de107dcd2a62e880ea53eeb62d57cb4390295dbc9943ab78696fa504c11",
                "1d1c64f068cf45ffa2a63a81b7c13f6b8847a3e77ef14fe3db7fcafe0cbd10e8e826e03436d646aaef87b2e247d4af1e8abe1d7520f9c2a45cb1eb8e95cfd55262b70b29feec5864e19c054ff99129280e4646217791811142820341263c5315",
                "8cb91e82a3386d280f5d6f7e50e641df152f7109ed5456b31f166e6cac0425a7cf3ab6af6b7fc3103b883202e9046565",
            ],
        }
    }

    const ALL: [Curve; 6] = [
        Curve::P256,
        Curve::P384,
        Curve::P521,
        Curve::BrainpoolP224r1,
        Curve::BrainpoolP256r1,
        Curve::BrainpoolP384r1,
    ];
}

/// SEC 1's SpecifiedECDomain (version 1, prime field), as far as the mapping needs it.
#[derive(Sequence)]
struct SpecifiedEcDomain {
    version: u8,
    field_id: FieldId,
    curve: CurveCoefficients,
    base: OctetString,
    order: der::asn1::Int,
    cofactor: Option<der::asn1::Int>,
}

#[derive(Sequence)]
struct FieldId {
    field_type: ObjectIdentifier,
    prime: der::asn1::Int,
}

#[derive(Sequence)]
struct CurveCoefficients {
    a: OctetString,
    b: OctetString,
    seed: Option<der::asn1::BitString>,
}

/// The named curve explicit parameters (the DER of a SpecifiedECDomain) equal, if any.
pub fn from_explicit(params_der: &[u8]) -> Result<Curve, String> {
    let d = SpecifiedEcDomain::from_der(params_der)
        .map_err(|e| format!("explicit curve parameters do not parse: {e}"))?;
    if d.version != 1 || d.field_id.field_type.to_string() != "1.2.840.10045.1.1" {
        return Err("explicit curve parameters: not a version 1 prime-field curve".into());
    }
    let cofactor_one = d
        .cofactor
        .as_ref()
        .is_none_or(|c| unsigned(c.as_bytes()) == [1]);
    let (p, a, b, n) = (
        unsigned(d.field_id.prime.as_bytes()),
        unsigned(d.curve.a.as_bytes()),
        unsigned(d.curve.b.as_bytes()),
        unsigned(d.order.as_bytes()),
    );
    let g = d.base.as_bytes();
    for curve in Curve::ALL {
        let [cp, ca, cb, cg, cn] = curve
            .constants()
            .map(|h| hex::decode(h).unwrap_or_default());
        let g_ok = g.first() == Some(&0x04) && g[1..] == cg[..];
        if cofactor_one
            && p == unsigned(&cp)
            && a == unsigned(&ca)
            && b == unsigned(&cb)
            && n == unsigned(&cn)
            && g_ok
        {
            return Ok(curve);
        }
    }
    Err("explicit curve parameters equal no supported named curve (P-256/384/521, brainpoolP224r1/256r1/384r1)".into())
}

/// Big-endian magnitude without leading zero bytes.
fn unsigned(b: &[u8]) -> &[u8] {
    let skip = b.iter().take_while(|&&x| x == 0).count();
    &b[skip..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_curve_has_well_formed_constants() {
        for c in Curve::ALL {
            let [p, a, b, g, n] = c.constants().map(|h| hex::decode(h).unwrap());
            let len = unsigned(&p).len();
            assert!(a.len() <= p.len() && b.len() <= p.len(), "{c:?}");
            assert_eq!(g.len(), 2 * p.len(), "{c:?}");
            assert!(unsigned(&n).len() <= len + 1, "{c:?}");
        }
    }

    #[test]
    fn named_oids_map() {
        let oid = ObjectIdentifier::new_unwrap("1.3.36.3.3.2.8.1.1.5");
        assert_eq!(Curve::from_oid(&oid), Some(Curve::BrainpoolP224r1));
        assert_eq!(
            Curve::from_oid(&ObjectIdentifier::new_unwrap("1.2.3")),
            None
        );
    }
}
