//! The one HTTP stand-in of the unit tests: a loopback HTTP/1.1 server that
//! answers what each test scripts, as raw bytes, so that a test can make it
//! misbehave (a redirect elsewhere, a body longer than its length, silence)
//! as easily as answer 200. Every request it read is kept.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) struct Standin {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub(crate) url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Standin {
    /// Answers each request with `answer(request, how many came before)`:
    /// the request as text (head and body), the answer as the bytes sent.
    pub(crate) async fn raw(
        answer: impl Fn(&str, usize) -> Vec<u8> + Send + Sync + 'static,
    ) -> Standin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the stand-in binds a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let answer = Arc::clone(&answer);
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else {
                        return;
                    };
                    let before = {
                        let mut kept = kept.lock().expect("the requests");
                        kept.push(request.clone());
                        kept.len() - 1
                    };
                    let _ = socket.write_all(&answer(&request, before)).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Standin { url, seen }
    }

    /// Answers each request with `answer(request, how many came before)`:
    /// a status and a JSON body.
    pub(crate) async fn answering(
        answer: impl Fn(&str, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> Standin {
        Standin::raw(move |request, before| {
            let (status, body) = answer(request, before);
            response(status, &body)
        })
        .await
    }

    /// The requests read so far, in the order they came.
    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("the requests").clone()
    }
}

/// An answer with `status` and a JSON `body`, the connection closed after.
pub(crate) fn response(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The head, then as much body as its `content-length` says.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<String> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        request.extend_from_slice(&buf[..n]);
        // Counted in bytes, as `content-length` counts.
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]);
            let length = head
                .lines()
                .find_map(|l| {
                    let l = l.to_ascii_lowercase();
                    l.strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                })
                .unwrap_or(0);
            if request.len() - (end + 4) >= length {
                return Some(String::from_utf8_lossy(&request).into_owned());
            }
        }
    }
}
