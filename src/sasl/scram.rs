//! SCRAM-SHA-256 / SCRAM-SHA-512 client (RFC 5802, RFC 7677) as Kafka speaks it.
//!
//! Kafka differences from the RFC that matter to a client: no channel binding (gs2
//! header `n,,`), the password is not SASLprep-normalised (Kafka's `ScramFormatter`
//! uses the UTF-8 bytes as they are), and the Java client refuses fewer than 4096
//! iterations, which we copy so a rogue server cannot make the proof cheap to attack.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

use super::SaslError;

/// The Java client's minimum (`ScramMechanism.minIterations`).
const MIN_ITERATIONS: u32 = 4096;
/// PBKDF2 runs on the async runtime thread; this bounds how long a server can make it take.
const MAX_ITERATIONS: u32 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    /// `Hi()` of RFC 5802: PBKDF2 with HMAC of this hash.
    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            ScramHash::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

enum State {
    /// client-first sent, waiting for server-first
    First,
    /// client-final sent, waiting for server-final with this expected signature
    Final {
        server_signature: Vec<u8>,
    },
    Done,
}

/// One SCRAM exchange. Not reusable: a fresh nonce is needed per authentication.
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    client_nonce: String,
    client_first_bare: String,
    state: State,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// A client with a random nonce.
    pub fn new(hash: ScramHash, username: &str, password: &str) -> ScramClient {
        Self::with_nonce(hash, username, password, random_nonce())
    }

    /// A client with a given nonce (for test vectors).
    pub fn with_nonce(hash: ScramHash, username: &str, password: &str, nonce: String) -> Self {
        let client_first_bare = format!("n={},r={nonce}", sasl_name(username));
        ScramClient {
            hash,
            password: password.to_owned(),
            client_nonce: nonce,
            client_first_bare,
            state: State::First,
        }
    }

    /// `client-first-message`: gs2 header `n,,` plus `n=<user>,r=<nonce>`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Takes `server-first-message`, returns `client-final-message`.
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslError> {
        if !matches!(self.state, State::First) {
            return Err(proto("server-first-message received out of order"));
        }
        let server_first =
            std::str::from_utf8(msg).map_err(|_| proto("server-first-message is not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for (i, attr) in server_first.split(',').enumerate() {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| proto(format!("malformed server-first-message attribute #{i}")))?;
            match k {
                "e" => return Err(server_error(v)),
                "m" if i == 0 => {
                    return Err(proto(
                        "server-first-message demands an unsupported extension",
                    ))
                }
                "r" => nonce = Some(v),
                "s" => {
                    salt = Some(
                        B64.decode(v)
                            .map_err(|_| proto("server-first-message salt is not base64"))?,
                    )
                }
                "i" => {
                    iterations = Some(v.parse::<u32>().map_err(|_| {
                        proto(format!(
                            "server-first-message iteration count '{v}' is invalid"
                        ))
                    })?)
                }
                _ => {} // optional extensions are ignored (RFC 5802 §5.1)
            }
        }
        let nonce = nonce.ok_or_else(|| proto("server-first-message has no nonce (r=)"))?;
        let salt = salt.ok_or_else(|| proto("server-first-message has no salt (s=)"))?;
        let iterations =
            iterations.ok_or_else(|| proto("server-first-message has no iteration count (i=)"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() <= self.client_nonce.len() {
            return Err(proto("server nonce does not extend the client nonce"));
        }
        if salt.is_empty() {
            return Err(proto("server-first-message has an empty salt"));
        }
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(proto(format!(
                "server asks for {iterations} iterations; accepted are {MIN_ITERATIONS}..={MAX_ITERATIONS}"
            )));
        }

        let h = self.hash;
        let salted = h.hi(self.password.as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        // c=biws is base64("n,,"): no channel binding, no authzid
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        let server_signature = h.hmac(&server_key, auth_message.as_bytes());
        self.state = State::Final { server_signature };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Takes `server-final-message` and checks the server's signature: a server that
    /// does not know the stored credentials cannot produce it.
    pub fn handle_server_final(&mut self, msg: &[u8]) -> Result<(), SaslError> {
        let State::Final { server_signature } = &self.state else {
            return Err(proto("server-final-message received out of order"));
        };
        let text =
            std::str::from_utf8(msg).map_err(|_| proto("server-final-message is not UTF-8"))?;
        let first = text.split(',').next().unwrap_or("");
        if let Some(e) = first.strip_prefix("e=") {
            return Err(server_error(e));
        }
        let v = first
            .strip_prefix("v=")
            .ok_or_else(|| proto("server-final-message has neither v= nor e="))?;
        let got = B64
            .decode(v)
            .map_err(|_| proto("server signature is not base64"))?;
        if !constant_time_eq(&got, server_signature) {
            return Err(SaslError::AuthenticationFailed {
                message: format!(
                    "{}: the server's signature is wrong (it does not hold this user's \
                     credentials)",
                    self.hash.mechanism()
                ),
            });
        }
        self.state = State::Done;
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

/// RFC 5802 `saslname`: `,` and `=` escaped as `=2C` and `=3D`.
pub fn sasl_name(username: &str) -> String {
    username.replace('=', "=3D").replace(',', "=2C")
}

fn random_nonce() -> String {
    let bytes: [u8; 24] = rand::random();
    // base64 is printable and has no ',' (RFC 5802 nonce syntax)
    B64.encode(bytes)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn proto(msg: impl Into<String>) -> SaslError {
    SaslError::Protocol(msg.into())
}

fn server_error(e: &str) -> SaslError {
    SaslError::AuthenticationFailed {
        message: format!("SCRAM server error: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_sha256_vector() {
        let mut c = ScramClient::with_nonce(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = c.handle_server_first(server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.handle_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(c.is_done());
    }

    #[test]
    fn rfc7677_wrong_server_signature_is_refused() {
        let mut c = ScramClient::with_nonce(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        c.handle_server_first(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        )
        .unwrap();
        let err = c
            .handle_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert!(
            matches!(err, SaslError::AuthenticationFailed { .. }),
            "{err}"
        );
        assert!(!c.is_done());
    }

    #[test]
    fn username_is_escaped() {
        let c = ScramClient::with_nonce(ScramHash::Sha256, "a=b,c", "x", "N".into());
        assert_eq!(c.client_first(), b"n,,n=a=3Db=2Cc,r=N");
        assert_eq!(sasl_name("=,="), "=3D=2C=3D");
    }

    #[test]
    fn random_nonces_differ_and_are_printable() {
        let a = ScramClient::new(ScramHash::Sha512, "u", "p");
        let b = ScramClient::new(ScramHash::Sha512, "u", "p");
        assert_ne!(a.client_nonce, b.client_nonce);
        assert!(a.client_nonce.len() >= 24);
        assert!(a
            .client_nonce
            .bytes()
            .all(|c| (0x21..=0x7e).contains(&c) && c != b','));
    }

    #[test]
    fn server_errors_and_bad_server_first_are_refused() {
        let new = || ScramClient::with_nonce(ScramHash::Sha256, "u", "p", "abc".into());
        let err = new().handle_server_first(b"e=unknown-user").unwrap_err();
        assert!(
            matches!(&err, SaslError::AuthenticationFailed { message } if message.contains("unknown-user")),
            "{err}"
        );
        for (msg, want) in [
            (&b"r=xyz123,s=c2FsdA==,i=4096"[..], "nonce"),
            (b"r=abc,s=c2FsdA==,i=4096", "nonce"),
            (b"r=abcdef,s=c2FsdA==,i=1024", "iterations"),
            (b"r=abcdef,s=c2FsdA==,i=99999999", "iterations"),
            (b"r=abcdef,s=c2FsdA==", "iteration count"),
            (b"r=abcdef,i=4096", "salt"),
            (b"m=ext,r=abcdef,s=c2FsdA==,i=4096", "extension"),
            (b"garbage", "malformed"),
        ] {
            let err = new().handle_server_first(msg).unwrap_err();
            assert!(
                matches!(&err, SaslError::Protocol(m) if m.contains(want)),
                "{}: {err}",
                String::from_utf8_lossy(msg)
            );
        }
        let mut c = new();
        c.handle_server_first(b"r=abcdef,s=c2FsdA==,i=4096")
            .unwrap();
        let err = c.handle_server_final(b"e=invalid-proof").unwrap_err();
        assert!(err.to_string().contains("invalid-proof"), "{err}");
    }

    /// The server side of RFC 5802, written from the RFC independently of the client code.
    struct TinyServer {
        salt: Vec<u8>,
        iterations: u32,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    }

    impl TinyServer {
        fn sha512(password: &str) -> TinyServer {
            let salt = b"tiny-server-salt".to_vec();
            let iterations = 4096;
            let mut salted = [0u8; 64];
            pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, iterations, &mut salted);
            let mac = |key: &[u8], data: &[u8]| {
                let mut m = Hmac::<Sha512>::new_from_slice(key).unwrap();
                m.update(data);
                m.finalize().into_bytes().to_vec()
            };
            let client_key = mac(&salted, b"Client Key");
            TinyServer {
                stored_key: Sha512::digest(&client_key).to_vec(),
                server_key: mac(&salted, b"Server Key"),
                salt,
                iterations,
            }
        }

        /// Runs the whole exchange against a client; returns the server-final message or
        /// an `e=` error.
        fn exchange(&self, c: &mut ScramClient) -> Result<(), SaslError> {
            let client_first = String::from_utf8(c.client_first()).unwrap();
            let bare = client_first.strip_prefix("n,,").unwrap();
            let cnonce = bare.split(",r=").nth(1).unwrap();
            let server_first = format!(
                "r={cnonce}SERVERNONCE,s={},i={}",
                B64.encode(&self.salt),
                self.iterations
            );
            let client_final =
                String::from_utf8(c.handle_server_first(server_first.as_bytes())?).unwrap();
            let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
            assert_eq!(without_proof, format!("c=biws,r={cnonce}SERVERNONCE"));
            let auth_message = format!("{bare},{server_first},{without_proof}");
            let mac = |key: &[u8], data: &[u8]| {
                let mut m = Hmac::<Sha512>::new_from_slice(key).unwrap();
                m.update(data);
                m.finalize().into_bytes().to_vec()
            };
            let client_signature = mac(&self.stored_key, auth_message.as_bytes());
            let proof = B64.decode(proof).unwrap();
            let client_key: Vec<u8> = proof
                .iter()
                .zip(&client_signature)
                .map(|(a, b)| a ^ b)
                .collect();
            if Sha512::digest(&client_key).as_slice() != self.stored_key.as_slice() {
                return c.handle_server_final(b"e=invalid-proof");
            }
            let v = B64.encode(mac(&self.server_key, auth_message.as_bytes()));
            c.handle_server_final(format!("v={v}").as_bytes())
        }
    }

    #[test]
    fn sha512_round_trip_against_a_tiny_server() {
        let server = TinyServer::sha512("s3cret");
        let mut good = ScramClient::new(ScramHash::Sha512, "bob", "s3cret");
        server.exchange(&mut good).unwrap();
        assert!(good.is_done());

        let mut bad = ScramClient::new(ScramHash::Sha512, "bob", "wrong");
        let err = server.exchange(&mut bad).unwrap_err();
        assert!(err.to_string().contains("invalid-proof"), "{err}");
    }
}
