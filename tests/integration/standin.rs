//! A stand-in HTTP server for the end-to-end tests: the services a seed
//! workflow checks (health endpoints, a webhook, Prometheus's query API),
//! on loopback, answering what each test scripts. Plain HTTP/1.1 on a
//! thread of its own, so tests that run the real binary can use it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request line and the headers, as sent.
    pub head: String,
    pub method: String,
    /// The path with its query, as sent.
    pub target: String,
    pub body: String,
}

/// What to answer: given the request and how many times its path (without
/// the query) was asked before, a status and a body.
pub type Script = dyn Fn(&Seen, usize) -> (u16, String) + Send + Sync;

pub struct Standin {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Standin {
    pub fn start(script: impl Fn(&Seen, usize) -> (u16, String) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the stand-in binds to loopback");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        let script: Arc<Script> = Arc::new(script);
        std::thread::spawn(move || {
            let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
            for stream in listener.incoming().flatten() {
                let (script, kept, counts) =
                    (Arc::clone(&script), Arc::clone(&kept), Arc::clone(&counts));
                std::thread::spawn(move || {
                    let _ = answer(stream, &*script, &kept, &counts);
                });
            }
        });
        Standin { url, seen }
    }

    /// Its port on 127.0.0.1 (it serves on after the value is dropped).
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the stand-in's URL ends with its port")
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// How many requests went to `path` (the query not counted).
    pub fn count(&self, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.target.split('?').next() == Some(path))
            .count()
    }
}

fn answer(
    mut stream: std::net::TcpStream,
    script: &Script,
    kept: &Mutex<Vec<Seen>>,
    counts: &Mutex<HashMap<String, usize>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut length = 0;
    let mut head = line.clone();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        head.push_str(&header);
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let seen = Seen {
        head,
        method,
        target,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let path = seen
        .target
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let before = {
        let mut counts = counts.lock().map_err(|_| std::io::ErrorKind::Other)?;
        let n = counts.entry(path).or_insert(0);
        *n += 1;
        *n - 1
    };
    if let Ok(mut kept) = kept.lock() {
        kept.push(seen.clone());
    }
    let (status, text) = script(&seen, before);
    write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()
}

/// Prometheus's answer to an instant query whose result is one number.
pub fn prometheus_value(value: f64) -> String {
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000,"{value}"]}}]}}}}"#
    )
}
