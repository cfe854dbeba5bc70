//! Kamailio (the Debian package's `/usr/sbin/kamailio`) as a carrier's equipment next to the
//! real edge: a record-routing proxy in front of it, an outbound carrier that challenges every
//! request, a proxy whose `uac_auth()` answers the edge's own challenge. The harness writes a
//! `kamailio.cfg` per instance into the test's folder, runs it in the foreground in its own
//! process group (killed when the test ends, also on panic) and keeps its log and a text dump
//! of every SIP message it saw (`sipdump`) next to the edge's log.
//!
//! Each config logs one `KAM-IN`/`KAM-OUT`/`KAM-AUTH` line per message (see [`Kamailio::events`])
//! so a test can say which hop a message did or did not take.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Lab, ProcessGroup, free_port, udp_bound};

/// The Kamailio binary.
pub const KAMAILIO_BIN: &str = "/usr/sbin/kamailio";

/// The longest a Kamailio may live: a safety net should the test process die before its
/// guards run.
const KAMAILIO_MAX_SECONDS: u64 = 120;

/// The transport between the carrier's UA, Kamailio and the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// TLS between Kamailio and the edge (the phone behind Kamailio still speaks UDP: sipp
    /// here has no TLS).
    Tls,
}

impl Transport {
    /// The `transport=` URI parameter value (RFC 3261 §19.1.1), also what Kamailio's
    /// `$proto` and `$snd(sproto)` print.
    pub fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// What Kamailio's `$proto` / `$snd(sproto)` print for it.
    pub fn kamailio_name(self) -> &'static str {
        self.param()
    }

    /// sipp's transport option (`-t u1` is sipp's default; `t1`: one TCP connection).
    pub fn sipp_args(self) -> &'static [&'static str] {
        match self {
            Transport::Udp | Transport::Tls => &["-t", "u1"],
            Transport::Tcp => &["-t", "t1"],
        }
    }
}

/// The carrier's digest credentials as Kamailio knows them.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub realm: String,
    pub password: String,
}

impl Credentials {
    pub fn new(user: &str, realm: &str, password: &str) -> Self {
        Self {
            user: user.into(),
            realm: realm.into(),
            password: password.into(),
        }
    }
}

/// A `kamailio.cfg` under construction: global settings, the modules, their parameters and the
/// routing blocks. Written out by [`Kamailio::start`], which also adds the message dump.
#[derive(Clone, Debug)]
pub struct KamailioConfig {
    /// The address Kamailio listens on, UDP and TCP alike.
    pub listen: SocketAddr,
    pub modules: Vec<String>,
    pub modparams: Vec<String>,
    /// `request_route`, named routes, `failure_route`s, `onreply_route`, `onsend_route`.
    pub routes: String,
    /// SIP over TLS beside UDP and TCP (Kamailio's `tls` module, Debian's
    /// `kamailio-tls-modules`).
    pub tls: Option<KamailioTls>,
}

/// Kamailio's TLS: where it listens, its certificate, and the CA it checks the edge's against,
/// both ways (as server it asks for a client certificate: mutual TLS, as carriers that want it
/// do; as client the edge's server certificate must verify).
#[derive(Clone, Debug)]
pub struct KamailioTls {
    pub listen: SocketAddr,
    pub own: crate::pki::Pair,
    pub ca: PathBuf,
}

impl KamailioTls {
    /// The `tls.cfg` the `tls` module reads (its profile syntax).
    pub fn render(&self) -> String {
        format!(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\n\
             certificate = {cert}\nprivate_key = {key}\nca_list = {ca}\n\n\
             [client:default]\nmethod = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\n\
             certificate = {cert}\nprivate_key = {key}\nca_list = {ca}\n",
            cert = self.own.cert.display(),
            key = self.own.key.display(),
            ca = self.ca.display(),
        )
    }
}

/// Modules every config loads: transactions, stateless replies, record-routing, the usual
/// request checks and the script variables used by the log lines.
const BASE_MODULES: &[&str] = &[
    "tm", "tmx", "sl", "rr", "maxfwd", "textops", "siputils", "pv", "xlog",
];

impl KamailioConfig {
    fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            modules: BASE_MODULES.iter().map(|m| m.to_string()).collect(),
            modparams: vec![
                // A lost answer must not keep a test waiting for the defaults (30 s / 120 s).
                "modparam(\"tm\", \"fr_timer\", 5000)".into(),
                "modparam(\"tm\", \"fr_inv_timer\", 20000)".into(),
            ],
            routes: String::new(),
            tls: None,
        }
    }

    /// The whole file; `dump_dir` receives the `sipdump` text files.
    pub fn render(&self, dump_dir: &std::path::Path, dump_prefix: &str) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "#!KAMAILIO");
        let _ = writeln!(
            c,
            "# Written by the trunkgate end-to-end harness (tests/src/kamailio.rs).\n\
             debug=2\nlog_stderror=yes\nlog_prefix=\"{{$mt $cs $rm $ci}} \"\n\
             children=1\ntcp_children=1\n\
             # Loopback only, no resolver: nothing may leave the machine or wait on DNS.\n\
             auto_aliases=no\ndns=no\nrev_dns=no\ndns_try_ipv6=no\nuse_dns_cache=off\n\
             disable_sctp=yes\n\
             # Outgoing TCP from the listening address: else the kernel picks 127.0.0.1 for\n\
             # the edge's 127.0.0.1 and the trunk's allowedCidrs drop the connection.\n\
             tcp_source_ipv4={ip}\n\
             # onsend_route also for replies, so the log shows what went back to the caller.\n\
             onsend_route_reply=yes\n\
             listen=udp:{l}\nlisten=tcp:{l}\n",
            l = self.listen,
            ip = self.listen.ip()
        );
        let mut modules = self.modules.clone();
        modules.push("sipdump".into());
        if let Some(tls) = &self.tls {
            let _ = writeln!(c, "enable_tls=yes\nlisten=tls:{}\n", tls.listen);
            modules.push("tls".into());
        }
        for m in &modules {
            let _ = writeln!(c, "loadmodule \"{m}.so\"");
        }
        let _ = writeln!(c);
        // Every message in and out as text, for the person reading a failure.
        let _ = writeln!(c, "modparam(\"sipdump\", \"enable\", 1)");
        let _ = writeln!(c, "modparam(\"sipdump\", \"wait\", 10000)");
        let _ = writeln!(
            c,
            "modparam(\"sipdump\", \"folder\", \"{}\")",
            dump_dir.display()
        );
        let _ = writeln!(c, "modparam(\"sipdump\", \"fprefix\", \"{dump_prefix}\")");
        if self.tls.is_some() {
            let _ = writeln!(
                c,
                "modparam(\"tls\", \"config\", \"{}\")",
                dump_dir.join(format!("{dump_prefix}tls.cfg")).display()
            );
        }
        for p in &self.modparams {
            let _ = writeln!(c, "{p}");
        }
        let _ = writeln!(c);
        c.push_str(&self.routes);
        c.push_str(LOG_ROUTES);
        c
    }
}

/// One line per reply received and per message sent, parsed by [`Kamailio::events`].
const LOG_ROUTES: &str = r#"
onreply_route {
    xlog("L_NOTICE", "KAM-REPLY $rs $rm from $proto:$si:$sp\n");
}

onsend_route {
    if (is_request()) {
        # (Headers here are the received request's, not the sent one's: none are logged.)
        xlog("L_NOTICE", "KAM-OUT $rm to $snd(sproto):$snd(ip):$snd(port)\n");
    } else {
        xlog("L_NOTICE", "KAM-OUT $rs $rm to $snd(sproto):$snd(ip):$snd(port) rr=[$hdr(Record-Route)]\n");
    }
}
"#;

/// The start of every request route: log it, refuse loops, hand CANCEL and retransmissions
/// to the transaction layer (Kamailio's stock config, RFC 3261 §16.3 and §16.10).
const REQUEST_PROLOGUE: &str = r#"
    xlog("L_NOTICE", "KAM-IN $rm $ru from $proto:$si:$sp route=[$hdr(Route)]\n");
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            route(RELAY);
        }
        exit;
    }
    if (!is_method("ACK")) {
        if (t_precheck_trans()) {
            t_check_trans();
            exit;
        }
        t_check_trans();
    }
"#;

/// The stock in-dialog handling: a request with a To tag follows its Route (loose routing,
/// RFC 3261 §16.12) and `AUTH_HOOK` runs before it is relayed; the ACK of a non-2xx answer
/// matches its INVITE's transaction; what is left (no Route through this proxy) is handled by
/// `NOT_ROUTED`.
const IN_DIALOG: &str = r#"
    if (has_totag()) {
        if (loose_route()) {
            xlog("L_NOTICE", "KAM-LOOSE-ROUTE $rm to $ru\n");
            AUTH_HOOK
            route(RELAY);
        }
        if (is_method("ACK") && t_check_trans()) {
            route(RELAY);
        }
NOT_ROUTED
    }
"#;

/// A record-routing proxy's answer to an in-dialog request that does not name it in Route, as
/// Kamailio's default config does: drop an ACK, refuse the rest with 404 "Not here".
const NOT_ROUTED_REFUSE: &str = r#"        if (is_method("ACK")) {
            xlog("L_NOTICE", "KAM-DROP $rm without a route through this proxy\n");
            exit;
        }
        xlog("L_NOTICE", "KAM-REFUSE $rm without a route through this proxy\n");
        sl_send_reply("404", "Not here");
        exit;"#;

/// An outbound proxy (the caller sends every request to it, RFC 3261 §8.1.2) relays an
/// in-dialog request without a route set to its Request-URI, the remote target.
const NOT_ROUTED_FORWARD: &str = r#"        xlog("L_NOTICE", "KAM-FORWARD $rm to its Request-URI $ru\n");
        route(RELAY);"#;

const RELAY_ROUTE: &str = r#"
route[RELAY] {
    if (!t_relay()) {
        sl_reply_error();
    }
    exit;
}
"#;

/// A carrier's proxy in front of the edge: every new INVITE is relayed to `edge` over
/// `transport`. With `record_route`, it stays in the dialog (RFC 3261 §16.6 step 4) and
/// in-dialog requests must follow their Route; without, it is the caller's outbound proxy
/// and relays in-dialog requests to their Request-URI. With
/// `answer_challenges`, a 401/407 from the edge is answered by `uac_auth()` in a
/// failure_route and the INVITE sent again (same CSeq: a limitation the uac module
/// documents).
pub fn carrier_proxy(
    listen: SocketAddr,
    edge: SocketAddr,
    transport: Transport,
    record_route: bool,
    answer_challenges: Option<&Credentials>,
) -> KamailioConfig {
    let mut cfg = KamailioConfig::new(listen);
    let (rr, not_routed) = if record_route {
        ("    record_route();\n", NOT_ROUTED_REFUSE)
    } else {
        ("", NOT_ROUTED_FORWARD)
    };
    let mut failure = String::new();
    let mut arm = String::new();
    if let Some(cr) = answer_challenges {
        cfg.modules.push("uac".into());
        cfg.modparams.push(format!(
            "modparam(\"uac\", \"credential\", \"{}:{}:{}\")",
            cr.user, cr.realm, cr.password
        ));
        arm = "    t_on_failure(\"EDGE_AUTH\");\n".into();
        failure = format!(
            r#"
failure_route[EDGE_AUTH] {{
    if (t_is_canceled()) {{
        exit;
    }}
    if (t_check_status("401|407")) {{
        xlog("L_NOTICE", "KAM-AUTH answering $T_reply_code from the edge with uac_auth\n");
        if (uac_auth()) {{
            $du = "sip:{edge};transport={t}";
            t_relay();
        }} else {{
            xlog("L_NOTICE", "KAM-AUTH uac_auth could not answer the challenge\n");
        }}
        exit;
    }}
}}
"#,
            t = transport.param()
        );
    }
    cfg.routes = format!(
        r#"
request_route {{
{prologue}
{in_dialog}
    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    # A new call for a number of ours: to the edge.
{rr}    $ru = "sip:" + $rU + "@{edge}";
    $du = "sip:{edge};transport={t}";
{arm}    route(RELAY);
}}
{relay}{failure}"#,
        prologue = REQUEST_PROLOGUE,
        in_dialog = IN_DIALOG
            .replace("AUTH_HOOK", "")
            .replace("NOT_ROUTED", not_routed),
        t = transport.param(),
        relay = RELAY_ROUTE,
    );
    cfg
}

/// The carrier an outbound trunk points at: it challenges (407, RFC 3261 §22.3) every INVITE
/// — new or re-INVITE — every BYE that comes from `edge_ip` and every OPTIONS (the edge's health
/// probes, answered 200 once authenticated), with a plain-text password
/// (no database), record-routes new INVITEs so later requests pass here again, and relays to
/// the carrier's far end.
pub fn challenging_carrier(
    listen: SocketAddr,
    edge_ip: IpAddr,
    far_end: SocketAddr,
    creds: &Credentials,
) -> KamailioConfig {
    let mut cfg = KamailioConfig::new(listen);
    cfg.modules.push("auth".into());
    let hook = r#"
            if (is_method("INVITE|BYE") && $si == "EDGE_IP") {
                route(AUTH);
            }"#
    .replace("EDGE_IP", &edge_ip.to_string());
    cfg.routes = format!(
        r#"
request_route {{
{prologue}
{in_dialog}
    if (is_method("OPTIONS")) {{
        route(AUTH);
        sl_send_reply("200", "OK");
        exit;
    }}
    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    route(AUTH);
    record_route();
    $du = "sip:{far_end}";
    route(RELAY);
}}

# Digest check with a fixed realm and password: a wrong or missing answer is challenged (again).
route[AUTH] {{
    if (!pv_proxy_authenticate("{realm}", "{password}", "0")) {{
        xlog("L_NOTICE", "KAM-AUTH challenge $rm (check said $rc)\n");
        proxy_challenge("{realm}", "1");
        exit;
    }}
    if ($au != "{user}") {{
        xlog("L_NOTICE", "KAM-AUTH wrong user $au for $rm\n");
        sl_send_reply("403", "Wrong user");
        exit;
    }}
    xlog("L_NOTICE", "KAM-AUTH accepted $rm from $au\n");
    consume_credentials();
}}
{relay}"#,
        prologue = REQUEST_PROLOGUE,
        in_dialog = IN_DIALOG
            .replace("AUTH_HOOK", &hook)
            .replace("NOT_ROUTED", NOT_ROUTED_REFUSE),
        realm = creds.realm,
        password = creds.password,
        user = creds.user,
        relay = RELAY_ROUTE,
    );
    cfg
}

/// A carrier that takes the edge's calls (over any transport it listens on, TLS included),
/// record-routes them and relays them to its far end, without asking for credentials.
pub fn relaying_carrier(listen: SocketAddr, far_end: SocketAddr) -> KamailioConfig {
    let mut cfg = KamailioConfig::new(listen);
    cfg.routes = format!(
        r#"
request_route {{
{prologue}
{in_dialog}
    if (is_method("OPTIONS")) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    record_route();
    $du = "sip:{far_end}";
    route(RELAY);
}}
{relay}"#,
        prologue = REQUEST_PROLOGUE,
        in_dialog = IN_DIALOG
            .replace("AUTH_HOOK", "")
            .replace("NOT_ROUTED", NOT_ROUTED_REFUSE),
        relay = RELAY_ROUTE,
    );
    cfg
}

/// One of the `KAM-*` lines a config logs.
#[derive(Clone, Debug)]
pub struct Event {
    /// `IN`, `OUT`, `REPLY`, `AUTH`, `LOOSE-ROUTE`, `DROP`, `REFUSE`.
    pub kind: String,
    /// The rest of the line after the kind.
    pub text: String,
}

impl Event {
    /// The first word of the text: the method of a request (`IN INVITE ...`), or the status
    /// of a reply (`OUT 200 INVITE ...`).
    pub fn first(&self) -> &str {
        self.text.split_whitespace().next().unwrap_or_default()
    }

    /// Whether a request or reply came from `ip` (its `from proto:ip:port` word).
    pub fn from_ip(&self, ip: IpAddr) -> bool {
        let mut words = self.text.split_whitespace();
        words.any(|w| w == "from")
            && words
                .next()
                .is_some_and(|w| w.split(':').nth(1) == Some(ip.to_string().as_str()))
    }

    /// The transport word of `from proto:ip:port` or `to proto:ip:port`.
    pub fn proto(&self) -> Option<&str> {
        let mut words = self.text.split_whitespace();
        words.find(|w| *w == "from" || *w == "to")?;
        words.next()?.split(':').next()
    }

    /// Whether a word of the line ends with `:ip:port` (`udp:127.0.0.1:5060`).
    pub fn names(&self, addr: SocketAddr) -> bool {
        let want = format!(":{}:{}", addr.ip(), addr.port());
        self.text.split_whitespace().any(|w| w.ends_with(&want))
    }
}

/// A running Kamailio; dropping it kills its process group.
pub struct Kamailio {
    process: ProcessGroup,
    pub name: String,
    /// Where it listens, UDP and TCP.
    pub addr: SocketAddr,
    pub cfg: PathBuf,
    pub log: PathBuf,
}

impl Kamailio {
    /// An address for a Kamailio on `ip` (a free port for UDP and TCP), to put in a trunk
    /// before it starts.
    pub fn reserve(ip: IpAddr) -> SocketAddr {
        SocketAddr::new(ip, free_port())
    }

    /// Writes `<name>.cfg` into the lab folder, checks it (`kamailio -c`), starts Kamailio and
    /// waits until it listens on UDP and TCP.
    pub fn start(lab: &Lab, name: &str, cfg: &KamailioConfig) -> Kamailio {
        assert!(
            std::path::Path::new(KAMAILIO_BIN).is_file(),
            "{KAMAILIO_BIN} is missing: install the kamailio package"
        );
        let run_dir = lab.path(&format!("{name}-run"));
        std::fs::create_dir_all(&run_dir).expect("create Kamailio's runtime folder");
        let cfg_path = lab.path(&format!("{name}.cfg"));
        std::fs::write(&cfg_path, cfg.render(&lab.dir, &format!("{name}-sipdump-")))
            .expect("write kamailio.cfg");
        if let Some(tls) = &cfg.tls {
            std::fs::write(lab.path(&format!("{name}-sipdump-tls.cfg")), tls.render())
                .expect("write Kamailio's tls.cfg");
        }
        let check = Command::new(KAMAILIO_BIN)
            .arg("-c")
            .arg("-f")
            .arg(&cfg_path)
            .output()
            .expect("run kamailio -c");
        assert!(
            check.status.success(),
            "{} is not a valid Kamailio config:\n{}",
            cfg_path.display(),
            String::from_utf8_lossy(&check.stderr)
        );

        let log = lab.path(&format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("create Kamailio's log");
        let mut cmd = Command::new("timeout");
        // -DD: stay in the foreground (children still fork, in this process group); -E: log to
        // stderr; small memory pools; runtime files in the lab folder, not /run.
        cmd.arg(KAMAILIO_MAX_SECONDS.to_string())
            .arg(KAMAILIO_BIN)
            .arg("-f")
            .arg(&cfg_path)
            .args(["-DD", "-E", "-n", "1", "-m", "64", "-M", "8"])
            .arg("-Y")
            .arg(&run_dir)
            .arg("-P")
            .arg(run_dir.join("kamailio.pid"))
            .arg("-w")
            .arg(&run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                log_file.try_clone().expect("clone a file handle"),
            ))
            .stderr(Stdio::from(log_file));
        let process = ProcessGroup::spawn(cmd, &format!("kamailio {name}"));
        let mut kam = Kamailio {
            process,
            name: name.to_string(),
            addr: cfg.listen,
            cfg: cfg_path,
            log,
        };
        kam.wait_listening();
        kam
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !self.process.running() {
                panic!(
                    "kamailio {} exited before it listened; its log:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            if udp_bound(self.addr.ip(), self.addr.port())
                && tcp_listening(self.addr.ip(), self.addr.port())
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "kamailio {} not listening on {} within 10 s; its log:\n{}",
                    self.name,
                    self.addr,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A URI for `user` at this Kamailio.
    pub fn uri(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.addr)
    }

    /// Whether Kamailio is still running.
    pub fn running(&mut self) -> bool {
        self.process.running()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The `KAM-*` lines logged so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.log_text()
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find("KAM-")? + 4..];
                let (kind, text) = rest.split_once(' ').unwrap_or((rest, ""));
                Some(Event {
                    kind: kind.to_string(),
                    text: text.to_string(),
                })
            })
            .collect()
    }

    /// The events of `kind` whose text starts with `first` (a method or a status code).
    pub fn events_of(&self, kind: &str, first: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.kind == kind && e.first() == first)
            .collect()
    }

    /// Every `KAM-*` line, for failure messages.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for e in self.events() {
            let _ = writeln!(s, "  {} {}", e.kind, e.text);
        }
        if s.is_empty() {
            s = format!("(no events; log tail:)\n{}\n", self.log_tail(30));
        }
        s
    }
}

/// Whether something listens on TCP `port` (on `ip` or on any address), read from
/// /proc/net/tcp (state 0A: LISTEN).
pub fn tcp_listening(ip: IpAddr, port: u16) -> bool {
    let IpAddr::V4(v4) = ip else { return false };
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let want_ip = format!("{:08X}", u32::from_le_bytes(v4.octets()));
    let want_port = format!("{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace();
        let (Some(local), Some(state)) = (cols.nth(1), cols.nth(1)) else {
            return false;
        };
        let Some((a, p)) = local.split_once(':') else {
            return false;
        };
        state == "0A" && p == want_port && (a == want_ip || a == "00000000")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_config_names_the_edge_and_the_transport() {
        let cfg = carrier_proxy(
            "127.0.0.10:5060".parse().expect("addr"),
            "127.0.0.1:5070".parse().expect("addr"),
            Transport::Tcp,
            true,
            Some(&Credentials::new("u", "r.example", "pw")),
        );
        let text = cfg.render(std::path::Path::new("/tmp"), "x-");
        assert!(text.contains("listen=tcp:127.0.0.10:5060"));
        assert!(text.contains("$du = \"sip:127.0.0.1:5070;transport=tcp\""));
        assert!(text.contains("modparam(\"uac\", \"credential\", \"u:r.example:pw\")"));
        assert!(text.contains("record_route();"));
        assert!(!text.contains("AUTH_HOOK") && !text.contains("NOT_ROUTED"));
    }

    #[test]
    fn reads_event_lines() {
        let e = Event {
            kind: "IN".into(),
            text: "ACK sip:127.0.0.1:5070 from tcp:127.0.0.11:6000 route=[<null>]".into(),
        };
        assert_eq!(e.first(), "ACK");
        assert!(e.from_ip("127.0.0.11".parse().expect("ip")));
        assert!(
            !e.from_ip("127.0.0.1".parse().expect("ip")),
            "not the R-URI's host"
        );
        assert_eq!(e.proto(), Some("tcp"));
        let out = Event {
            kind: "OUT".into(),
            text: "BYE to udp:127.0.0.1:50700".into(),
        };
        assert!(out.names("127.0.0.1:50700".parse().expect("addr")));
        assert!(!out.names("127.0.0.1:5070".parse().expect("addr")));
        assert_eq!(out.proto(), Some("udp"));
    }

    #[test]
    fn challenging_config_checks_requests_from_the_edge() {
        let cfg = challenging_carrier(
            "127.0.0.30:5060".parse().expect("addr"),
            "127.0.0.1".parse().expect("ip"),
            "127.0.0.31:5062".parse().expect("addr"),
            &Credentials::new("u", "r.example", "pw"),
        );
        let text = cfg.render(std::path::Path::new("/tmp"), "x-");
        assert!(text.contains("pv_proxy_authenticate(\"r.example\", \"pw\", \"0\")"));
        assert!(text.contains("$si == \"127.0.0.1\""));
        assert!(text.contains("$du = \"sip:127.0.0.31:5062\""));
    }
}
