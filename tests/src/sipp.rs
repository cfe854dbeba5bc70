//! sipp as carrier and as platform. Scenarios are XML files under `tests/scenarios/` with
//! `{{NAME}}` placeholders that a test fills in; each run traces every message it sent and
//! received (`-trace_msg`), and the test asserts on those messages.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::sip::SipMsg;
use crate::{Lab, ProcessGroup, free_port, free_ports, udp_bound};

/// What placeholders are when a test does not say.
const DEFAULTS: &[(&str, &str)] = &[
    ("HOLD_MS", "200"),
    ("RING_MS", "0"),
    ("PDD_MS", "0"),
    ("HEADERS", ""),
    ("MAX_FORWARDS", "70"),
    ("FROM_NAME", "Caller"),
    ("FROM_USER", "+6421555123"),
    (
        "WAIT_BEFORE_CANCEL",
        "<recv response=\"100\" optional=\"true\"/>\n<recv response=\"180\"/>",
    ),
    ("CANCEL_AFTER_MS", "300"),
    ("REASON", "Refused"),
];

/// The folder of the scenario templates.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Fills in a scenario template and writes it to the lab folder. A line that is only a
/// placeholder disappears when the value is empty (sipp would end the headers there); a value
/// may hold several header lines separated by `\n`.
pub fn scenario(lab: &Lab, template: &str, vars: &[(&str, &str)]) -> PathBuf {
    let src = scenarios_dir().join(template);
    let text =
        std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("scenario {}: {e}", src.display()));
    let mut values: BTreeMap<String, String> = DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in vars {
        values.insert(k.to_string(), v.to_string());
    }
    if let (false, Some(ruri)) = (values.contains_key("TO_URI"), values.get("RURI").cloned()) {
        values.insert("TO_URI".into(), ruri);
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}"))
            && let Some(v) = values.get(name)
        {
            for l in v.lines().filter(|l| !l.trim().is_empty()) {
                out.push_str(l);
                out.push('\n');
            }
            continue;
        }
        let mut l = line.to_string();
        for (k, v) in &values {
            l = l.replace(&format!("{{{{{k}}}}}"), v);
        }
        out.push_str(&l);
        out.push('\n');
    }
    if let Some(i) = out.find("{{") {
        let rest = &out[i..];
        let end = rest.find("}}").map_or(rest.len(), |e| e + 2);
        panic!("scenario {template}: no value for {}", &rest[..end]);
    }
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dest = lab.path(&format!("{}-{seq}.xml", template.trim_end_matches(".xml")));
    std::fs::write(&dest, out).expect("write the scenario");
    dest
}

/// A sipp run being set up.
pub struct SippBuilder<'l> {
    lab: &'l Lab,
    name: String,
    scenario: PathBuf,
    local: SocketAddr,
    target: Option<SocketAddr>,
    calls: u32,
    timeout_secs: u64,
    extra: Vec<String>,
}

impl<'l> SippBuilder<'l> {
    /// Calls to place (UAC) or answer (UAS) before sipp exits (`-m`).
    pub fn calls(mut self, n: u32) -> Self {
        self.calls = n;
        self
    }

    /// sipp's global timeout (`-timeout`, also the exit status when reached).
    pub fn timeout_secs(mut self, s: u64) -> Self {
        self.timeout_secs = s;
        self
    }

    /// More sipp options (e.g. `-rtp_echo`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Starts sipp. A UAS is waited for until its port is bound, so what is sent to it next
    /// is not lost.
    pub fn start(self) -> Sipp {
        let trace = self.lab.path(&format!("{}.msg", self.name));
        let errors = self.lab.path(&format!("{}.err", self.name));
        let output = self.lab.path(&format!("{}.out", self.name));
        let out_file = std::fs::File::create(&output).expect("create sipp output file");
        let err_file = out_file.try_clone().expect("clone a file handle");
        let mut cmd = Command::new("timeout");
        // The outer bound: sipp's own -timeout plus a margin.
        cmd.arg((self.timeout_secs + 10).to_string())
            .arg("sipp")
            .arg("-sf")
            .arg(&self.scenario)
            .args(["-i", &self.local.ip().to_string()])
            .args(["-p", &self.local.port().to_string()]);
        if let Some(t) = self.target {
            cmd.arg(t.to_string());
        }
        cmd.args(["-m", &self.calls.to_string()])
            .args(["-timeout", &format!("{}s", self.timeout_secs)])
            .arg("-timeout_error")
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&trace)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&errors)
            .arg("-nostdin")
            .args(&self.extra)
            .args(["-cp", &free_port().to_string()])
            .args(["-mp", &free_ports(6).to_string()])
            .current_dir(&self.lab.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_file))
            .stderr(Stdio::from(err_file));
        let process = ProcessGroup::spawn(cmd, &format!("sipp {}", self.name));
        let mut sipp = Sipp {
            name: self.name,
            process,
            local: self.local,
            trace,
            errors,
            output,
            timeout_secs: self.timeout_secs,
        };
        if self.target.is_none() {
            sipp.wait_bound();
        }
        sipp
    }

    /// Starts sipp and waits for it to finish.
    pub fn run(self) -> SippRun {
        self.start().wait()
    }
}

/// A running sipp; dropping it kills it.
pub struct Sipp {
    pub name: String,
    process: ProcessGroup,
    pub local: SocketAddr,
    trace: PathBuf,
    errors: PathBuf,
    output: PathBuf,
    timeout_secs: u64,
}

impl Sipp {
    /// sipp calling `target` from `local_ip` with the given (instantiated) scenario.
    pub fn uac<'l>(
        lab: &'l Lab,
        name: &str,
        scenario: PathBuf,
        local_ip: IpAddr,
        target: SocketAddr,
    ) -> SippBuilder<'l> {
        SippBuilder {
            lab,
            name: name.to_string(),
            scenario,
            local: SocketAddr::new(local_ip, free_port()),
            target: Some(target),
            calls: 1,
            timeout_secs: 10,
            extra: vec![],
        }
    }

    /// sipp answering on `local_ip` (a fresh port; see [`Sipp::local`]).
    pub fn uas<'l>(
        lab: &'l Lab,
        name: &str,
        scenario: PathBuf,
        local_ip: IpAddr,
    ) -> SippBuilder<'l> {
        SippBuilder {
            lab,
            name: name.to_string(),
            scenario,
            local: SocketAddr::new(local_ip, free_port()),
            target: None,
            calls: 1,
            timeout_secs: 10,
            extra: vec![],
        }
    }

    /// A UAS's address, to put in a trunk as destination or target, before starting it.
    pub fn reserve(local_ip: IpAddr) -> SocketAddr {
        SocketAddr::new(local_ip, free_port())
    }

    /// Like [`Sipp::uas`], on an address reserved with [`Sipp::reserve`].
    pub fn uas_at<'l>(
        lab: &'l Lab,
        name: &str,
        scenario: PathBuf,
        local: SocketAddr,
    ) -> SippBuilder<'l> {
        SippBuilder {
            local,
            ..Self::uas(lab, name, scenario, local.ip())
        }
    }

    /// A platform or carrier that answers every call with 200 and waits for the BYE
    /// (`uas_answer.xml`), on `local`.
    pub fn answering<'l>(lab: &'l Lab, name: &str, local: SocketAddr) -> SippBuilder<'l> {
        Self::uas_at(lab, name, scenario(lab, "uas_answer.xml", &[]), local)
    }

    fn wait_bound(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !udp_bound(self.local.ip(), self.local.port()) {
            if !self.process.running() || std::time::Instant::now() >= deadline {
                let run = self.finish();
                panic!(
                    "sipp {} did not bind {}:\n{}",
                    run.name,
                    self.local,
                    run.report()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The messages traced so far (for polling a UAS while it runs).
    pub fn messages(&self) -> Vec<SipMsg> {
        parse_trace(&std::fs::read_to_string(&self.trace).unwrap_or_default())
    }

    /// Whether it has received a request with this method so far.
    pub fn has_received(&self, method: &str) -> bool {
        self.messages()
            .iter()
            .any(|m| !m.sent && m.method() == Some(method))
    }

    /// Waits for sipp to exit (its own -timeout plus a margin), kills it when it does not,
    /// and returns what it did.
    pub fn wait(mut self) -> SippRun {
        let limit = Duration::from_secs(self.timeout_secs + 5);
        self.process.wait_for(limit);
        self.finish()
    }

    /// Stops sipp now (for a UAS that must have seen nothing) and returns what it did.
    pub fn stop(mut self) -> SippRun {
        self.finish()
    }

    fn finish(&mut self) -> SippRun {
        let code = match self.process.child.try_wait() {
            Ok(Some(s)) => s.code(),
            _ => {
                self.process.kill();
                None
            }
        };
        SippRun {
            name: self.name.clone(),
            code,
            messages: parse_trace(&std::fs::read_to_string(&self.trace).unwrap_or_default()),
            errors: std::fs::read_to_string(&self.errors).unwrap_or_default(),
            output: std::fs::read_to_string(&self.output).unwrap_or_default(),
        }
    }
}

/// What a sipp run did.
#[derive(Debug)]
pub struct SippRun {
    pub name: String,
    /// Exit status (0: every call succeeded); None when it had to be killed.
    pub code: Option<i32>,
    /// Every message sent and received, in order.
    pub messages: Vec<SipMsg>,
    pub errors: String,
    pub output: String,
}

impl SippRun {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the messages and errors unless every call succeeded.
    pub fn assert_ok(&self) {
        assert!(self.ok(), "sipp {} failed:\n{}", self.name, self.report());
    }

    /// The exchange as one line per message, then sipp's errors.
    pub fn report(&self) -> String {
        let mut s = format!("exit status {:?}\n", self.code);
        for m in &self.messages {
            s.push_str("  ");
            s.push_str(&m.summary());
            s.push('\n');
        }
        let errors: Vec<&str> = self
            .errors
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(20)
            .collect();
        if !errors.is_empty() {
            s.push_str("sipp errors:\n");
            s.push_str(&errors.join("\n"));
            s.push('\n');
        }
        s
    }

    pub fn received(&self) -> impl Iterator<Item = &SipMsg> {
        self.messages.iter().filter(|m| !m.sent)
    }

    pub fn sent(&self) -> impl Iterator<Item = &SipMsg> {
        self.messages.iter().filter(|m| m.sent)
    }

    /// Received requests with this method.
    pub fn requests(&self, method: &str) -> Vec<&SipMsg> {
        self.received()
            .filter(|m| m.method() == Some(method))
            .collect()
    }

    /// The first received request with this method, or a panic that shows the exchange.
    pub fn request(&self, method: &str) -> &SipMsg {
        self.requests(method).into_iter().next().unwrap_or_else(|| {
            panic!(
                "sipp {} received no {method}:\n{}",
                self.name,
                self.report()
            )
        })
    }

    /// The first received response with `code` to `method`.
    pub fn response(&self, code: u16, method: &str) -> &SipMsg {
        self.received()
            .find(|m| m.code() == Some(code) && m.cseq_method() == Some(method))
            .unwrap_or_else(|| {
                panic!(
                    "sipp {} received no {code} for {method}:\n{}",
                    self.name,
                    self.report()
                )
            })
    }

    /// The first received final response (>= 200) to `method`.
    pub fn final_response(&self, method: &str) -> Option<&SipMsg> {
        self.received()
            .find(|m| m.code().is_some_and(|c| c >= 200) && m.cseq_method() == Some(method))
    }
}

/// Parses a sipp `-trace_msg` file: blocks that start with a dashed line, then
/// `UDP message sent (N bytes):` or `UDP message received [N] bytes :`, a blank line and the
/// message.
pub fn parse_trace(text: &str) -> Vec<SipMsg> {
    const SEP: &str = "-----------------------------------------------";
    let mut out = Vec::new();
    for block in text.split(SEP).skip(1) {
        // First line: the time stamp; second: what happened.
        let mut parts = block.splitn(3, '\n');
        let _stamp = parts.next();
        let what = parts.next().unwrap_or_default();
        let rest = parts.next().unwrap_or_default();
        let sent = what.contains("message sent");
        let received = what.contains("message received");
        if !sent && !received {
            continue;
        }
        let len: Option<usize> = what
            .split(['(', '[', ']', ')'])
            .nth(1)
            .and_then(|n| n.split_whitespace().next())
            .and_then(|n| n.parse().ok());
        let body = rest.strip_prefix('\n').unwrap_or(rest);
        let bytes = body.as_bytes();
        let msg = match len {
            Some(n) if n <= bytes.len() => String::from_utf8_lossy(&bytes[..n]).into_owned(),
            _ => body.trim_end().to_string(),
        };
        if let Some(m) = SipMsg::parse(&msg, sent) {
            out.push(m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_sipp_trace() {
        let text = "----------------------------------------------- 2026-11-22 05:35:53.818196\nUDP message sent (20 bytes):\n\nOPTIONS sip:a SIP/2.0\n\n----------------------------------------------- 2026-11-22 05:35:53.818897\nUDP message received [43] bytes :\n\nSIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\nVia: x\r\n\r\n\n\n";
        let m = parse_trace(text);
        assert_eq!(m.len(), 2);
        assert!(m[0].sent);
        assert_eq!(m[0].method(), Some("OPTIONS"));
        assert!(!m[1].sent);
        assert_eq!(m[1].code(), Some(200));
        assert_eq!(m[1].cseq_method(), Some("OPTIONS"));
    }
}
