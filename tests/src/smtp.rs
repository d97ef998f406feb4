//! A minimal SMTP sink on loopback for tests: it accepts every message (no TLS, no auth, the
//! subset lettre's plain transport speaks) and keeps the raw DATA of each, so a test can read what
//! customers were sent without anything being written to dispatch's state folder. A recipient
//! whose address starts with `bad` is refused for good (550), as a relay refuses an unknown mailbox;
//! every refusal is counted.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

pub struct SmtpSink {
    pub port: u16,
    messages: Arc<Mutex<Vec<String>>>,
    refusals: Arc<Mutex<usize>>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        SmtpSink::start_with(|_| {})
    }

    /// A sink that calls `after_each` with the number of messages kept so far, after keeping one
    /// and before answering for it (a relay that takes its time, or a test acting meanwhile).
    pub fn start_with(after_each: impl Fn(usize) + Send + Sync + 'static) -> SmtpSink {
        let after_each = Arc::new(after_each);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let refusals = Arc::new(Mutex::new(0));
        let (kept, refused) = (messages.clone(), refusals.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (kept, refused, after_each) = (kept.clone(), refused.clone(), after_each.clone());
                std::thread::spawn(move || {
                    let mut out = stream.try_clone().unwrap();
                    let mut lines = BufReader::new(stream);
                    let _ = out.write_all(b"220 sink ESMTP\r\n");
                    let mut line = String::new();
                    while lines.read_line(&mut line).unwrap_or(0) > 0 {
                        let verb = line.trim_end().to_ascii_uppercase();
                        let answer: &[u8] = if verb.starts_with("EHLO") || verb.starts_with("HELO") {
                            b"250 sink\r\n"
                        } else if verb.starts_with("RCPT TO:<BAD") {
                            *refused.lock().unwrap() += 1;
                            b"550 no such mailbox\r\n"
                        } else if verb == "DATA" {
                            let _ = out.write_all(b"354 go on\r\n");
                            let mut data = String::new();
                            let mut part = String::new();
                            while lines.read_line(&mut part).unwrap_or(0) > 0 && part != ".\r\n" {
                                data.push_str(&part);
                                part.clear();
                            }
                            let n = {
                                let mut kept = kept.lock().unwrap();
                                kept.push(data);
                                kept.len()
                            };
                            after_each(n);
                            b"250 kept\r\n"
                        } else if verb == "QUIT" {
                            let _ = out.write_all(b"221 bye\r\n");
                            break;
                        } else {
                            b"250 ok\r\n"
                        };
                        let _ = out.write_all(answer);
                        line.clear();
                    }
                });
            }
        });
        SmtpSink { port, messages, refusals }
    }

    /// How many recipients were refused so far.
    pub fn refusals(&self) -> usize {
        *self.refusals.lock().unwrap()
    }

    /// Every message received so far, raw.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}
