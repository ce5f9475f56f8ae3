//! Which partition a key belongs to: Kafka's default partitioner of the Java client
//! (murmur2 of the key bytes, made positive, modulo the partition count). The runtime's own
//! producer uses the same (librdkafka's `murmur2_random`), so this names the partition that
//! owns a user: where its profile, its requests and its keyed state belong.

/// The partition `key` belongs to among `partitions`.
pub fn partition_for(key: &str, partitions: usize) -> i32 {
    ((murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

/// Kafka's murmur2 (seed 0x9747b28c), as the Java client's default partitioner uses it.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Reference values of Kafka's Utils.murmur2 (its unit test).
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn partitions_match_the_java_client() {
        // Utils.toPositive(Utils.murmur2(key)) % n, as the Java producer computes it.
        assert_eq!(
            partition_for("21", 8),
            ((-973932308i32 as u32 & 0x7fff_ffff) % 8) as i32
        );
        assert_eq!(partition_for("abc", 3), 479470107 % 3);
    }
}
