//! `flowd certgen` (the real binary, files backend) checked with an
//! independent tool, openssl: the chain (`openssl verify`), the validity
//! (`openssl x509 -checkend`), the names (`-ext subjectAltName`) and key
//! usages; what a second run keeps; that renewal replaces exactly the
//! certificates within the window and keeps the CA (same SHA-256
//! fingerprint); `--renew-ca`; bad input refused with the reason.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("flowd-certgen-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn certgen(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowd"))
        .arg("certgen")
        .arg("--output-dir")
        .arg(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running flowd certgen")
}

/// Runs certgen, which must succeed; returns "name: action" per stdout line.
fn actions(dir: &Path, args: &[&str]) -> Vec<String> {
    let out = certgen(dir, args);
    assert!(
        out.status.success(),
        "flowd certgen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            // "flowd-ca: kept, serial …" / "x: renewed (reason), serial …"
            let (name, rest) = l.split_once(": ").unwrap();
            let action = rest.split([',', ' ']).next().unwrap();
            format!("{name}: {action}")
        })
        .collect()
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (scripts/setup.sh)")
}

fn openssl_ok(args: &[&str]) -> String {
    let out = openssl(args);
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn p(dir: &Path, secret: &str, key: &str) -> String {
    dir.join(secret).join(key).display().to_string()
}

fn fingerprint(cert: &str) -> String {
    openssl_ok(&["x509", "-in", cert, "-noout", "-fingerprint", "-sha256"])
        .trim()
        .to_string()
}

fn serial(cert: &str) -> String {
    openssl_ok(&["x509", "-in", cert, "-noout", "-serial"])
        .trim()
        .to_string()
}

/// `openssl x509 -checkend SECS`: true when still valid SECS from now.
fn valid_in(cert: &str, secs: u64) -> bool {
    openssl(&[
        "x509",
        "-in",
        cert,
        "-noout",
        "-checkend",
        &secs.to_string(),
    ])
    .status
    .success()
}

const SERVER: &str = "flowd-server-certs";
const CLIENT: &str = "flowd-relay-client-certs";
const CA: &str = "flowd-ca";

#[test]
fn certificates_verify_with_openssl_and_renewal_keeps_the_ca() {
    let tmp = TempDir::new("verify");
    let d = tmp.0.as_path();
    let base = [
        "--cluster-name",
        "east",
        "--server-dns-name",
        "flowd.kube-system.svc",
        "--server-ip",
        "10.0.0.7",
        "--cert-validity",
        "48h",
        "--renew-before",
        "1h",
    ];
    assert_eq!(
        actions(d, &base),
        [
            "flowd-ca: created",
            "flowd-server-certs: created",
            "flowd-relay-client-certs: created"
        ]
    );
    let ca = p(d, CA, "ca.crt");
    let server = p(d, SERVER, "tls.crt");
    let client = p(d, CLIENT, "tls.crt");

    // The chain, from the CA file and from each Secret's own ca.crt.
    let v = openssl_ok(&["verify", "-CAfile", &ca, &server, &client]);
    assert_eq!(v, format!("{server}: OK\n{client}: OK\n"));
    openssl_ok(&["verify", "-CAfile", &p(d, SERVER, "ca.crt"), &client]);
    openssl_ok(&["verify", "-CAfile", &p(d, CLIENT, "ca.crt"), &server]);
    // Purposes: server auth for the nodes, client auth for the relay.
    openssl_ok(&["verify", "-purpose", "sslserver", "-CAfile", &ca, &server]);
    openssl_ok(&["verify", "-purpose", "sslclient", "-CAfile", &ca, &client]);
    assert!(
        !openssl(&["verify", "-purpose", "sslserver", "-CAfile", &ca, &client])
            .status
            .success(),
        "the relay's client certificate must not serve"
    );
    // Each key is its certificate's.
    for s in [SERVER, CLIENT] {
        let from_cert = openssl_ok(&["x509", "-in", &p(d, s, "tls.crt"), "-noout", "-pubkey"]);
        let from_key = openssl_ok(&["pkey", "-in", &p(d, s, "tls.key"), "-pubout"]);
        assert_eq!(from_cert, from_key, "{s}: key and certificate differ");
        let mode = std::fs::metadata(p(d, s, "tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{s}/tls.key is readable by others");
    }
    // Validity: 48 hours (started a few minutes back for clock skew).
    for c in [&server, &client] {
        assert!(valid_in(c, 0) && valid_in(c, 47 * 3600), "{c}");
        assert!(!valid_in(c, 48 * 3600 + 60), "{c} valid beyond 48h");
    }
    assert!(valid_in(&ca, 1094 * 24 * 3600) && !valid_in(&ca, 1096 * 24 * 3600));
    // Names.
    let san = openssl_ok(&["x509", "-in", &server, "-noout", "-ext", "subjectAltName"]);
    assert!(
        san.contains(
            "DNS:*.east.hubble-grpc.cilium.io, DNS:flowd.kube-system.svc, IP Address:10.0.0.7"
        ),
        "{san}"
    );
    let san = openssl_ok(&["x509", "-in", &client, "-noout", "-ext", "subjectAltName"]);
    assert!(san.contains("DNS:*.hubble-relay.cilium.io"), "{san}");
    let bc = openssl_ok(&["x509", "-in", &ca, "-noout", "-ext", "basicConstraints"]);
    assert!(bc.contains("CA:TRUE"), "{bc}");

    // The files are laid out as a mounted Secret: keys through ..data.
    let link = std::fs::read_link(d.join(SERVER).join("tls.crt")).unwrap();
    assert_eq!(link, Path::new("..data/tls.crt"));
    assert!(
        std::fs::symlink_metadata(d.join(SERVER).join("..data"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A second run keeps everything.
    let ca_fp = fingerprint(&ca);
    let (s1, c1) = (serial(&server), serial(&client));
    assert_eq!(
        actions(d, &base),
        [
            "flowd-ca: kept",
            "flowd-server-certs: kept",
            "flowd-relay-client-certs: kept"
        ]
    );
    assert_eq!((serial(&server), serial(&client)), (s1.clone(), c1.clone()));

    // Renewal replaces only what is within the window: the client
    // certificate is made again with 30 days, the server's has 48 hours.
    std::fs::remove_dir_all(d.join(CLIENT)).unwrap();
    let long = [
        &base[..6],
        &["--cert-validity", "30d", "--renew-before", "72h"],
    ]
    .concat();
    assert_eq!(
        actions(d, &long),
        [
            "flowd-ca: kept",
            "flowd-server-certs: renewed",
            "flowd-relay-client-certs: created"
        ],
        "the 48-hour server certificate is within 72 hours of its expiry"
    );
    let (s2, c2) = (serial(&server), serial(&client));
    assert_ne!(s2, s1);
    assert!(valid_in(&server, 29 * 24 * 3600));
    assert_eq!(
        actions(d, &long),
        [
            "flowd-ca: kept",
            "flowd-server-certs: kept",
            "flowd-relay-client-certs: kept"
        ]
    );
    assert_eq!((serial(&server), serial(&client)), (s2.clone(), c2.clone()));
    assert_eq!(fingerprint(&ca), ca_fp, "renewal changed the CA");
    openssl_ok(&["verify", "-CAfile", &ca, &server, &client]);

    // Other names (a new cluster name) reissue the server certificate only.
    let renamed = [&["--cluster-name", "west"], &long[2..]].concat();
    assert_eq!(
        actions(d, &renamed),
        [
            "flowd-ca: kept",
            "flowd-server-certs: renewed",
            "flowd-relay-client-certs: kept"
        ]
    );
    let san = openssl_ok(&["x509", "-in", &server, "-noout", "-ext", "subjectAltName"]);
    assert!(san.contains("DNS:*.west.hubble-grpc.cilium.io"), "{san}");

    // --force-renew: both, same CA.
    let forced = [&renamed[..], &["--force-renew"]].concat();
    assert_eq!(
        actions(d, &forced),
        [
            "flowd-ca: kept",
            "flowd-server-certs: renewed",
            "flowd-relay-client-certs: renewed"
        ]
    );
    assert_eq!(fingerprint(&ca), ca_fp);
    let old_ca = tmp.0.join("old-ca.crt");
    std::fs::copy(&ca, &old_ca).unwrap();

    // --renew-ca: a new CA and everything issued by it.
    let new_ca = [&renamed[..], &["--renew-ca"]].concat();
    assert_eq!(
        actions(d, &new_ca),
        [
            "flowd-ca: renewed",
            "flowd-server-certs: renewed",
            "flowd-relay-client-certs: renewed"
        ]
    );
    assert_ne!(fingerprint(&ca), ca_fp);
    openssl_ok(&["verify", "-CAfile", &ca, &server, &client]);
    let old = old_ca.display().to_string();
    assert!(
        !openssl(&["verify", "-CAfile", &old, &server])
            .status
            .success(),
        "the new server certificate verifies with the old CA"
    );
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let tmp = TempDir::new("bad");
    let d = tmp.0.as_path();
    let out = certgen(d, &["--cert-validity", "1d", "--renew-before", "30d"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cert-validity") && err.contains("--renew-before"),
        "{err}"
    );
    assert!(!d.join(CA).exists(), "nothing written after a refusal");

    let out = certgen(d, &["--cert-validity", "soon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cert-validity"));

    // A CA whose key is not its certificate's: refused, nothing replaced.
    actions(d, &[]);
    let server_before = std::fs::read(d.join(SERVER).join("tls.crt")).unwrap();
    let other = TempDir::new("bad-other");
    actions(&other.0, &[]);
    let ca_dir = d.join(CA).join("..data");
    let real = std::fs::canonicalize(&ca_dir).unwrap().join("ca.key");
    std::fs::copy(other.0.join(CA).join("ca.key"), &real).unwrap();
    let out = certgen(d, &["--force-renew"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("flowd-ca") && err.contains("ca.key is not the key of ca.crt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(d.join(SERVER).join("tls.crt")).unwrap(),
        server_before
    );

    // Neither or both backends.
    let out = Command::new(env!("CARGO_BIN_EXE_flowd"))
        .arg("certgen")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output-dir"));
}

/// `--ca-secret`, `--server-secret`, `--relay-client-secret` name the
/// three objects (directories here); `--ca-validity 10d` is the new CA's
/// validity; the cluster name comes from `CLUSTER_NAME` (the manifests set
/// it from the ConfigMap's `cluster-name`) unless `--cluster-name` is
/// given, and a name flowd's `cluster-name` would refuse is refused.
#[test]
fn secret_names_ca_validity_and_cluster_name_from_the_environment() {
    let tmp = TempDir::new("names");
    let d = tmp.0.as_path();
    let names = [
        "--ca-secret",
        "my-ca",
        "--server-secret",
        "my-server",
        "--relay-client-secret",
        "my-client",
        "--ca-validity",
        "10d",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_flowd"))
        .arg("certgen")
        .arg("--output-dir")
        .arg(d)
        .args(names)
        .env("CLUSTER_NAME", "west")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut made: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    made.sort();
    assert_eq!(made, ["my-ca", "my-client", "my-server"]);
    let ca = p(d, "my-ca", "ca.crt");
    assert!(valid_in(&ca, 9 * 24 * 3600) && !valid_in(&ca, 10 * 24 * 3600 + 3600));
    let server = p(d, "my-server", "tls.crt");
    let san = openssl_ok(&["x509", "-in", &server, "-noout", "-ext", "subjectAltName"]);
    assert!(san.contains("DNS:*.west.hubble-grpc.cilium.io"), "{san}");
    openssl_ok(&["verify", "-CAfile", &ca, &p(d, "my-client", "tls.crt")]);

    // The flag wins over the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_flowd"))
        .arg("certgen")
        .arg("--output-dir")
        .arg(d)
        .args(names)
        .args(["--cluster-name", "north"])
        .env("CLUSTER_NAME", "west")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let san = openssl_ok(&["x509", "-in", &server, "-noout", "-ext", "subjectAltName"]);
    assert!(san.contains("DNS:*.north.hubble-grpc.cilium.io"), "{san}");

    for bad in ["East", "-east", "a.b"] {
        let out = certgen(d, &[&format!("--cluster-name={bad}")]);
        assert!(!out.status.success(), "--cluster-name {bad} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--cluster-name") && err.contains("lower-case letters"),
            "{err}"
        );
    }
}
