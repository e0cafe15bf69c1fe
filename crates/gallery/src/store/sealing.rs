//! Sealing and opening blobs: associated data binding each blob to its gallery, subject and
//! role, and the byte layout of templates.

use super::*;

pub(super) fn aad(kind: &str, gallery: &str, pseudonym: &[u8]) -> Vec<u8> {
    let mut a = format!("facegate/{kind}/v1\0{gallery}\0").into_bytes();
    a.extend_from_slice(pseudonym);
    a
}

/// Reusable buffers for opening many sealed templates of one gallery straight into f32 slices
/// (one per worker thread while a gallery loads): the associated data is rebuilt in place and
/// the plaintext zeroised after each template, so nothing is allocated per row.
pub(super) struct TemplateOpener {
    pub(super) aad: Vec<u8>,
    pub(super) prefix: usize,
    pub(super) plain: Zeroizing<Vec<u8>>,
}

impl TemplateOpener {
    pub(super) fn new(gallery: &str, dim: usize) -> Self {
        let aad = aad("template", gallery, b"");
        TemplateOpener {
            prefix: aad.len(),
            aad,
            plain: Zeroizing::new(Vec::with_capacity(4 * dim + 16)),
        }
    }

    /// Opens subject `ps`'s sealed template into `out` (the gallery's dimension long).
    pub(super) fn open(
        &mut self,
        dk: &SecretKey,
        ps: &[u8; 32],
        sealed: &[u8],
        out: &mut [f32],
    ) -> Result<()> {
        self.aad.truncate(self.prefix);
        self.aad.extend_from_slice(ps);
        crypto::open_into(dk, &self.aad, sealed, &mut self.plain)?;
        if self.plain.len() != 4 * out.len() {
            return Err(GalleryError::Decrypt(
                "template length differs from the gallery's".into(),
            ));
        }
        for (o, c) in out.iter_mut().zip(self.plain.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        zeroize::Zeroize::zeroize(&mut *self.plain);
        Ok(())
    }
}

/// One decrypted template with what is needed to seal it again.
pub(super) struct OpenTemplate {
    pub(super) id: i64,
    pub(super) pseudonym: [u8; 32],
    pub(super) expires: i64,
    pub(super) template: Zeroizing<Vec<f32>>,
    pub(super) key: SecretKey,
}

pub(super) fn bytes_to_f32(b: &[u8]) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return Err(GalleryError::Decrypt("template has a torn length".into()));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

pub(super) fn f32_to_bytes(v: &[f32]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

pub(super) fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if n == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| (*x as f64 / n) as f32).collect()
}
