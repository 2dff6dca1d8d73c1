//! `[smtp]` of the settings file: the server mail rules send through,
//! checked when the settings load. TLS is STARTTLS or implicit TLS
//! (`tls`, or the older `starttls = true`), verified against the system's
//! certificates and an optional `ca_file`; AUTH goes only over TLS or to a
//! server on this host, so a password never crosses the network in clear.

use std::path::PathBuf;

use lettre::transport::smtp::client::TlsParameters;
use serde::Deserialize;

use super::tls::Roots;

/// `[smtp]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpFile {
    host: String,
    port: Option<u16>,
    from: Option<String>,
    tls: Option<Security>,
    /// The older spelling of `tls = "starttls"`, still read.
    starttls: Option<bool>,
    ca_file: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP.
    None,
    /// Plain SMTP upgraded with STARTTLS, which the server must offer.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
}

impl Security {
    fn as_str(self) -> &'static str {
        match self {
            Security::None => "none",
            Security::Starttls => "starttls",
            Security::Implicit => "implicit",
        }
    }
}

/// The checked `[smtp]`.
#[derive(Debug, Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    /// The sender; `holdfast@` the host's name when left out.
    pub from: Option<String>,
    pub security: Security,
    /// Built at load with `host` as the name the certificate must carry;
    /// present unless `security` is `None`.
    pub tls: Option<SmtpTls>,
    pub user: Option<String>,
    /// `password_file`'s content, read when the settings load.
    pub password: Option<Password>,
}

/// lettre's TLS parameters, which have no `Debug` of their own.
#[derive(Clone)]
pub struct SmtpTls(pub TlsParameters);

impl std::fmt::Debug for SmtpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmtpTls({})", self.0.domain())
    }
}

/// The SMTP password: never shown, not even in debug output.
#[derive(Clone)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Smtp {
    /// `smtp HOST:PORT` and the protection, as `workflow.get` shows it.
    pub fn describe(&self) -> String {
        match self.security {
            Security::None => format!("smtp {}:{}", self.host, self.port),
            security => format!("smtp {}:{} ({})", self.host, self.port, security.as_str()),
        }
    }
}

/// Check `[smtp]`, build its TLS parameters and read its password file;
/// the message says what to change. The password is never logged.
pub fn check(file: Option<SmtpFile>) -> Result<Option<Smtp>, String> {
    let Some(file) = file else {
        return Ok(None);
    };
    let security = match (file.tls, file.starttls) {
        (Some(tls), None) => tls,
        (Some(Security::Starttls), Some(true)) => Security::Starttls,
        (Some(tls), Some(false)) if tls != Security::Starttls => tls,
        (None, Some(true)) => Security::Starttls,
        (Some(tls), Some(starttls)) => {
            return Err(format!(
                "[smtp]: tls = {:?} and starttls = {starttls} disagree; keep only tls \
                 (\"starttls\", \"implicit\" or \"none\")",
                tls.as_str()
            ));
        }
        // Port 465 is SMTP over TLS from the first byte.
        (None, _) if file.port == Some(465) => Security::Implicit,
        (None, _) => Security::None,
    };
    let port = file.port.unwrap_or(match security {
        Security::Implicit => 465,
        Security::None | Security::Starttls => 25,
    });
    let tls = match (security, &file.ca_file) {
        (Security::None, Some(_)) => {
            return Err(
                "[smtp]: ca_file is for TLS; set tls = \"starttls\" or \"implicit\", or \
                 remove ca_file"
                    .into(),
            );
        }
        (Security::None, None) => None,
        (_, ca_file) => {
            let roots = Roots::load(ca_file.as_deref()).map_err(|e| format!("[smtp]: {e}"))?;
            let parameters = roots
                .smtp_parameters(&file.host)
                .map_err(|e| format!("[smtp]: {e}"))?;
            Some(SmtpTls(parameters))
        }
    };
    let password = match (&file.user, &file.password_file) {
        (None, None) => None,
        (Some(_), Some(path)) => {
            // Without TLS the password crosses the wire as it is: only to a
            // server on this host.
            let local = file.host == "localhost"
                || file
                    .host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if security == Security::None && !local {
                return Err(format!(
                    "[smtp]: user and password_file would send the password unencrypted to \
                     {}; set tls = \"starttls\" (or \"implicit\") so AUTH goes over TLS, or \
                     authenticate only to a server on this host (host = \"127.0.0.1\")",
                    file.host
                ));
            }
            let password = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "[smtp]: password_file {} cannot be read: {e}",
                    path.display()
                )
            })?;
            let password = password.trim_end_matches(['\r', '\n']).to_string();
            if password.is_empty() {
                return Err(format!(
                    "[smtp]: password_file {} is empty; write the password in it",
                    path.display()
                ));
            }
            Some(Password(password))
        }
        _ => {
            return Err("[smtp]: user and password_file go together; give both or neither".into());
        }
    };
    Ok(Some(Smtp {
        host: file.host,
        port,
        from: file.from,
        security,
        tls,
        user: file.user,
        password,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(toml_text: &str) -> Result<Option<Smtp>, String> {
        check(Some(toml::from_str(toml_text).expect("an [smtp] table")))
    }

    #[test]
    fn tls_follows_the_keys_and_port_465() {
        let security = |text: &str| checked(text).map(|s| s.map(|s| (s.security, s.port)));
        for (text, want) in [
            ("host = \"h\"", (Security::None, 25)),
            ("host = \"h\"\nstarttls = true", (Security::Starttls, 25)),
            ("host = \"h\"\nstarttls = false", (Security::None, 25)),
            (
                "host = \"h\"\ntls = \"starttls\"\nport = 587",
                (Security::Starttls, 587),
            ),
            (
                "host = \"h\"\ntls = \"implicit\"",
                (Security::Implicit, 465),
            ),
            ("host = \"h\"\nport = 465", (Security::Implicit, 465)),
            (
                "host = \"h\"\nport = 465\ntls = \"none\"",
                (Security::None, 465),
            ),
            (
                "host = \"h\"\ntls = \"starttls\"\nstarttls = true",
                (Security::Starttls, 25),
            ),
        ] {
            assert_eq!(security(text), Ok(Some(want)), "{text}");
        }
        let error = security("host = \"h\"\ntls = \"none\"\nstarttls = true")
            .expect_err("tls and starttls disagree");
        assert!(error.contains("disagree"), "{error}");
    }

    #[test]
    fn a_password_goes_in_clear_only_to_this_host() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").expect("pw");
        let with = |host: &str, tls: &str| {
            checked(&format!(
                "host = \"{host}\"\ntls = \"{tls}\"\nuser = \"u\"\npassword_file = {:?}",
                file.display().to_string()
            ))
        };
        let error = with("mail.example.com", "none").expect_err("AUTH in clear off this host");
        assert!(error.contains("unencrypted"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        let smtp = with("localhost", "none").expect("loopback").expect("smtp");
        assert_eq!(smtp.password.expect("a password").0, "s3cret");
        assert!(with("mail.example.com", "starttls").is_ok());
        assert!(!format!("{:?}", with("localhost", "implicit")).contains("s3cret"));
    }
}
