//! brainpoolP224r1 (RFC 5639 §3.3), which no RustCrypto crate provides: Germany signed its first
//! electronic passports on it, with the parameters spelled out in the document signer certificate.
//!
//! Nothing here is arithmetic written by hand: the field and scalar types come from `primefield`'s
//! generic Montgomery backend (crypto-bigint; the same one `bp256` builds with its `bigint`
//! backend), point arithmetic from `primeorder`'s complete formulas for a generic `a`, ECDSA from
//! the `ecdsa` crate. This module only states the curve's public constants, laid out exactly as
//! `p224` lays out a 224-bit curve in 64-bit limbs. Verification only: no secret ever meets it, so
//! the variable-time paths it uses leak nothing.

use elliptic_curve::{
    bigint::{Odd, U256},
    consts::U28,
    CurveArithmetic, PrimeCurveArithmetic,
};
use primeorder::{mul_backend, point_arithmetic, PrimeCurveParams};

pub use field::FieldElement;

pub type FieldBytes = elliptic_curve::FieldBytes<BrainpoolP224r1>;
pub use scalar::Scalar;

pub const MODULUS_HEX: &str = "d7c134aa264366862a18302575d1d787b09f075797da89f57ec8c0ff";
pub const A_HEX: &str = "68a5e62ca9ce6c1c299803a6c1530b514e182ad8b0042a59cad29f43";
pub const B_HEX: &str = "2580f63ccfe44138870713b1a92369e33e2135d266dbb372386c400b";
pub const ORDER_HEX: &str = "d7c134aa264366862a18302575d0fb98d116bc4b6ddebca3a5a7939f";

/// The same constants zero-extended to the 256-bit integers they are held in.
const MODULUS_HEX_256: &str = "00000000d7c134aa264366862a18302575d1d787b09f075797da89f57ec8c0ff";
const ORDER_HEX_256: &str = "00000000d7c134aa264366862a18302575d0fb98d116bc4b6ddebca3a5a7939f";

/// brainpoolP224r1.
#[derive(Copy, Clone, Debug, Default, Eq, PartialEq, PartialOrd, Ord)]
pub struct BrainpoolP224r1;

impl elliptic_curve::Curve for BrainpoolP224r1 {
    type FieldBytesSize = U28;
    type Uint = U256;
    const ORDER: Odd<U256> = Odd::<U256>::from_be_hex(ORDER_HEX_256);
}

impl elliptic_curve::PrimeCurve for BrainpoolP224r1 {}

impl elliptic_curve::point::PointCompression for BrainpoolP224r1 {
    const COMPRESS_POINTS: bool = false;
}

// primefield's macros expand to a call crypto-bigint has since renamed.
#[allow(deprecated)]
mod field {
    use super::MODULUS_HEX_256;
    use elliptic_curve::{
        bigint::U256,
        ff::PrimeField,
        subtle::{Choice, ConstantTimeEq, CtOption},
    };

    // 3 generates the multiplicative group of both fields (checked by factoring p - 1 and n - 1).
    primefield::monty_field_params! {
        name: FieldParams,
        modulus: MODULUS_HEX_256,
        uint: U256,
        byte_order: primefield::ByteOrder::BigEndian,
        multiplicative_generator: 3,
        doc: "Montgomery parameters for brainpoolP224r1's field modulus"
    }

    primefield::monty_field_element! {
        name: FieldElement,
        params: FieldParams,
        uint: U256,
        doc: "Element of brainpoolP224r1's base field"
    }

    primefield::monty_field_arithmetic! {
        name: FieldElement,
        params: FieldParams,
        uint: U256
    }

    impl elliptic_curve::ops::BatchInvert for FieldElement {}
}

#[allow(deprecated)]
mod scalar {
    use super::{BrainpoolP224r1, ORDER_HEX_256};
    use elliptic_curve::{
        bigint::{Reduce, U256},
        ff::PrimeField,
        scalar::{FromUintUnchecked, IsHigh},
        subtle::{Choice, ConstantTimeEq, ConstantTimeGreater, CtOption},
        Curve as _,
    };
    use primeorder::wnaf;

    primefield::monty_field_params! {
        name: ScalarParams,
        modulus: ORDER_HEX_256,
        uint: U256,
        byte_order: primefield::ByteOrder::BigEndian,
        multiplicative_generator: 3,
        doc: "Montgomery parameters for brainpoolP224r1's scalar modulus"
    }

    primefield::monty_field_element! {
        name: Scalar,
        params: ScalarParams,
        uint: U256,
        doc: "Element of brainpoolP224r1's scalar field"
    }

    primefield::monty_field_arithmetic! {
        name: Scalar,
        params: ScalarParams,
        uint: U256
    }

    // primefield's reduce macro assumes field bytes as wide as the integer; a 224-bit curve in
    // 256-bit integers (as `p224` lays it out) zero-extends them first.
    impl Reduce<U256> for Scalar {
        fn reduce(w: &U256) -> Self {
            Self(primefield::MontyFieldElement::<
                ScalarParams,
                { ScalarParams::LIMBS },
            >::reduce(w))
        }
    }

    impl Reduce<super::FieldBytes> for Scalar {
        fn reduce(bytes: &super::FieldBytes) -> Self {
            let mut wide = [0u8; 32];
            wide[4..].copy_from_slice(bytes);
            Self::reduce(&U256::from_be_slice(&wide))
        }
    }

    elliptic_curve::scalar_impls!(BrainpoolP224r1, Scalar);
    wnaf::impl_wnaf_size_for_scalar!(Scalar);

    impl AsRef<Scalar> for Scalar {
        fn as_ref(&self) -> &Scalar {
            self
        }
    }

    impl FromUintUnchecked for Scalar {
        type Uint = U256;
        fn from_uint_unchecked(uint: U256) -> Self {
            Self::from_uint_unchecked(uint)
        }
    }

    impl IsHigh for Scalar {
        fn is_high(&self) -> Choice {
            const HALF: U256 = BrainpoolP224r1::ORDER.as_ref().shr_vartime(1);
            self.to_canonical().ct_gt(&HALF)
        }
    }
}

pub type AffinePoint = primeorder::AffinePoint<BrainpoolP224r1>;
pub type ProjectivePoint = primeorder::ProjectivePoint<BrainpoolP224r1>;

impl CurveArithmetic for BrainpoolP224r1 {
    type AffinePoint = AffinePoint;
    type ProjectivePoint = ProjectivePoint;
    type Scalar = Scalar;
}

impl elliptic_curve::hazmat::FieldArithmetic for BrainpoolP224r1 {
    type FieldElement = FieldElement;
}

impl PrimeCurveArithmetic for BrainpoolP224r1 {
    type CurveGroup = ProjectivePoint;
}

impl PrimeCurveParams for BrainpoolP224r1 {
    type PointArithmetic = point_arithmetic::EquationAIsGeneric;
    type Backend = mul_backend::VariableOnly;

    const EQUATION_A: FieldElement = FieldElement::from_hex_vartime(A_HEX);
    const EQUATION_B: FieldElement = FieldElement::from_hex_vartime(B_HEX);
    const GENERATOR: (FieldElement, FieldElement) = (
        FieldElement::from_hex_vartime("0d9029ad2c7e5cf4340823b2a87dc68c9e4ce3174c1e6efdee12c07d"),
        FieldElement::from_hex_vartime("58aa56f772c0726f24c6b89e4ecdac24354b9e99caa3f6d3761402cd"),
    );
}

impl ecdsa::EcdsaCurve for BrainpoolP224r1 {
    const NORMALIZE_S: bool = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use elliptic_curve::group::Group;
    use elliptic_curve::ops::MulByGeneratorVartime;

    use elliptic_curve::bigint::U256;
    primefield::test_primefield!(FieldElement, U256);

    #[test]
    fn generator_has_the_stated_order() {
        // n·G = O and (n-1)·G = -G: the order and the generator belong together.
        let g = ProjectivePoint::generator();
        let n_minus_1 = -Scalar::ONE;
        assert_eq!((g * n_minus_1 + g).is_identity().unwrap_u8(), 1);
        assert_eq!((g * n_minus_1).to_affine(), (-g).to_affine());
        assert_eq!(ProjectivePoint::mul_by_generator_vartime(&Scalar::ONE), g);
    }
}
