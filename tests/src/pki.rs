//! Certificates for the TLS tests, made with the `openssl` command line (Debian's `openssl`
//! package, which `make test` installs): a CA, and leaf certificates it signs for the names and
//! addresses a test needs. P-256 keys, valid for two days, written into the test's folder.

use std::path::PathBuf;
use std::process::Command;

use crate::Lab;

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test CA in a lab folder.
pub struct Pki {
    pub ca: Pair,
    dir: PathBuf,
}

/// `openssl req` arguments for a new unencrypted P-256 key.
const NEW_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (make test-deps installs it)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

impl Pki {
    /// A CA called `name`, its files `<name>.crt` and `<name>.key` in the lab folder.
    pub fn new(lab: &Lab, name: &str) -> Self {
        let ca = Pair {
            cert: lab.path(&format!("{name}.crt")),
            key: lab.path(&format!("{name}.key")),
        };
        openssl(&[
            "req",
            "-x509",
            NEW_KEY[0],
            NEW_KEY[1],
            NEW_KEY[2],
            NEW_KEY[3],
            NEW_KEY[4],
            "-keyout",
            s(&ca.key),
            "-out",
            s(&ca.cert),
            "-subj",
            &format!("/CN=Trunkgate test CA {name}"),
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        Pki {
            ca,
            dir: lab.dir.clone(),
        }
    }

    /// A leaf certificate `<file>.crt`/`.key` for `names` (DNS names or IP addresses), signed
    /// by this CA, for servers and clients alike.
    /// Like [`Pki::leaf`] but valid only on 1-2 January 2020: expired.
    pub fn expired_leaf(&self, file: &str, names: &[&str]) -> Pair {
        let pair = self.leaf(file, names);
        // Sign the same request again with dates in the past (`openssl ca`, which, unlike
        // `openssl x509` in OpenSSL 3.0, takes a start and end date).
        let csr = self.dir.join(format!("{file}.csr"));
        let ext = self.dir.join(format!("{file}.ext"));
        let cfg = self.dir.join(format!("{file}.ca.cnf"));
        let index = self.dir.join(format!("{file}.index"));
        let serial = self.dir.join(format!("{file}.serial"));
        std::fs::write(&index, "").expect("write the CA index");
        std::fs::write(&serial, "1000\n").expect("write the CA serial");
        std::fs::write(
            &cfg,
            format!(
                "[ca]\ndefault_ca = test\n[test]\ndatabase = {}\nnew_certs_dir = {}\nserial = {}\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n",
                s(&index),
                s(&self.dir),
                s(&serial)
            ),
        )
        .expect("write the CA configuration");
        openssl(&[
            "ca",
            "-batch",
            "-notext",
            "-config",
            s(&cfg),
            "-cert",
            s(&self.ca.cert),
            "-keyfile",
            s(&self.ca.key),
            "-in",
            s(&csr),
            "-out",
            s(&pair.cert),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-extfile",
            s(&ext),
        ]);
        pair
    }

    pub fn leaf(&self, file: &str, names: &[&str]) -> Pair {
        let pair = Pair {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        let csr = self.dir.join(format!("{file}.csr"));
        let ext = self.dir.join(format!("{file}.ext"));
        let san: Vec<String> = names
            .iter()
            .map(|n| {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{n}")
                } else {
                    format!("DNS:{n}")
                }
            })
            .collect();
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
                san.join(",")
            ),
        )
        .expect("write the extensions file");
        openssl(&[
            "req",
            NEW_KEY[0],
            NEW_KEY[1],
            NEW_KEY[2],
            NEW_KEY[3],
            NEW_KEY[4],
            "-keyout",
            s(&pair.key),
            "-out",
            s(&csr),
            "-subj",
            &format!("/CN={}", names.first().copied().unwrap_or("leaf")),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&self.ca.cert),
            "-CAkey",
            s(&self.ca.key),
            "-CAcreateserial",
            "-out",
            s(&pair.cert),
            "-days",
            "2",
            "-extfile",
            s(&ext),
        ]);
        pair
    }
}

/// The edge with a carrier-side TLS listener and a certificate of `pki` for 127.0.0.1 and
/// `edge.test` (no `--tls-ca`: it checks peers against the system roots and the trunks' own
/// CA bundles; give one in `extra`). Returns the edge and its TLS address.
pub fn tls_edge(lab: &Lab, pki: &Pki, extra: &[&str]) -> (crate::Edge, std::net::SocketAddr) {
    let own = pki.leaf("edge", &["127.0.0.1", "edge.test"]);
    let sips = std::net::SocketAddr::new(crate::EDGE_PUBLIC_IP, crate::free_port());
    let mut args: Vec<String> = vec![
        "--public-sips".into(),
        sips.to_string(),
        "--tls-cert".into(),
        own.cert.display().to_string(),
        "--tls-key".into(),
        own.key.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let edge = crate::Edge::start(
        lab,
        crate::EdgeOptions {
            extra_args: args,
            ..crate::EdgeOptions::default()
        },
    );
    (edge, sips)
}
