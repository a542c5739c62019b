//! The checkpoint codec: every value reads back as written, a cut-short encoding is an
//! error (never a panic or a wrong value), and small values take few bytes.

use std::num::Wrapping;

use proptest::prelude::*;
use tidal_core::codec::{Codec, Cursor, DecodeError, put_varint, put_varint128, put_zigzag, put_zigzag128};
use tidal_core::features::{LANES, Lanes};

fn encode<T: Codec>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.put(&mut out);
    out
}

/// Decodes `bytes` as one `T` that must use them all.
fn decode<T: Codec>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut c = Cursor::new(bytes);
    let v = T::get(&mut c)?;
    c.finish()?;
    Ok(v)
}

/// Round trip, and every strict prefix fails.
fn check<T: Codec + PartialEq + std::fmt::Debug>(v: T) -> Result<(), TestCaseError> {
    let bytes = encode(&v);
    prop_assert_eq!(decode::<T>(&bytes)?, v);
    for cut in 0..bytes.len() {
        prop_assert!(decode::<T>(&bytes[..cut]).is_err(), "prefix of {} bytes decoded", cut);
    }
    Ok(())
}

/// Integers spread over every magnitude, not just uniformly large ones.
fn any_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        (0u32..64, any::<bool>()).prop_map(|(b, neg)| {
            let v = (1i64 << b.min(62)) - 1;
            if neg { -v } else { v }
        })
    ]
}

fn any_i128() -> impl Strategy<Value = i128> {
    prop_oneof![
        any::<i128>(),
        any_i64().prop_map(i128::from),
        Just(i128::MIN),
        Just(i128::MAX)
    ]
}

fn any_lanes() -> impl Strategy<Value = Lanes> {
    proptest::collection::vec(prop_oneof![Just(0i64), any_i64()], LANES).prop_map(|v| {
        let mut l = Lanes::default();
        l.0.copy_from_slice(&v);
        l
    })
}

proptest! {
    #[test]
    fn integers_round_trip(a in any::<u16>(), b in any::<u64>(), c in any_i64(), d in any_i128()) {
        check(a)?;
        check(b)?;
        check(c)?;
        check(d)?;
        check(Wrapping(c))?;
        check(((b, a, a), b))?;
    }

    #[test]
    fn lanes_round_trip(l in any_lanes()) {
        check(l)?;
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = decode::<Lanes>(&bytes);
        let _ = decode::<i128>(&bytes);
        let _ = decode::<(u64, u16, i64)>(&bytes);
    }

    #[test]
    fn zigzag_keeps_small_magnitudes_short(v in -63i64..=63) {
        let mut out = Vec::new();
        put_zigzag(&mut out, v);
        prop_assert_eq!(out.len(), 1);
        let mut out = Vec::new();
        put_zigzag128(&mut out, i128::from(v));
        prop_assert_eq!(out.len(), 1);
    }
}

#[test]
fn a_retraction_takes_a_few_bytes_not_seventy_two() {
    // One window's count_W lane at -1.0 (fixed point 2^20): the mask, then one value.
    let mut l = Lanes::default();
    l.0[2] = -(1 << 20);
    assert_eq!(encode(&l).len(), 1 + 3);
    assert_eq!(encode(&Lanes::default()).len(), 1);
}

/// Whether `varint`, read as a `T`, is refused as out of range for field `field`.
fn out_of_range<T: Codec>(varint: u64, field: &str) -> bool {
    let mut out = Vec::new();
    put_varint(&mut out, varint);
    matches!(decode::<T>(&out), Err(DecodeError::OutOfRange { what, .. }) if what == field)
}

#[test]
fn lanes_with_a_mask_past_the_last_lane_are_refused() {
    assert!(out_of_range::<Lanes>(1 << LANES, "lanes"));
}

#[test]
fn a_u16_past_its_range_is_refused() {
    assert!(out_of_range::<u16>(1 << 16, "u16"));
}

#[test]
fn varints_past_their_width_are_refused() {
    // 2^64 as a varint: ten bytes whose last holds more than one bit.
    let mut out = Vec::new();
    put_varint128(&mut out, 1u128 << 64);
    assert!(decode::<u64>(&out).is_err());
    // 2^128 - 1 fits; one more continuation byte does not.
    let mut out = Vec::new();
    put_varint128(&mut out, u128::MAX);
    assert_eq!(out.len(), 19);
    let mut c = Cursor::new(&out);
    assert_eq!(c.varint128("v"), Ok(u128::MAX));
    let mut long = vec![0xffu8; 19];
    long.push(0);
    assert!(Cursor::new(&long).varint128("v").is_err());
}
