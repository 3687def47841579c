//! Debian's `docker-registry` (the CNCF distribution server 2.8), the reference v2 registry,
//! started on 127.0.0.1 with a temporary configuration and storage directory: what the v2
//! suites compare regfs with and what the v2 mount is tested against.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The program `scripts/setup.sh` installs.
pub const PROGRAM: &str = "docker-registry";

/// A running distribution server, killed (and its directory removed) on drop.
pub struct Distribution {
    pub url: String,
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

/// How to start one.
#[derive(Debug, Clone, Default)]
pub struct DistributionOptions {
    /// Lets `DELETE` of manifests and blobs work (`storage.delete.enabled`).
    pub delete: bool,
    /// An htpasswd file's contents (bcrypt lines) to require Basic credentials.
    pub htpasswd: Option<String>,
    /// Extra YAML appended to the configuration, as written.
    pub extra_yaml: String,
}

impl Distribution {
    /// A server with deletes enabled and no auth.
    pub fn start() -> Self {
        Self::with(DistributionOptions {
            delete: true,
            ..Default::default()
        })
    }

    pub fn with(opts: DistributionOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage dir");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  \
             filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {}\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: regfs-test-secret\n",
            storage.display(),
            opts.delete,
        );
        if let Some(htpasswd) = &opts.htpasswd {
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, htpasswd).expect("htpasswd");
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: regfs-test\n    path: {}\n",
                path.display()
            ));
        }
        yaml.push_str(&opts.extra_yaml);
        let config = dir.path().join("config.yml");
        std::fs::write(&config, yaml).expect("config");
        let child = Command::new(PROGRAM)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{PROGRAM} could not start ({e}); scripts/setup.sh installs it")
            });
        let mut server = Distribution {
            url: format!("http://127.0.0.1:{port}"),
            port,
            child,
            dir,
        };
        server.wait_ready();
        server
    }

    /// The directory its storage and configuration live in.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Waits until `/v2/` answers (200, or 401 with auth); panics if the process exits or
    /// 30 s pass.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = format!("127.0.0.1:{}", self.port);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{PROGRAM} exited at start: {status}");
            }
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let req = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                let mut head = [0u8; 12];
                if s.write_all(req.as_bytes()).is_ok()
                    && s.read_exact(&mut head).is_ok()
                    && (head.ends_with(b"200") || head.ends_with(b"401"))
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{PROGRAM} did not answer in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (the registry "goes away"); [`Distribution::restart`] brings it back on
    /// the same port and storage.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.stop();
        let config = self.dir.path().join("config.yml");
        self.child = Command::new(PROGRAM)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("restart");
        self.wait_ready();
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free right now on 127.0.0.1 (the server binds it itself; the race is harmless in
/// tests, which would fail loudly at start).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
