//! The one banner `padlock up` prints on standard output once the services
//! are ready: where they listen, the web UI's URL to open, the demo users,
//! and grpcurl commands that walk through the step-up flow (each one pastes
//! into a shell as is).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use crate::seed::{APP_NAME, PACKAGE_FILE, USERS};
use crate::state::{Credential, Demo};

/// The line the banner ends with; scripts may wait for it.
pub const LAST_LINE: &str = "Stop with Ctrl-C (SIGINT) or SIGTERM.";

const TO_TOKEN: &str =
    r#"python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])'"#;

#[derive(Debug)]
pub struct Banner<'a> {
    pub data_dir: &'a Path,
    pub auth_bin: &'a Path,
    pub deploy_bin: &'a Path,
    pub auth: SocketAddr,
    pub deploy: SocketAddr,
    pub gateway: SocketAddr,
    pub demo: Option<&'a Demo>,
    pub credentials: &'a [Credential],
    pub credentials_path: &'a Path,
}

#[allow(clippy::print_stdout)]
pub fn print(banner: &Banner<'_>) {
    use std::io::Write as _;
    print!("{}", render(banner));
    let _ = std::io::stdout().flush();
}

pub fn render(b: &Banner<'_>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_banner(&mut out, b);
    out
}

fn write_banner(out: &mut String, b: &Banner<'_>) -> std::fmt::Result {
    writeln!(out)?;
    writeln!(
        out,
        "padlock is up: data in {} (SQLite), logs on standard error.",
        b.data_dir.display()
    )?;
    writeln!(out, "  padlock-auth     {}", b.auth)?;
    writeln!(out, "  padlock-deploy   {}", b.deploy)?;
    writeln!(out, "  padlock-gateway  {}", ui_url(b.gateway))?;
    writeln!(out)?;
    match b.demo {
        Some(demo) => write_demo(out, b, demo)?,
        None => {
            writeln!(
                out,
                "Open {} and sign in. No demo seeded (--no-seed). Add a user and an app with its team:",
                ui_url(b.gateway)
            )?;
            writeln!(
                out,
                "  echo 'a long password' | {} --data-dir {} users add --username alice",
                b.auth_bin.display(),
                b.data_dir.join("auth").display()
            )?;
            let deploy = format!(
                "{} --data-dir {}",
                b.deploy_bin.display(),
                b.data_dir.join("deploy").display()
            );
            writeln!(
                out,
                "  {deploy} apps create --name Shop --technical-contact alice"
            )?;
            writeln!(
                out,
                "  {deploy} team add --app Shop --username bob --role deploy"
            )?;
            writeln!(out)?;
        }
    }
    writeln!(out, "{LAST_LINE}")
}

fn write_demo(out: &mut String, b: &Banner<'_>, demo: &Demo) -> std::fmt::Result {
    writeln!(
        out,
        "Demo: app {APP_NAME}, package {PACKAGE_FILE} deployed on test. Users (passwords also in {}):",
        b.credentials_path.display()
    )?;
    let password = |name: &str| {
        b.credentials
            .iter()
            .find(|c| c.username == name)
            .map_or("(unknown)", |c| c.password.as_str())
    };
    for (name, _, what) in USERS {
        writeln!(out, "  {name:<5} {:<22} {what}", password(name))?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Open {} and sign in as tina / {}",
        ui_url(b.gateway),
        password("tina")
    )?;
    writeln!(out)?;

    let auth = "-H \"authorization: Bearer $TOKEN\"";
    let transport = |from: &str, to: &str| {
        format!(
            r#"-d '{{"packageId":"'$PKG'","fromEnvironment":"ENVIRONMENT_{from}","toEnvironment":"ENVIRONMENT_{to}"}}' $D padlock.deploy.v1.PackageService/TransportPackage"#
        )
    };
    writeln!(out, "Try the padlock with grpcurl, as tina:")?;
    writeln!(out, "  A={} D={} PKG={}", b.auth, b.deploy, demo.package_id)?;
    writeln!(
        out,
        r#"  TOKEN=$(grpcurl -plaintext -d '{{"username":"tina","password":"{}"}}' $A padlock.auth.v1.SessionService/SignIn | {TO_TOKEN})"#,
        password("tina")
    )?;
    writeln!(out, "  # test -> acceptance: allowed")?;
    writeln!(
        out,
        "  grpcurl -plaintext {auth} {}",
        transport("TEST", "ACCEPTANCE")
    )?;
    writeln!(
        out,
        "  # acceptance -> production: refused, UNAUTHENTICATED with reason MFA_REQUIRED"
    )?;
    writeln!(
        out,
        "  grpcurl -plaintext -format-error {auth} {}",
        transport("ACCEPTANCE", "PRODUCTION")
    )?;
    writeln!(
        out,
        "  # enroll an authenticator app: prints the enrollment id and the secret to type into the app"
    )?;
    writeln!(
        out,
        r#"  grpcurl -plaintext {auth} $A padlock.auth.v1.TwoFactorService/StartTotpEnrollment | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["enrollmentId"], r["secret"])'"#
    )?;
    writeln!(
        out,
        "  # confirm with the app's code (or `oathtool --totp -b SECRET`): the new token carries mfa_at"
    )?;
    writeln!(
        out,
        r#"  TOKEN=$(grpcurl -plaintext {auth} -d '{{"enrollmentId":"<id>","code":"<6 digits>"}}' $A padlock.auth.v1.TwoFactorService/ConfirmEnrollment | {TO_TOKEN})"#
    )?;
    writeln!(
        out,
        "  # (enrolled already? step up with -d '{{\"code\":\"<6 digits>\"}}' ... TwoFactorService/Verify)"
    )?;
    writeln!(
        out,
        "  # now the acceptance -> production transport above goes through"
    )?;
    writeln!(out)
}

/// The address a browser on this machine opens: a wildcard listen address
/// (0.0.0.0, ::) is reached through loopback.
pub fn ui_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn banner_with(demo: Option<&Demo>, credentials: &[Credential]) -> String {
        render(&Banner {
            data_dir: Path::new("data"),
            auth_bin: Path::new("target/debug/padlock-auth"),
            deploy_bin: Path::new("target/debug/padlock-deploy"),
            auth: "127.0.0.1:41001".parse().unwrap(),
            deploy: "127.0.0.1:41002".parse().unwrap(),
            gateway: "127.0.0.1:41003".parse().unwrap(),
            demo,
            credentials,
            credentials_path: Path::new("data/demo-credentials"),
        })
    }

    #[test]
    fn the_banner_names_both_addresses_the_users_and_their_passwords() {
        let demo = Demo {
            app_id: "app".into(),
            package_id: "3f1c".into(),
        };
        let creds = [
            Credential {
                username: "tina".into(),
                password: "TinaPw123".into(),
            },
            Credential {
                username: "dev".into(),
                password: "DevPw456".into(),
            },
        ];
        let text = banner_with(Some(&demo), &creds);
        assert!(text.contains("padlock-auth     127.0.0.1:41001"), "{text}");
        assert!(text.contains("padlock-deploy   127.0.0.1:41002"), "{text}");
        assert!(
            text.contains("padlock-gateway  http://127.0.0.1:41003/"),
            "{text}"
        );
        assert!(
            text.contains("Open http://127.0.0.1:41003/ and sign in as tina / TinaPw123"),
            "{text}"
        );
        assert!(
            text.contains("A=127.0.0.1:41001 D=127.0.0.1:41002 PKG=3f1c"),
            "{text}"
        );
        assert!(
            text.contains(r#""username":"tina","password":"TinaPw123""#),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("  dev") && l.contains("DevPw456"))
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("  ops") && l.contains("(unknown)"))
        );
        assert!(text.trim_end().ends_with(LAST_LINE));
    }

    #[test]
    fn without_a_demo_the_banner_says_how_to_add_a_user() {
        let text = banner_with(None, &[]);
        assert!(text.contains("No demo seeded"), "{text}");
        assert!(text.contains("Open http://127.0.0.1:41003/"), "{text}");
        assert!(text.contains("data/auth users add"), "{text}");
        assert!(
            text.contains(
                "target/debug/padlock-deploy --data-dir data/deploy apps create --name Shop"
            ),
            "{text}"
        );
        assert!(text.contains("data/deploy team add --app Shop"), "{text}");
        assert!(!text.contains("TOKEN="), "{text}");
    }

    #[test]
    fn a_wildcard_gateway_address_is_opened_through_loopback() {
        assert_eq!(
            ui_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(ui_url("[::]:8080".parse().unwrap()), "http://[::1]:8080/");
        assert_eq!(
            ui_url("192.0.2.7:9000".parse().unwrap()),
            "http://192.0.2.7:9000/"
        );
    }
}
