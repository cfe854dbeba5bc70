//! [baresip](https://github.com/baresip/baresip) 1.0 as a real SIP phone on either side of the
//! edge: it sends a sine tone (`ausine`) as its microphone, records what it hears (`sndfile`
//! dumps the decoded audio to a WAV file), answers by itself when told to, and is driven over
//! `ctrl_tcp` (netstring JSON commands in, call events out). Every SIP message it sends and
//! receives is traced (`-s`) into its log, which the test reads back as [`SipMsg`]s.
//!
//! The audio check is done here too: a WAV reader and a Goertzel scan for the dominant
//! frequency, so a test asserts that the tone one phone sent is the tone the other one heard.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::rtp::sdp_rtp_addr;
use crate::sip::SipMsg;
use crate::{Edge, assert_eventually};
use crate::{Lab, ProcessGroup, eventually, free_ports, udp_bound};

/// The address baresip names in its SDP. baresip 1.0 binds its RTP sockets to 0.0.0.0, so the
/// kernel sends its RTP from 127.0.0.1 whatever its SIP address; the SDP must name that source
/// or the edge's latching (RTP only from the SDP's address) rightly drops it.
pub const MEDIA_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The longest a baresip may live: a safety net (`timeout`) should the test process be killed
/// before its guards run.
const MAX_SECONDS: u64 = 90;

/// How long baresip may take to start (bind SIP, load modules, accept the control connection).
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A baresip being set up.
pub struct BaresipBuilder<'l> {
    lab: &'l Lab,
    name: String,
    sip_ip: IpAddr,
    user: String,
    tone_hz: u32,
    auto_answer: bool,
    /// baresip's `mediaenc` for the account (`srtp`, `srtp-mand`).
    mediaenc: Option<String>,
    /// The CA file it checks TLS servers with (`sip_cafile`).
    ca: Option<PathBuf>,
}

impl BaresipBuilder<'_> {
    /// SRTP with SDES keys (baresip's `srtp` module): `srtp-mand` offers RTP/SAVP and takes
    /// nothing else, `srtp` offers RTP/AVP with a=crypto and falls back to RTP.
    pub fn srtp(mut self, mediaenc: &str) -> Self {
        self.mediaenc = Some(mediaenc.to_string());
        self
    }

    /// The CA it trusts for SIP over TLS (`sip_cafile`).
    pub fn tls_ca(mut self, ca: &Path) -> Self {
        self.ca = Some(ca.to_path_buf());
        self
    }

    /// The frequency of the sine tone it sends (10-20000 Hz; default 1000).
    pub fn tone(mut self, hz: u32) -> Self {
        self.tone_hz = hz;
        self
    }

    /// Answers incoming calls at once (`;answermode=auto` on its account).
    pub fn auto_answer(mut self) -> Self {
        self.auto_answer = true;
        self
    }

    /// Writes its config folder, starts it and waits until it takes calls and commands.
    pub fn start(self) -> Baresip {
        let dir = self.lab.path(&self.name);
        let snd = dir.join("snd");
        std::fs::create_dir_all(&snd).expect("create baresip's config folder");
        // SIP (UDP and TCP), SIP over TLS (SIP port + 1, which baresip always opens), the
        // control socket, then RTP/RTCP pairs.
        let base = free_ports(16);
        let sip = SocketAddr::new(self.sip_ip, base);
        let ctrl = SocketAddr::new(self.sip_ip, base + 2);
        let rtp_ports = (base + 4, base + 15);
        let config = format!(
            "\
poll_method\tepoll
sip_listen\t{sip}
net_interface\t{MEDIA_IP}
rtp_ports\t{rtp_lo}-{rtp_hi}
audio_source\tausine,{tone}
ausrc_srate\t48000
ausrc_channels\t2
call_local_timeout\t30
module_path\t/usr/lib/baresip/modules
module\tg711.so
module\tausine.so
module\tsndfile.so
{srtp_module}{cafile}module_app\taccount.so
module_app\tmenu.so
module_app\tctrl_tcp.so
snd_path\t{snd}
ctrl_tcp_listen\t{ctrl}
",
            rtp_lo = rtp_ports.0,
            rtp_hi = rtp_ports.1,
            tone = self.tone_hz,
            snd = snd.display(),
            srtp_module = if self.mediaenc.is_some() {
                "module\tsrtp.so\n"
            } else {
                ""
            },
            cafile = self
                .ca
                .as_ref()
                .map(|p| format!("sip_cafile\t{}\n", p.display()))
                .unwrap_or_default(),
        );
        // No audio player module at all: baresip then plays nothing, and `sndfile` still dumps
        // every decoded frame. ausine only makes 48 kHz stereo; baresip resamples it for G.711.
        // ctrl_tcp comes after the account: once it listens, the account exists.
        std::fs::write(dir.join("config"), config).expect("write baresip's config");
        let answer = if self.auto_answer {
            ";answermode=auto"
        } else {
            ""
        };
        // regint=0: no REGISTER, the edge takes no registrations.
        let mediaenc = self
            .mediaenc
            .as_ref()
            .map(|m| format!(";mediaenc={m}"))
            .unwrap_or_default();
        let account = format!(
            "<sip:{}@{}>;regint=0{answer}{mediaenc}\n",
            self.user, self.sip_ip
        );
        std::fs::write(dir.join("accounts"), account).expect("write baresip's accounts");

        let log = self.lab.path(&format!("{}.log", self.name));
        let log_file = std::fs::File::create(&log).expect("create baresip's log");
        let err_file = log_file.try_clone().expect("clone a file handle");
        let mut cmd = Command::new("timeout");
        cmd.arg(MAX_SECONDS.to_string())
            .arg("baresip")
            .arg("-f")
            .arg(&dir)
            .arg("-s")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(err_file));
        let mut process = ProcessGroup::spawn(cmd, &format!("baresip {}", self.name));

        let connected = eventually(START_TIMEOUT, || {
            if !process.running() {
                return Some(None);
            }
            let stream = TcpStream::connect_timeout(&ctrl, Duration::from_millis(200)).ok()?;
            udp_bound(sip.ip(), sip.port()).then_some(Some(stream))
        });
        let stream = match connected {
            Some(Some(s)) => s,
            _ => panic!(
                "baresip {} did not start (SIP {sip}, control {ctrl}) within {START_TIMEOUT:?}; \
                 its log:\n{}",
                self.name,
                tail(&log, 40)
            ),
        };
        let messages = Arc::new(Mutex::new(Vec::new()));
        let reader = stream.try_clone().expect("clone the control connection");
        let sink = messages.clone();
        std::thread::spawn(move || read_netstrings(reader, &sink));
        Baresip {
            process,
            name: self.name,
            sip,
            ctrl: Mutex::new(stream),
            messages,
            next_token: AtomicU32::new(1),
            snd,
            log,
        }
    }
}

/// A running baresip; dropping it kills it.
pub struct Baresip {
    process: ProcessGroup,
    pub name: String,
    /// Its SIP address (UDP).
    pub sip: SocketAddr,
    ctrl: Mutex<TcpStream>,
    /// Everything ctrl_tcp sent: command responses and events, in order.
    messages: Arc<Mutex<Vec<Value>>>,
    next_token: AtomicU32,
    snd: PathBuf,
    pub log: PathBuf,
}

impl Baresip {
    /// A baresip whose account is `<sip:user@sip_ip>`, listening on `sip_ip`.
    pub fn phone<'l>(lab: &'l Lab, name: &str, sip_ip: IpAddr, user: &str) -> BaresipBuilder<'l> {
        BaresipBuilder {
            lab,
            name: name.to_string(),
            sip_ip,
            user: user.to_string(),
            tone_hz: 1000,
            auto_answer: false,
            mediaenc: None,
            ca: None,
        }
    }

    /// Runs a command (a `menu` command's long name) and returns its response; panics when
    /// baresip refuses it or does not answer.
    pub fn command(&self, command: &str, params: &str) -> Value {
        let token = self.next_token.fetch_add(1, Ordering::SeqCst).to_string();
        let body = json!({"command": command, "params": params, "token": token}).to_string();
        {
            let mut s = self.ctrl.lock().unwrap_or_else(|e| e.into_inner());
            write!(s, "{}:{body},", body.len())
                .unwrap_or_else(|e| panic!("baresip {}: send `{command}`: {e}", self.name));
        }
        let resp = eventually(Duration::from_secs(5), || {
            self.messages()
                .into_iter()
                .find(|m| m["response"] == true && m["token"] == token.as_str())
        })
        .unwrap_or_else(|| {
            panic!(
                "baresip {} did not answer `{command} {params}`; its log:\n{}",
                self.name,
                self.log_tail(40)
            )
        });
        assert!(
            resp["ok"] == true,
            "baresip {} refused `{command} {params}`: {resp}",
            self.name
        );
        resp
    }

    /// Places a call to `uri`.
    pub fn dial(&self, uri: &str) {
        self.command("dial", uri);
    }

    /// Hangs up its call (a BYE once answered).
    pub fn hangup(&self) {
        self.command("hangup", "");
    }

    /// Every message ctrl_tcp sent so far.
    pub fn messages(&self) -> Vec<Value> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The call events so far (`CALL_ESTABLISHED`, `CALL_CLOSED`, ...).
    pub fn events(&self) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| m["event"] == true)
            .collect()
    }

    /// Waits for the first event of `kind`, at most `timeout`.
    pub fn wait_event(&mut self, kind: &str, timeout: Duration) -> Value {
        let found = eventually(timeout, || {
            self.events().into_iter().find(|e| e["type"] == kind)
        });
        found.unwrap_or_else(|| {
            let seen: Vec<String> = self
                .events()
                .iter()
                .map(|e| format!("{} {}", e["type"], e["param"]))
                .collect();
            panic!(
                "baresip {} had no {kind} within {timeout:?} (running: {}); events: {seen:?}\n\
                 its log:\n{}",
                self.name,
                self.process.running(),
                self.log_tail(60)
            )
        })
    }

    /// The SIP messages it sent and received, in order (from its `-s` trace).
    pub fn sip_trace(&self) -> Vec<SipMsg> {
        parse_trace(
            &std::fs::read_to_string(&self.log).unwrap_or_default(),
            self.sip,
        )
    }

    /// One line per traced message, for failure messages.
    pub fn trace_summary(&self) -> String {
        self.sip_trace()
            .iter()
            .map(SipMsg::summary)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The WAV file of what it heard in its (only) call, once `sndfile` opened it.
    pub fn recording_path(&self) -> Option<PathBuf> {
        recording_in(&self.snd)
    }

    /// Seconds of audio heard so far (the file grows while the call lasts).
    pub fn heard_seconds(&self) -> f64 {
        self.recording_path()
            .and_then(|p| Wav::read(&p).ok())
            .map_or(0.0, |w| w.seconds())
    }

    /// What it heard, once baresip closed the file (its header then counts every sample).
    pub fn recording(&self) -> Wav {
        let complete = eventually(Duration::from_secs(5), || {
            let wav = Wav::read(&self.recording_path()?).ok()?;
            wav.complete.then_some(wav)
        });
        complete.unwrap_or_else(|| {
            panic!(
                "baresip {} left no complete recording in {} ({:?}); its log:\n{}",
                self.name,
                self.snd.display(),
                self.recording_path()
                    .map(|p| Wav::read(&p).map(|w| (w.seconds(), w.complete))),
                self.log_tail(40)
            )
        })
    }

    /// Starts sampling how much audio it has heard (its recording's size) every 10 ms, until
    /// [`HearingLog::finish`]: where the recording stops growing, no RTP reached the phone.
    pub fn log_hearing(&self) -> HearingLog {
        let stop = Arc::new(AtomicBool::new(false));
        let (snd, flag) = (self.snd.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            // The recording, its data's offset and its bytes per second, once known.
            let mut file: Option<(PathBuf, u64, f64)> = None;
            while !flag.load(Ordering::Relaxed) {
                if file.is_none() {
                    file = recording_in(&snd).and_then(|p| {
                        let bytes = std::fs::read(&p).ok()?;
                        let wav = Wav::parse(&bytes).ok()?;
                        let offset = (bytes.len() - wav.samples.len() * 2) as u64;
                        let rate = f64::from(wav.rate) * f64::from(wav.channels.max(1)) * 2.0;
                        (rate > 0.0).then_some((p, offset, rate))
                    });
                }
                let heard = file.as_ref().map_or(0.0, |(p, offset, rate)| {
                    std::fs::metadata(p)
                        .map_or(0.0, |m| m.len().saturating_sub(*offset) as f64 / rate)
                });
                samples.push((Instant::now(), heard));
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        });
        HearingLog { stop, thread }
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }

    pub fn running(&mut self) -> bool {
        self.process.running()
    }
}

/// The last WAV file `sndfile` opened in `snd` for what a phone heard.
fn recording_in(snd: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(snd)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .collect();
    found.sort();
    found.pop()
}

/// A thread sampling what a phone heard; see [`Baresip::log_hearing`].
pub struct HearingLog {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, f64)>>,
}

impl HearingLog {
    /// Stops sampling and returns the samples.
    pub fn finish(self) -> Hearing {
        self.stop.store(true, Ordering::Relaxed);
        Hearing {
            samples: self.thread.join().expect("the hearing sampler"),
        }
    }
}

/// Seconds of audio a phone had heard, sampled every 10 ms: `(when, seconds heard by then)`.
/// baresip 1.0 decodes (and `sndfile` records) each RTP packet as it arrives, with no loss
/// concealment for G.711, so the recording grows only while RTP reaches the phone.
#[derive(Clone, Debug)]
pub struct Hearing {
    pub samples: Vec<(Instant, f64)>,
}

impl Hearing {
    /// Seconds heard by `at` (the last sample taken at or before it).
    pub fn heard_at(&self, at: Instant) -> f64 {
        self.samples
            .iter()
            .take_while(|(t, _)| *t <= at)
            .last()
            .map_or(0.0, |(_, h)| *h)
    }

    /// The moments the recording grew.
    fn growths(&self) -> impl Iterator<Item = Instant> + '_ {
        self.samples
            .windows(2)
            .filter(|w| w[1].1 > w[0].1)
            .map(|w| w[1].0)
    }

    /// The longest time between two growths of the recording (within 10 ms), and when it
    /// ended: the longest the phone heard nothing.
    pub fn longest_silence(&self) -> (Duration, Option<Instant>) {
        let growths: Vec<Instant> = self.growths().collect();
        growths
            .windows(2)
            .map(|w| (w[1] - w[0], Some(w[1])))
            .max_by_key(|(d, _)| *d)
            .unwrap_or((Duration::ZERO, None))
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Reads ctrl_tcp's netstrings (`<length>:<json>,`) until the connection closes.
fn read_netstrings(mut stream: TcpStream, sink: &Mutex<Vec<Value>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while let Some((value, used)) = next_netstring(&buf) {
            buf.drain(..used);
            if let Some(v) = value {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(v);
            }
        }
    }
}

/// The first netstring of `buf` as JSON (None inside when it is not JSON) and the bytes it
/// took; None when it is not all there yet.
fn next_netstring(buf: &[u8]) -> Option<(Option<Value>, usize)> {
    let colon = buf.iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&buf[..colon])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let end = colon + 1 + len;
    if buf.len() <= end {
        return None;
    }
    let value = serde_json::from_slice(&buf[colon + 1..end]).ok();
    // The trailing comma.
    Some((value, end + 1))
}

/// Parses baresip's `-s` trace: each message follows a line `UDP <src> -> <dst>` and ends at
/// the colour reset `ESC[;m`. `me` is its own SIP address (what it sent).
pub fn parse_trace(log: &str, me: SocketAddr) -> Vec<SipMsg> {
    let mut out = Vec::new();
    let mut rest = log;
    while let Some((i, transport)) = ["\nUDP ", "\nTCP ", "\nTLS "]
        .iter()
        .filter_map(|t| rest.find(t).map(|i| (i, &t[1..])))
        .min()
    {
        let after = &rest[i + 1..];
        let (line, msg) = after.split_once('\n').unwrap_or((after, ""));
        let end = msg.find("\x1b[;m").unwrap_or(msg.len());
        let src = line
            .trim_start_matches(transport)
            .split(" -> ")
            .next()
            .unwrap_or_default()
            .trim();
        let text = &msg[..end];
        let sent = if transport == "UDP " {
            src == me.to_string()
        } else {
            // A connection's local end is an ephemeral port: tell the direction by the top Via,
            // which is baresip's own on the requests it sends and the responses it receives.
            SipMsg::parse(text, false).is_some_and(|m| {
                m.header("Via")
                    .unwrap_or_default()
                    .contains(&me.to_string())
                    == m.code().is_none()
            })
        };
        if let Some(m) = SipMsg::parse(text, sent) {
            out.push(m);
        }
        rest = &msg[end..];
    }
    out
}

// ---- audio -----------------------------------------------------------------------------------

/// A PCM 16-bit WAV file as `sndfile` writes it.
#[derive(Clone, Debug)]
pub struct Wav {
    pub rate: u32,
    pub channels: u16,
    /// Interleaved samples.
    pub samples: Vec<i16>,
    /// Whether the header's data length counts every sample present (the writer closed it).
    pub complete: bool,
}

impl Wav {
    /// Reads a RIFF/WAVE file of 16-bit PCM. A file still being written (data length 0 in
    /// its header) is read up to its end, with `complete` false.
    pub fn read(path: &Path) -> Result<Wav, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(bytes: &[u8]) -> Result<Wav, String> {
        if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err("not a RIFF/WAVE file".into());
        }
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut format = None;
        let mut pos = 12;
        while pos + 8 <= bytes.len() {
            let id = &bytes[pos..pos + 4];
            let len = u32_at(pos + 4) as usize;
            let body = pos + 8;
            if id == b"fmt " {
                if body + 16 > bytes.len() {
                    return Err("short fmt chunk".into());
                }
                format = Some((
                    u16_at(body),
                    u16_at(body + 2),
                    u32_at(body + 4),
                    u16_at(body + 14),
                ));
            } else if id == b"data" {
                let Some((kind, channels, rate, bits)) = format else {
                    return Err("data before fmt".into());
                };
                if kind != 1 || bits != 16 || channels == 0 {
                    return Err(format!(
                        "not 16-bit PCM (format {kind}, {bits} bits, {channels} channels)"
                    ));
                }
                let present = (bytes.len() - body) & !1;
                let complete = len > 0 && len == present;
                let take = if len > 0 { len.min(present) } else { present };
                let samples = bytes[body..body + take]
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect();
                return Ok(Wav {
                    rate,
                    channels,
                    samples,
                    complete,
                });
            }
            // Chunks are padded to an even length.
            pos = body + len + (len & 1);
        }
        Err("no data chunk".into())
    }

    /// The first channel's samples.
    pub fn mono(&self) -> Vec<f64> {
        self.samples
            .iter()
            .step_by(usize::from(self.channels.max(1)))
            .map(|&s| f64::from(s))
            .collect()
    }

    pub fn seconds(&self) -> f64 {
        if self.rate == 0 {
            return 0.0;
        }
        self.samples.len() as f64 / f64::from(self.channels.max(1)) / f64::from(self.rate)
    }

    /// Root mean square of the first channel (0 for silence, ~23000 for a full-scale sine).
    pub fn rms(&self) -> f64 {
        let x = self.mono();
        if x.is_empty() {
            return 0.0;
        }
        (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt()
    }
}

/// The power of `samples` (taken at `rate`) at `freq` Hz, by the Goertzel recurrence: the
/// squared magnitude of one DFT term, without computing the others.
pub fn goertzel_power(samples: &[f64], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The loudest frequency of `samples` among `lo..=hi` Hz in `step` Hz steps, and the share of
/// the signal's energy it holds (about 1 for a clean sine, near 0 for noise).
pub fn dominant_frequency(samples: &[f64], rate: u32, lo: u32, hi: u32, step: u32) -> (u32, f64) {
    let mut best = (lo, 0.0f64);
    for f in (lo..=hi).step_by(step.max(1) as usize) {
        let p = goertzel_power(samples, rate, f64::from(f));
        if p > best.1 {
            best = (f, p);
        }
    }
    let energy: f64 = samples.iter().map(|x| x * x).sum();
    let n = samples.len() as f64;
    // A sine of amplitude A over N samples: |X|² = (A·N/2)², energy = A²·N/2.
    let share = if energy > 0.0 {
        2.0 * best.1 / (n * energy)
    } else {
        0.0
    };
    (best.0, share)
}

// What the interop tests check of a call between two baresips through the edge.

/// Audio each phone must have heard before the call is hung up.
pub const LISTEN_SECONDS: f64 = 2.0;
/// SIP over loopback and baresip's auto-answer take well under this.
pub const SETUP: Duration = Duration::from_secs(10);

/// `caller` dials `uri`; once both talk and each heard LISTEN_SECONDS of the other, the callee
/// hangs up. Returns when both saw the call close.
pub fn talk_then_callee_hangs_up(caller: &mut Baresip, callee: &mut Baresip, uri: &str) {
    caller.dial(uri);
    caller.wait_event("CALL_ESTABLISHED", SETUP);
    callee.wait_event("CALL_ESTABLISHED", SETUP);
    // RTP from the other side reached each phone (through the edge's relay).
    caller.wait_event("CALL_RTPESTAB", SETUP);
    callee.wait_event("CALL_RTPESTAB", SETUP);
    assert_eventually!(
        caller.heard_seconds() >= LISTEN_SECONDS && callee.heard_seconds() >= LISTEN_SECONDS,
        Duration::from_secs(15),
        "each phone hears {LISTEN_SECONDS} s of the other; the caller heard {:.2} s, the callee \
         {:.2} s",
        caller.heard_seconds(),
        callee.heard_seconds()
    );
    callee.hangup();
    let closed = caller.wait_event("CALL_CLOSED", SETUP);
    // baresip's words for "the peer sent BYE" (ECONNRESET), as opposed to a timeout or error.
    assert_eq!(
        closed["param"],
        "Connection reset by peer",
        "the caller's call ends by the callee's BYE: {closed}\n{}",
        caller.trace_summary()
    );
    callee.wait_event("CALL_CLOSED", SETUP);
}

/// `by` sent a BYE that `to` received, and each got or sent its 200.
pub fn assert_bye_crossed(by: &Baresip, to: &Baresip) {
    let sent = by.sip_trace();
    let answered = sent
        .iter()
        .any(|m| !m.sent && m.code() == Some(200) && m.cseq_method() == Some("BYE"));
    assert!(
        sent.iter().any(|m| m.sent && m.method() == Some("BYE")) && answered,
        "{} sent BYE and got 200 from the edge:\n{}",
        by.name,
        by.trace_summary()
    );
    let got = to.sip_trace();
    let answered = got
        .iter()
        .any(|m| m.sent && m.code() == Some(200) && m.cseq_method() == Some("BYE"));
    assert!(
        got.iter().any(|m| !m.sent && m.method() == Some("BYE")) && answered,
        "{} received the BYE from the edge and answered 200:\n{}",
        to.name,
        to.trace_summary()
    );
}

/// The SDP `who` received (the offer or the answer) names the edge's `ip` and a port of its
/// relay: the audio went through the edge, not phone to phone.
pub fn assert_given_edge_media(who: &Baresip, edge: &Edge, ip: IpAddr) {
    let trace = who.sip_trace();
    let addr = trace
        .iter()
        .filter(|m| !m.sent && m.body.contains("m=audio"))
        .find_map(|m| sdp_rtp_addr(&m.body))
        .unwrap_or_else(|| panic!("{} received no SDP:\n{}", who.name, who.trace_summary()));
    let (lo, hi) = edge.rtp_ports;
    assert!(
        addr.ip() == ip && (lo..=hi).contains(&addr.port()),
        "{} was given {addr}, not the edge's {ip} with a port of {lo}-{hi}",
        who.name
    );
}

/// What `who` heard is `tone_hz` (within the 10 Hz scan step), loud and clean.
pub fn assert_heard(who: &Baresip, tone_hz: u32) {
    let wav = who.recording();
    assert!(
        wav.seconds() >= LISTEN_SECONDS,
        "{} recorded {:.2} s",
        who.name,
        wav.seconds()
    );
    assert!(
        wav.rms() > 1000.0,
        "{} heard near silence (RMS {:.0})",
        who.name,
        wav.rms()
    );
    let (freq, share) = dominant_frequency(&wav.mono(), wav.rate, 100, wav.rate / 2 - 100, 10);
    assert!(
        freq.abs_diff(tone_hz) <= 10,
        "{} heard mostly {freq} Hz, not the {tone_hz} Hz the other phone sent ({:.2} s at {} Hz, \
         {:.0}% of the energy)",
        who.name,
        wav.seconds(),
        wav.rate,
        share * 100.0
    );
    eprintln!(
        "[{}] heard {freq} Hz for {:.2} s ({:.0}% of the energy, RMS {:.0})",
        who.name,
        wav.seconds(),
        share * 100.0,
        wav.rms()
    );
    // G.711 and jitter-buffer edges leave a little noise; a clean relay keeps the tone on top.
    assert!(
        share > 0.5,
        "{} heard {freq} Hz but only as {:.0}% of the energy",
        who.name,
        share * 100.0
    );
}

/// The record's media entry of the direction `from` sent (`carrier` or `platform`).
pub fn media_from<'a>(cdr: &'a Value, from: &str) -> &'a Value {
    cdr["media"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["from"] == from))
        .unwrap_or_else(|| panic!("no media entry from the {from} in the record: {cdr}"))
}

/// The record has both media directions with packets and a plausible MOS.
pub fn assert_media_scored(cdr: &Value) {
    for from in ["carrier", "platform"] {
        let m = media_from(cdr, from);
        // 50 packets a second for at least LISTEN_SECONDS.
        assert!(
            m["packets"].as_u64().unwrap_or(0) >= 100,
            "the {from}'s RTP was relayed: {m}"
        );
        let mos = m["mos"]
            .as_f64()
            .unwrap_or_else(|| panic!("the {from}'s direction has a MOS: {m}"));
        assert!(
            (3.0..=4.6).contains(&mos),
            "G.711 over loopback scores a good MOS: {m}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<f64> {
        (0..n)
            .map(|i| amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
            .collect()
    }

    #[test]
    fn finds_the_frequency_of_a_sine_and_its_share() {
        let x = sine(1000.0, 8000, 8000, 8000.0);
        let (f, share) = dominant_frequency(&x, 8000, 100, 3900, 10);
        assert_eq!(f, 1000);
        assert!((0.95..=1.05).contains(&share), "share {share}");
        // Two tones: the louder wins, with its share of the energy.
        let mix: Vec<f64> = sine(600.0, 8000, 8000, 8000.0)
            .iter()
            .zip(sine(1500.0, 8000, 8000, 4000.0))
            .map(|(a, b)| a + b)
            .collect();
        let (f, share) = dominant_frequency(&mix, 8000, 100, 3900, 10);
        assert_eq!(f, 600);
        assert!((0.75..=0.85).contains(&share), "share {share}");
    }

    #[test]
    fn reads_a_wav_being_written_and_a_closed_one() {
        let mut head = Vec::new();
        head.extend_from_slice(b"RIFF\x00\x00\x00\x00WAVEfmt ");
        head.extend_from_slice(&16u32.to_le_bytes());
        head.extend_from_slice(&1u16.to_le_bytes());
        head.extend_from_slice(&1u16.to_le_bytes());
        head.extend_from_slice(&8000u32.to_le_bytes());
        head.extend_from_slice(&16000u32.to_le_bytes());
        head.extend_from_slice(&2u16.to_le_bytes());
        head.extend_from_slice(&16u16.to_le_bytes());
        head.extend_from_slice(b"data");
        let samples: Vec<u8> = [1i16, -2, 3, -4]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let open = [&head[..], &0u32.to_le_bytes(), &samples].concat();
        let w = Wav::parse(&open).expect("an open file parses");
        assert_eq!(w.samples, vec![1, -2, 3, -4]);
        assert!(!w.complete);
        let closed = [&head[..], &8u32.to_le_bytes(), &samples].concat();
        let w = Wav::parse(&closed).expect("a closed file parses");
        assert!(w.complete);
        assert_eq!(w.rate, 8000);
        assert_eq!(w.seconds(), 4.0 / 8000.0);
    }

    #[test]
    fn parses_netstrings_and_the_sip_trace() {
        let buf = b"11:{\"event\":1},5:{\"a\"";
        let (v, used) = next_netstring(buf).expect("the first netstring is complete");
        assert_eq!(v, Some(json!({"event": 1})));
        assert_eq!(used, 15);
        assert!(next_netstring(&buf[used..]).is_none(), "the second is not");

        let me: SocketAddr = "127.0.0.10:5060".parse().expect("an address");
        let log = "ready\n\x1b[36;1m#\nUDP 127.0.0.10:5060 -> 127.0.0.1:5080\nBYE sip:a@b SIP/2.0\nCSeq: 2 BYE\n\n\x1b[;m\n\x1b[36;1m#\nUDP 127.0.0.1:5080 -> 127.0.0.10:5060\nSIP/2.0 200 OK\nCSeq: 2 BYE\nContent-Length: 0\n\n\x1b[;m\n";
        let msgs = parse_trace(log, me);
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].sent && msgs[0].method() == Some("BYE"));
        assert!(!msgs[1].sent && msgs[1].code() == Some(200));
        assert_eq!(msgs[1].cseq_method(), Some("BYE"));
    }
}
