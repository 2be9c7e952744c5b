//! A pushpin.conf as Pushpin's `Settings` class sees it: the file, the file its `[global]
//! include` names, and the `{libdir}`, `{rundir}` and `{ipc_prefix}` templates in values.
//!
//! As in Pushpin: a key in the main file wins over the same key in the included file; `include`,
//! `libdir`, `rundir`, `ipc_prefix` and `port_offset` are read from the main file only; the
//! include goes one level deep (an included file's own `include` is not followed); a relative
//! include is relative to the main file's folder, and `include=internal.conf` means
//! `{libdir}/internal.conf`. Within one file the last of a repeated key wins.
//!
//! `{libdir}` is `[global] libdir` when set. Otherwise it is where Pushpin keeps its library
//! files: Pushpin compiles that folder in (`/usr/lib/pushpin` in Debian's package), so Holdfast
//! looks where a Pushpin installed under the config file's prefix keeps it — for
//! `<prefix>/etc/pushpin/pushpin.conf`, `<prefix>/usr/lib/pushpin` (a Debian package, or one
//! unpacked under `<prefix>`) or `<prefix>/lib/pushpin` (a build installed with that prefix) —
//! and takes `/usr/lib/pushpin` when neither has an `internal.conf`.
//!
//! An include file that does not exist is a warning, not an error: Pushpin reads it as empty,
//! and the one Pushpin ships (`internal.conf`) holds only the wiring between Pushpin's own
//! processes, which Holdfast does not have.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ini::{self, Entry, IniFile, Value};
use crate::config::ConfigError;

/// Where Debian's `pushpin` package keeps `internal.conf`.
pub const DEBIAN_LIBDIR: &str = "/usr/lib/pushpin";

/// One key's value as Pushpin reads it.
#[derive(Debug, Clone)]
pub struct Setting<'a> {
    /// The file the value is in.
    pub file: &'a Path,
    /// The line in that file.
    pub line: usize,
    /// The section.
    pub section: &'a str,
    /// The key.
    pub key: &'a str,
    /// The value with its templates filled in.
    pub value: Value,
    /// The value as written, for messages.
    pub raw: &'a str,
}

impl Setting<'_> {
    /// The error `FILE:LINE: key: message`.
    pub fn error(&self, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            path: self.file.to_path_buf(),
            line: Some(self.line),
            message: format!("{}: {message}", self.key),
        }
    }
}

/// A warning about one line: the file, the line, and what follows `FILE:LINE: `.
pub type Warning = (PathBuf, usize, String);

/// A pushpin.conf and its include, read.
#[derive(Debug)]
pub struct Settings {
    main: IniFile,
    include: Option<IniFile>,
    dir: PathBuf,
    include_path: Option<PathBuf>,
    libdir: PathBuf,
    rundir: String,
    ipc_prefix: String,
    port_offset: i32,
    warnings: Vec<Warning>,
}

impl Settings {
    /// Reads the file at `path`, whose text is `text`, and the file it includes.
    pub fn load(path: &Path, text: &str) -> Result<Settings, ConfigError> {
        let main = ini::parse(text, path)?;
        let dir = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        let warnings = repeated_keys(&main);
        let raw = |key: &str| last(&main, "global", key);
        let libdir = match raw("libdir") {
            Some(e) => PathBuf::from(e.value.one().map_err(|m| at(&main, e, m))?),
            None => default_libdir(&dir),
        };
        let rundir = match raw("rundir").or_else(|| last(&main, "runner", "rundir")) {
            Some(e) => e.value.one().map_err(|m| at(&main, e, m))?.to_string(),
            None => String::new(),
        };
        let ipc_prefix = match raw("ipc_prefix") {
            Some(e) => e.value.one().map_err(|m| at(&main, e, m))?.to_string(),
            None => "pushpin-".to_string(),
        };
        let port_offset = match raw("port_offset") {
            Some(e) => {
                let text = e.value.one().map_err(|m| at(&main, e, m))?;
                text.parse()
                    .map_err(|_| at(&main, e, format!("{text:?} is not a whole number")))?
            }
            None => 0,
        };
        let mut settings = Settings {
            main,
            include: None,
            dir,
            include_path: None,
            libdir,
            rundir,
            ipc_prefix,
            port_offset,
            warnings,
        };
        settings.read_include()?;
        Ok(settings)
    }

    /// Reads the file `[global] include` names, if any; a missing one is a warning.
    fn read_include(&mut self) -> Result<(), ConfigError> {
        let Some(e) = last(&self.main, "global", "include") else {
            return Ok(());
        };
        let named = e.value.one().map_err(|m| at(&self.main, e, m))?;
        // Pushpin's own special case, kept "until the next major version".
        let named = if named == "internal.conf" {
            "{libdir}/internal.conf"
        } else {
            named
        };
        let resolved = self.resolve(named);
        if resolved.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(resolved);
        let line = e.line;
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let file = ini::parse(&text, &path)?;
                self.warnings.extend(repeated_keys(&file));
                self.include = Some(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.warnings.push((
                    self.main.path.clone(),
                    line,
                    format!(
                        "include: {} does not exist, so nothing is included (Pushpin reads it \
                         as empty too; the internal.conf Pushpin ships holds only the wiring \
                         between Pushpin's own processes)",
                        path.display()
                    ),
                ));
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        }
        self.include_path = Some(path);
        Ok(())
    }

    /// The value of `key` in `section`: the main file's, else the included file's.
    pub fn get(&self, section: &str, key: &str) -> Option<Setting<'_>> {
        last(&self.main, section, key)
            .map(|e| self.setting(&self.main, e))
            .or_else(|| {
                let include = self.include.as_ref()?;
                last(include, section, key).map(|e| self.setting(include, e))
            })
    }

    /// Every key Pushpin would read a value for, once each, where that value comes from: the
    /// main file's keys in file order, then those of the included file the main file lacks.
    pub fn all(&self) -> Vec<Setting<'_>> {
        let mut out: Vec<Setting<'_>> = Vec::new();
        for file in std::iter::once(&self.main).chain(&self.include) {
            for e in &file.entries {
                let winner = self.get(&e.section, &e.key);
                let is_winner =
                    winner.is_some_and(|w| w.file == file.path.as_path() && w.line == e.line);
                if is_winner {
                    out.push(self.setting(file, e));
                }
            }
        }
        out
    }

    /// The main file's folder (absolute), against which relative paths in it are resolved.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file `include` named, when it named one (whether or not it exists).
    pub fn include_path(&self) -> Option<&Path> {
        self.include_path.as_deref()
    }

    /// The folder `{libdir}` stands for.
    pub fn libdir(&self) -> &Path {
        &self.libdir
    }

    /// `[global] port_offset`: added by Pushpin to the publish port and to `tcp://` specs.
    pub fn port_offset(&self) -> i32 {
        self.port_offset
    }

    /// Repeated keys and a missing include.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// `text` with `{libdir}`, `{rundir}` and `{ipc_prefix}` filled in.
    pub fn resolve(&self, text: &str) -> String {
        text.replace("{libdir}", &self.libdir.to_string_lossy())
            .replace("{rundir}", &self.rundir)
            .replace("{ipc_prefix}", &self.ipc_prefix)
    }

    fn setting<'a>(&'a self, file: &'a IniFile, e: &'a Entry) -> Setting<'a> {
        Setting {
            file: &file.path,
            line: e.line,
            section: &e.section,
            key: &e.key,
            value: e.value.map(|s| self.resolve(s)),
            raw: &e.raw,
        }
    }
}

/// The last entry for `section`/`key` in one file.
fn last<'a>(file: &'a IniFile, section: &str, key: &str) -> Option<&'a Entry> {
    file.entries
        .iter()
        .rev()
        .find(|e| e.section == section && e.key == key)
}

fn at(file: &IniFile, e: &Entry, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        path: file.path.clone(),
        line: Some(e.line),
        message: format!("{}: {message}", e.key),
    }
}

/// A warning for every entry a later one of the same key replaces.
fn repeated_keys(file: &IniFile) -> Vec<Warning> {
    let mut last_line: HashMap<(&str, &str), usize> = HashMap::new();
    for e in &file.entries {
        last_line.insert((&e.section, &e.key), e.line);
    }
    file.entries
        .iter()
        .filter_map(|e| {
            let winner = last_line[&(e.section.as_str(), e.key.as_str())];
            (winner != e.line).then(|| {
                (
                    file.path.clone(),
                    e.line,
                    format!("{}: set again at line {winner}, whose value is used", e.key),
                )
            })
        })
        .collect()
}

/// `{libdir}` when the file does not set it (see the module's documentation).
fn default_libdir(dir: &Path) -> PathBuf {
    let prefix = (dir.file_name() == Some("pushpin".as_ref())
        && dir.parent().and_then(Path::file_name) == Some("etc".as_ref()))
    .then(|| dir.parent().and_then(Path::parent))
    .flatten();
    prefix
        .into_iter()
        .flat_map(|p| [p.join("usr/lib/pushpin"), p.join("lib/pushpin")])
        .find(|libdir| libdir.join("internal.conf").is_file())
        .unwrap_or_else(|| PathBuf::from(DEBIAN_LIBDIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(path: &Path) -> Result<Settings, ConfigError> {
        Settings::load(path, &std::fs::read_to_string(path).unwrap())
    }

    fn value(s: &Settings, section: &str, key: &str) -> Option<(String, usize, Value)> {
        s.get(section, key)
            .map(|v| (v.file.display().to_string(), v.line, v.value))
    }

    #[test]
    fn include_templates_and_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        let inc = write(
            &lib,
            "internal.conf",
            "[proxy]\nzurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl\nsig_iss=from-include\n\
             [global]\ninclude=loop.conf\n",
        );
        let main = write(
            dir.path(),
            "pushpin.conf",
            &format!(
                "[global]\ninclude={{libdir}}/internal.conf\nlibdir={}\nrundir=/run/pp\n\
                 ipc_prefix=x-\n[proxy]\nsig_iss=from-main\n",
                lib.display()
            ),
        );
        let s = load(&main).unwrap();
        assert_eq!(s.include_path(), Some(inc.as_path()));
        assert_eq!(
            value(&s, "proxy", "zurl_in_specs"),
            Some((
                inc.display().to_string(),
                2,
                Value::One("ipc:///run/pp/x-zurl".into())
            ))
        );
        // The main file wins; the include's shadowed key is not listed.
        assert_eq!(
            value(&s, "proxy", "sig_iss"),
            Some((
                main.display().to_string(),
                7,
                Value::One("from-main".into())
            ))
        );
        let all: Vec<(String, usize)> = s
            .all()
            .iter()
            .map(|v| (format!("[{}] {}", v.section, v.key), v.line))
            .collect();
        assert_eq!(
            all,
            vec![
                ("[global] include".into(), 2),
                ("[global] libdir".into(), 3),
                ("[global] rundir".into(), 4),
                ("[global] ipc_prefix".into(), 5),
                ("[proxy] sig_iss".into(), 7),
                ("[proxy] zurl_in_specs".into(), 2),
            ]
        );
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    }

    #[test]
    fn include_forms() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "lib/internal.conf", "[handler]\nk=1\n");
        write(dir.path(), "etc/extra.conf", "[handler]\nk=2\n");
        let lib = dir.path().join("lib");
        // (the include line, the included file, the value of [handler] k)
        let cases = [
            (
                format!("include=internal.conf\nlibdir={}", lib.display()),
                lib.join("internal.conf"),
                Some("1"),
            ),
            (
                "include=extra.conf".into(),
                dir.path().join("etc/extra.conf"),
                Some("2"),
            ),
            (
                format!("include={}/internal.conf", lib.display()),
                lib.join("internal.conf"),
                Some("1"),
            ),
            (
                "include=missing.conf".into(),
                dir.path().join("etc/missing.conf"),
                None,
            ),
        ];
        for (line, included, k) in cases {
            let main = write(
                dir.path(),
                "etc/pushpin.conf",
                &format!("[global]\n{line}\n"),
            );
            let s = load(&main).unwrap();
            assert_eq!(s.include_path(), Some(included.as_path()), "{line}");
            let got = s
                .get("handler", "k")
                .map(|v| v.value.one().unwrap().to_string());
            assert_eq!(got.as_deref(), k, "{line}");
            if k.is_none() {
                let [(file, 2, text)] = s.warnings() else {
                    panic!("{line}: {:?}", s.warnings());
                };
                assert_eq!(file, &main);
                assert!(text.starts_with("include: "), "{text}");
            }
        }
    }

    #[test]
    fn libdir_is_found_beside_the_config_prefix() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "usr/lib/pushpin/internal.conf", "[proxy]\n");
        let main = write(root.path(), "etc/pushpin/pushpin.conf", "[global]\n");
        assert_eq!(
            load(&main).unwrap().libdir(),
            root.path().join("usr/lib/pushpin")
        );

        let local = tempfile::tempdir().unwrap();
        write(local.path(), "lib/pushpin/internal.conf", "[proxy]\n");
        let main = write(local.path(), "etc/pushpin/pushpin.conf", "[global]\n");
        assert_eq!(
            load(&main).unwrap().libdir(),
            local.path().join("lib/pushpin")
        );

        // Elsewhere, or with nothing installed beside it: Debian's.
        let main = write(local.path(), "conf/pushpin.conf", "[global]\n");
        assert_eq!(load(&main).unwrap().libdir(), Path::new(DEBIAN_LIBDIR));
    }

    #[test]
    fn repeated_keys_are_warned_about_and_the_last_wins() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(
            dir.path(),
            "p.conf",
            "[proxy]\ndebug=true\n[handler]\ndebug=x\n[proxy]\ndebug=false\n",
        );
        let s = load(&main).unwrap();
        assert_eq!(s.get("proxy", "debug").unwrap().line, 6);
        assert_eq!(
            s.warnings(),
            [(
                main.clone(),
                2,
                "debug: set again at line 6, whose value is used".to_string()
            )]
        );
    }

    #[test]
    fn bad_global_values_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "[global]\nport_offset=ten\n",
                ":2: port_offset: \"ten\" is not a whole number",
            ),
            (
                "[global]\nrundir=a,b\n",
                ":2: rundir: one value is expected",
            ),
            (
                "[global]\ninclude=a,b\n",
                ":2: include: one value is expected",
            ),
        ];
        for (text, want) in cases {
            let main = write(dir.path(), "p.conf", text);
            let err = load(&main).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{}{want}", main.display())),
                "{text:?}: {err}"
            );
        }
    }
}
