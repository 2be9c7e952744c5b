//! Keys in `sig_key`'s forms (`grip::sig::SigKey`), read for the fields that take them
//! (`grip.sig_key`, `grip.upstream_key`, a route's `sig_key=`, `publish.jwt_key`): a secret,
//! `base64:<data>`, inline PEM, or `file:<path>` (a hex secret or PEM, as Pushpin 1.38+ reads
//! it). Errors name the file but never show what is in it.

use std::path::Path;

use grip::sig::{SigError, SigKey, Signer, Verifier};

/// Parses `text` and, for a `file:` key, reads the file (then named in every error about the
/// key). Relative paths are taken as they are (the configuration resolved them against its
/// folder).
fn load<T>(text: &str, read: impl FnOnce(&SigKey) -> Result<T, SigError>) -> Result<T, String> {
    match SigKey::parse(text).map_err(|e| e.to_string())? {
        SigKey::File(path) => {
            let in_file = |e: SigError| format!("key file {}: {e}", path.display());
            let contents = std::fs::read(&path)
                .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
            read(&SigKey::from_file_contents(&contents).map_err(in_file)?).map_err(in_file)
        }
        key => read(&key).map_err(|e| e.to_string()),
    }
}

/// A key that signs `Grip-Sig` tokens (a secret, or a PEM private key).
pub fn signer(text: &str) -> Result<Signer, String> {
    load(text, Signer::new)
}

/// A key that checks tokens (a secret, or a PEM public key).
pub fn verifier(text: &str) -> Result<Verifier, String> {
    load(text, Verifier::new)
}

/// `text` with a relative `file:` path resolved against `dir`; any other key unchanged.
pub fn resolve(text: &str, dir: &Path) -> String {
    match text.strip_prefix("file:") {
        Some(path) if Path::new(path).is_relative() && !path.is_empty() => {
            format!("file:{}", dir.join(path).display())
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::routes::RouteTable;
    use crate::config::Config;

    fn data(name: &str) -> String {
        format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn validate(text: &str) -> Result<(), String> {
        Config::parse(text, Path::new("c.toml"))
            .map_err(|e| e.to_string())?
            .validate(Path::new("c.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sig_key_pem_forms_are_checked_at_start() {
        let private = data("publish-es256-private.pem");
        let public = data("publish-es256-public.pem");
        validate(&format!("[grip]\nsig_key = \"file:{private}\"\n")).unwrap();
        let inline = std::fs::read_to_string(&private).unwrap();
        validate(&format!("[grip]\nsig_key = \"\"\"{inline}\"\"\"\n")).unwrap();

        let public_text = std::fs::read_to_string(&public).unwrap();
        let cases = [
            (
                format!("sig_key = \"file:{public}\""),
                format!("grip.sig_key: key file {public}: the PEM key is a public key (PUBLIC KEY); signing needs the private key"),
            ),
            (
                format!("sig_key = \"\"\"{public_text}\"\"\""),
                "grip.sig_key: the PEM key is a public key".to_string(),
            ),
            (
                "sig_key = \"file:/nonexistent/grip.pem\"".to_string(),
                "grip.sig_key: cannot read key file /nonexistent/grip.pem".to_string(),
            ),
            (
                "sig_key = \"\"\"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n\"\"\"".to_string(),
                "grip.sig_key: the key is not valid PEM".to_string(),
            ),
        ];
        for (line, want) in cases {
            let err = validate(&format!("[grip]\n{line}\n")).unwrap_err();
            assert!(err.contains(&want), "{line}: {err}");
            for body in public_text.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!err.contains(body), "{err} shows the key");
            }
        }
    }

    #[test]
    fn upstream_keys_are_secrets_or_public_keys_checked_at_start() {
        let private = data("publish-rs256-private.pem");
        let public = data("publish-rs256-public.pem");
        validate("[grip]\nupstream_key = \"realm-secret\"\n").unwrap();
        validate(&format!("[grip]\nupstream_key = \"file:{public}\"\n")).unwrap();
        let cases = [
            (
                format!("[grip]\nupstream_key = \"file:{private}\""),
                format!("grip.upstream_key: key file {private}: the PEM key is a private key (PRIVATE KEY); give the public key"),
            ),
            (
                "[grip]\nupstream_key = \"\"".to_string(),
                "grip.upstream_key: the key is empty".to_string(),
            ),
            (
                "[forwarding]\nx_forwarded_for_trusted = [\"prepend\"]".to_string(),
                "forwarding.x_forwarded_for_trusted: unknown rule \"prepend\"".to_string(),
            ),
        ];
        for (text, want) in cases {
            let err = validate(&format!("{text}\n")).unwrap_err();
            assert!(err.contains(&want), "{text}: {err}");
        }
    }

    #[test]
    fn route_key_files_are_found_beside_the_routes_file_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            data("publish-rs256-private.pem"),
            dir.path().join("grip.pem"),
        )
        .unwrap();
        std::fs::copy(data("publish-rs256-public.pem"), dir.path().join("pub.pem")).unwrap();
        let routes = dir.path().join("routes");

        std::fs::write(&routes, "*,sig_key=file:grip.pem 127.0.0.1:1\n").unwrap();
        let table = RouteTable::load(&routes).unwrap();
        let want = format!("file:{}", dir.path().join("grip.pem").display());
        assert_eq!(table.routes[0].options.sig_key.as_deref(), Some(&*want));

        std::fs::write(&routes, "# a comment\n*,sig_key=file:pub.pem 127.0.0.1:1\n").unwrap();
        let err = RouteTable::load(&routes).unwrap_err().to_string();
        assert!(
            err.contains(":2: sig_key: key file")
                && err.contains("the PEM key is a public key (PUBLIC KEY)"),
            "{err}"
        );
    }
}
