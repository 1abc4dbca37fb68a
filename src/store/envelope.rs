//! Every value in the store travels in an envelope: a version byte, a CRC-32
//! of the payload, its length, then the payload (JSON). A torn or flipped
//! record is found, never silently read.

const VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + 4;

pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(VERSION);
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload, or why the envelope is not whole.
pub fn open(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "a record of {} bytes is shorter than its header",
            bytes.len()
        ));
    }
    if bytes[0] != VERSION {
        return Err(format!("a record has envelope version {}", bytes[0]));
    }
    let crc = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let len = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let payload = &bytes[HEADER..];
    if payload.len() != len {
        return Err(format!(
            "a record says {len} bytes but holds {}",
            payload.len()
        ));
    }
    if crc32fast::hash(payload) != crc {
        return Err("a record's checksum does not match".into());
    }
    Ok(payload)
}

/// The CRC-32 a record's envelope carries; for a record `open` accepted,
/// the checksum of its payload.
pub fn checksum(bytes: &[u8]) -> u32 {
    bytes
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_and_a_flipped_bit_is_found() {
        let sealed = seal(b"{\"a\":1}");
        assert_eq!(open(&sealed), Ok(&b"{\"a\":1}"[..]));
        let mut flipped = sealed.clone();
        flipped[HEADER + 2] ^= 1;
        assert_eq!(
            open(&flipped),
            Err("a record's checksum does not match".to_string())
        );
        assert!(open(&sealed[..HEADER + 3]).is_err(), "a torn record");
    }
}
