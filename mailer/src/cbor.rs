//! The one place that knows which CBOR library we use.
//!
//! Everything else calls [`to_vec`] and [`from_slice`], so the library could be
//! swapped without touching the protocol. Decoding is bounded: the input size
//! is checked before any work, trailing bytes are refused, and nesting is
//! limited by the decoder's recursion limit.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A CBOR encoding or decoding failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CborError {
    #[error("CBOR item of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed CBOR: {0}")]
    Decode(String),
    #[error("could not encode CBOR: {0}")]
    Encode(String),
}

/// Encodes `value` as CBOR. Structs become maps with text keys, so that an
/// encoded body can be read with any CBOR tool.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, CborError> {
    serde_cbor::to_vec(value).map_err(|e| CborError::Encode(e.to_string()))
}

/// Decodes exactly one CBOR item of at most `max` bytes from `bytes`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, CborError> {
    if bytes.len() > max {
        return Err(CborError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    // `from_slice` refuses trailing bytes and keeps serde_cbor's recursion
    // limit (128), so deeply nested input fails cleanly instead of
    // exhausting the stack.
    serde_cbor::from_slice(bytes).map_err(|e| CborError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_oversized_trailing_and_nested_input() {
        let v: Vec<u8> = to_vec(&(1u8, "x")).unwrap();
        let back: (u8, String) = from_slice(&v, 100).unwrap();
        assert_eq!(back, (1, "x".to_string()));
        assert!(matches!(
            from_slice::<(u8, String)>(&v, 2),
            Err(CborError::TooLarge { .. })
        ));
        let mut trailing = v.clone();
        trailing.push(0);
        assert!(from_slice::<(u8, String)>(&trailing, 100).is_err());
        // 10,000 nested one-element arrays.
        let mut nested = vec![0x81u8; 10_000];
        nested.push(0x00);
        assert!(from_slice::<serde_cbor::Value>(&nested, 100_000).is_err());
        assert!(from_slice::<u8>(&[], 10).is_err());
    }
}
