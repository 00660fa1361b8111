//! The hasher of the stores' in-process maps.

/// The hasher of the stores' maps keyed by [`RecordId`](crate::RecordId): a record id hashes
/// to 8 bytes of SHA-256 already, so SipHash over them again only costs (a
/// tenth of a trivial handler's time). They are multiplied by a random odd
/// per-map seed in 128 bits and the halves folded, so that a client who
/// grinds keys for digests that share bits cannot tell where they land.
#[derive(Clone, Debug)]
pub(crate) struct DigestHashState {
    seed: u64,
}

impl DigestHashState {
    pub(crate) fn new() -> Self {
        // RandomState is seeded from the OS; take 8 bytes of its output.
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u64);
        Self { seed: seed | 1 }
    }
}

impl std::hash::BuildHasher for DigestHashState {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher {
            seed: self.seed,
            state: 0,
        }
    }
}

/// See [`DigestHashState`].
pub(crate) struct DigestHasher {
    seed: u64,
    state: u64,
}

impl std::hash::Hasher for DigestHasher {
    fn write_u64(&mut self, n: u64) {
        let product = u128::from(n ^ self.state) * u128::from(self.seed);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn finish(&self) -> u64 {
        self.state
    }
}
