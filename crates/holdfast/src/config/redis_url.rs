//! `cluster.redis` URLs: checked when the configuration is validated, turned into clients for
//! the cluster bus (with `cluster.redis_ca_file` for `rediss://`), and shown in messages with
//! their password hidden.

/// Checks one `cluster.redis` URL: a scheme and options the cluster bus can use, and that a
/// client can be made for it with `ca` (the PEM of `cluster.redis_ca_file`). Errors show the URL
/// with its password hidden.
pub fn check(url: &str, ca: Option<&[u8]>) -> Result<(), String> {
    let shown = redact(url);
    let parsed = url::Url::parse(url).map_err(|e| format!("{shown:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "redis" | "valkey" | "rediss" | "valkeys" | "unix" | "redis+unix" | "valkey+unix" => {}
        other => {
            return Err(format!(
                "{shown:?}: unknown scheme {other:?} (expected redis://, rediss:// or unix://)"
            ))
        }
    }
    if let Some((_, v)) = parsed.query_pairs().find(|(k, _)| k == "protocol") {
        if !matches!(v.to_ascii_lowercase().as_str(), "2" | "resp2") {
            return Err(format!(
                "{shown:?}: protocol={v} is not supported; Holdfast speaks RESP2 to Redis"
            ));
        }
    }
    client(url, ca).map(|_| ())
}

/// Whether the URL asks for TLS (`rediss://`, `valkeys://`).
pub fn is_tls(url: &str) -> bool {
    url.starts_with("rediss://") || url.starts_with("valkeys://")
}

/// Whether a TLS URL turns certificate checks off (redis-rs's `#insecure` fragment).
pub fn is_insecure(url: &str) -> bool {
    is_tls(url) && url.ends_with("#insecure")
}

/// A client for one URL. A `rediss://` URL trusts `ca` only when it is given, else the system's
/// roots.
pub fn client(url: &str, ca: Option<&[u8]>) -> Result<::redis::Client, String> {
    // redis-rs builds its TLS configuration with rustls' process-wide provider; make it ring,
    // as everywhere else in Holdfast, whatever other crates enabled. A provider installed
    // earlier (by the same call, or elsewhere) stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let made = match ca {
        Some(ca) if is_tls(url) => ::redis::Client::build_with_tls(
            url,
            ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            },
        ),
        _ => ::redis::Client::open(url),
    };
    made.map_err(|e| format!("{:?}: {e}", redact(url)))
}

/// Reads `cluster.redis_ca_file`: PEM text holding at least one certificate. Errors name the
/// file.
pub fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;

    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| format!("{shown} is not a PEM certificate file: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "{shown} holds no certificate (expected -----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(pem)
}

/// The URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_hidden() {
        let cases = [
            ("redis://127.0.0.1:6379", None),
            ("redis://:secret@host:6379/2", None),
            ("unix:///run/redis.sock", None),
            ("rediss://:secret@host", None),
            ("valkeys://host:6380/1", None),
            ("rediss://host#insecure", None),
            ("rediss://:secret@host#verify", Some("fragment")),
            ("http://host", Some("unknown scheme")),
            ("redis://host?protocol=resp3", Some("RESP2")),
            ("not a url", Some("is not a URL")),
        ];
        for (url, want) in cases {
            match (check(url, None), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => {
                    assert!(e.contains(w), "{url}: {e}");
                    assert!(!e.contains("secret"), "{url}: {e}");
                }
                (got, _) => panic!("{url}: {got:?}"),
            }
        }
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert!(is_insecure("rediss://h#insecure"));
        assert!(!is_insecure("redis://h#insecure"));
        assert!(is_tls("valkeys://h") && !is_tls("redis://h"));
    }

    #[test]
    fn ca_files_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let cases = [
            (&missing, "cannot read"),
            (&empty, "holds no certificate"),
            (&broken, "is not a PEM certificate file"),
        ];
        for (path, want) in cases {
            let err = read_ca(path).unwrap_err();
            assert!(
                err.contains(want) && err.contains(&*path.display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn a_ca_file_is_found_beside_the_config_and_needs_a_tls_url() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).unwrap();
        std::fs::write(dir.path().join("redis-ca.pem"), ca.cert.pem()).unwrap();
        let path = dir.path().join("holdfast.toml");
        let load = |redis: &str| {
            let text =
                format!("[cluster]\nredis = [\"{redis}\"]\nredis_ca_file = \"redis-ca.pem\"\n");
            std::fs::write(&path, text).unwrap();
            let config = crate::config::Config::load(&path).unwrap();
            assert_eq!(
                config.cluster.redis_ca_file.as_deref(),
                Some(&*dir.path().join("redis-ca.pem"))
            );
            config.validate(&path).map_err(|e| e.to_string())
        };
        load("rediss://:pw@redis.internal:6380").unwrap();
        let err = load("redis://redis.internal:6379").unwrap_err();
        assert!(
            err.contains("cluster.redis_ca_file: is set but no cluster.redis URL uses TLS"),
            "{err}"
        );
    }
}
