//! What `padlock up` keeps in the data directory beside the services' own
//! directories: the demo users' passwords (`demo-credentials`, 0600, written
//! before the users exist so a password is never lost) and the `seeded`
//! marker (written last, only when the whole demo was seeded).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

const CREDENTIALS_FILE: &str = "demo-credentials";
const MARKER_FILE: &str = "seeded";

/// A demo user and their password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// What the seed created, for the banner of every later start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demo {
    pub app_id: String,
    pub package_id: String,
}

#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens `root`, creating it (0700) if needed.
    pub fn create(root: &Path) -> anyhow::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("creating the data directory {}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn auth_dir(&self) -> PathBuf {
        self.root.join("auth")
    }

    pub fn deploy_dir(&self) -> PathBuf {
        self.root.join("deploy")
    }

    pub fn credentials_path(&self) -> PathBuf {
        self.root.join(CREDENTIALS_FILE)
    }

    pub fn marker_path(&self) -> PathBuf {
        self.root.join(MARKER_FILE)
    }

    pub fn has_credentials(&self) -> bool {
        self.credentials_path().exists()
    }

    /// The finished demo, or None if it was never seeded.
    pub fn seeded(&self) -> anyhow::Result<Option<Demo>> {
        let path = self.marker_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
                .with_context(|| format!("{} has no {key}= line", path.display()))
        };
        Ok(Some(Demo {
            app_id: field("app_id")?,
            package_id: field("package_id")?,
        }))
    }

    pub fn write_marker(&self, demo: &Demo) -> anyhow::Result<()> {
        let text = format!(
            "# padlock up seeded the demo; delete this file and the data to seed again\n\
             app_id={}\npackage_id={}\n",
            demo.app_id, demo.package_id
        );
        self.write_private(MARKER_FILE, &text)
    }

    pub fn write_credentials(&self, users: &[Credential]) -> anyhow::Result<()> {
        let mut text = String::from(
            "# The demo users padlock up seeded: username and password, one per line.\n\
             # Whoever can read this file can sign in as them.\n",
        );
        for user in users {
            text.push_str(&format!("{} {}\n", user.username, user.password));
        }
        self.write_private(CREDENTIALS_FILE, &text)
    }

    pub fn read_credentials(&self) -> anyhow::Result<Vec<Credential>> {
        let path = self.credentials_path();
        let text = fs::read_to_string(&path)
            .with_context(|| format!("reading the demo passwords from {}", path.display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (username, password) = l.split_once(' ').with_context(|| {
                    format!("{}: a line is not `user password`", path.display())
                })?;
                Ok(Credential {
                    username: username.to_owned(),
                    password: password.to_owned(),
                })
            })
            .collect()
    }

    /// Writes `name` (0600) atomically: a temporary file, fsync, rename.
    fn write_private(&self, name: &str, text: &str) -> anyhow::Result<()> {
        let path = self.root.join(name);
        let tmp = self.root.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.root)?.sync_all()
        };
        write().with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn credentials_round_trip_in_a_file_only_the_owner_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::create(&dir.path().join("data")).unwrap();
        let users = vec![
            Credential {
                username: "ops".into(),
                password: "a1b2c3".into(),
            },
            Credential {
                username: "tina".into(),
                password: "d4e5f6".into(),
            },
        ];
        data.write_credentials(&users).unwrap();
        assert_eq!(data.read_credentials().unwrap(), users);
        let mode = fs::metadata(data.credentials_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_marker_remembers_the_demo_app_and_package() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::create(dir.path()).unwrap();
        assert_eq!(data.seeded().unwrap(), None);
        let demo = Demo {
            app_id: "app-1".into(),
            package_id: "pkg-1".into(),
        };
        data.write_marker(&demo).unwrap();
        assert_eq!(data.seeded().unwrap(), Some(demo));
    }
}
