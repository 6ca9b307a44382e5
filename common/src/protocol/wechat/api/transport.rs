//! The one outbound HTTP/TLS stack of the process: reqwest over rustls (ring), with the Mozilla
//! root set compiled in (webpki-roots), so that no certificate directory or bundle is read at
//! start or ever. The WeChat client, the IM client and the AWS SDK (see `store::dynamo`) all use
//! clients built from the same [`tls_config`]; nothing is built before its first use.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

static TLS_CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();

/// Whether [`tls_config`] has been called in this process.
pub fn tls_config_built() -> bool {
    TLS_CONFIG.get().is_some()
}

/// The rustls configuration every outbound client uses: built once, on the first outbound call
/// of the process, from the compiled-in roots (a static table: no parsing, no file system).
pub fn tls_config() -> rustls::ClientConfig {
    TLS_CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            // rustls 0.23.48 deprecates ring's provider because ring has no ML-KEM, so the
            // key exchange stays classical (X25519, as before). rustls's post-quantum provider
            // is aws-lc-rs, a C library every function would link: wechat-event's arm64 binary
            // 5.33 → 6.74 MB with it, over the 6 MB goal (README, Deployed artifacts).
            #[allow(deprecated)]
            let provider = rustls::crypto::ring::default_provider();
            rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_safe_default_protocol_versions()
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth()
        })
        // A clone shares the verifier, the roots and the provider (all behind `Arc`s).
        .clone()
}

/// A reqwest client on the shared TLS configuration.
pub fn client(builder: reqwest::ClientBuilder) -> reqwest::Client {
    builder
        .tls_backend_preconfigured(tls_config())
        .pool_idle_timeout(Duration::from_secs(50))
        .build()
        // Only an unusable TLS backend fails a build, and this one is fixed at compile time.
        .expect("reqwest client on the shared rustls configuration")
}

/// The HTTP client of the WeChat and IM API clients, created on first use and then kept for the
/// life of the process; clones share it. It dereferences to the `reqwest::Client`.
#[derive(Clone)]
pub struct Http(Arc<Lazy>);

struct Lazy {
    timeout_ms: u64,
    client: OnceLock<reqwest::Client>,
}

impl Http {
    /// Whole-request timeout `timeout_ms`, connect timeout at most 3 s: well inside the Lambda's
    /// and above IM's 3 s server-side limit. Nothing is built until the first request.
    pub fn new(timeout_ms: u64) -> Http {
        Http(Arc::new(Lazy {
            timeout_ms,
            client: OnceLock::new(),
        }))
    }

    /// Whether the client has been built (it is built by the first request).
    pub fn is_built(&self) -> bool {
        self.0.client.get().is_some()
    }
}

impl Deref for Http {
    type Target = reqwest::Client;

    fn deref(&self) -> &reqwest::Client {
        let lazy = &*self.0;
        lazy.client.get_or_init(|| {
            client(
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_millis(lazy.timeout_ms.min(3000)))
                    .timeout(Duration::from_millis(lazy.timeout_ms)),
            )
        })
    }
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("timeout_ms", &self.0.timeout_ms)
            .field("built", &self.is_built())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_before_the_first_request() {
        let http = Http::new(500);
        let copy = http.clone();
        assert!(!http.is_built());
        let _ = http.get("http://127.0.0.1:9/");
        assert!(
            http.is_built() && copy.is_built(),
            "clones share one client"
        );
    }

    #[test]
    fn the_roots_are_the_compiled_in_set() {
        let c = tls_config();
        assert!(c.alpn_protocols.is_empty());
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
    }
}
