//! A browser's Web Push subscription for tests: its ECDH key pair and auth secret, the
//! recipient as ably-js registers it, and the receiving side's decryption (RFC 8291 and
//! RFC 8188 written out here, independently of the server's encrypt path).

use aes_gcm::aead::{Aead as _, KeyInit as _};
use base64::Engine as _;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde_json::json;
use sha2::Sha256;

/// A browser's subscription: its ECDH key pair and auth secret.
pub struct WebPushSubscription {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Default for WebPushSubscription {
    fn default() -> WebPushSubscription {
        WebPushSubscription::new()
    }
}

impl WebPushSubscription {
    pub fn new() -> WebPushSubscription {
        let mut auth = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut auth);
        WebPushSubscription {
            secret: p256::SecretKey::random(&mut rand::rngs::OsRng),
            auth,
        }
    }

    pub fn public_bytes(&self) -> Vec<u8> {
        self.secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// The recipient as ably-js registers it: the endpoint base64'd (`btoa`), keys base64url.
    pub fn recipient(&self, endpoint: &str) -> serde_json::Value {
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        json!({
            "transportType": "web",
            "targetUrl": base64::engine::general_purpose::STANDARD.encode(endpoint),
            "encryptionKey": {"p256dh": url.encode(self.public_bytes()), "auth": url.encode(self.auth)}
        })
    }

    /// RFC 8291 §3.4 and RFC 8188 §2: one record, padding delimiter 2.
    pub fn decrypt(&self, body: &[u8]) -> Vec<u8> {
        let salt = &body[..16];
        let record_size = u32::from_be_bytes(body[16..20].try_into().unwrap());
        let id_len = body[20] as usize;
        assert_eq!(id_len, 65, "keyid is the sender's uncompressed public key");
        let sender_public =
            p256::PublicKey::from_sec1_bytes(&body[21..21 + id_len]).expect("keyid");
        let ciphertext = &body[21 + id_len..];
        assert!(ciphertext.len() <= record_size as usize, "one record");

        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), sender_public.as_affine());
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend(self.public_bytes());
        key_info.extend(sender_public.to_encoded_point(false).as_bytes());
        let mut ikm = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes())
            .expand(&key_info, &mut ikm)
            .unwrap();
        let prk = hkdf::Hkdf::<Sha256>::new(Some(salt), &ikm);
        let mut cek = [0u8; 16];
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
            .unwrap();
        let mut nonce = [0u8; 12];
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
            .unwrap();
        let cipher = aes_gcm::Aes128Gcm::new_from_slice(&cek).unwrap();
        let mut plain = cipher
            .decrypt(aes_gcm::Nonce::from_slice(&nonce), ciphertext)
            .expect("decrypts with the subscription's keys");
        while plain.last() == Some(&0) {
            plain.pop();
        }
        assert_eq!(plain.pop(), Some(2), "the last record's delimiter");
        plain
    }
}
