//! HMAC-SHA256 for signing webhook bodies in tests (the `sha2` and `hmac` crates
//! the HTTP trigger itself uses).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}
