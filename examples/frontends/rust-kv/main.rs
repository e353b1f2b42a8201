//! A key-value front end for eon, in Rust with only its standard library
//! (compiled by `rustc` when eon starts an instance; see recipe.toml).
//!
//! eon starts it with its port in $PORT and eon's REST address in
//! $EON_REST_URL (with credentials: `http://user:password@host`); the pairs
//! live in an eon table.
//!
//!   GET /           how many keys there are
//!   GET /KEY        a value
//!   PUT /KEY        set a value (the body)
//!   GET /healthz    readiness and liveness

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// Base64 (RFC 4648), for the basic authentication header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// POST a statement to eon's REST API; the JSON answer as text.
fn sql(rest: &str, statement: &str, params: &[&str]) -> Result<String, String> {
    let authority = rest.trim_start_matches("http://").trim_end_matches('/');
    // Credentials in the URL (user:password@host) become basic authentication.
    let (auth, addr) = match authority.rsplit_once('@') {
        Some((creds, addr)) => (format!("authorization: Basic {}\r\n", base64(creds.as_bytes())), addr),
        None => (String::new(), authority),
    };
    let params: Vec<String> = params.iter().map(|p| json_string(p)).collect();
    let body = format!("{{\"sql\":{},\"params\":[{}]}}", json_string(statement), params.join(","));
    let mut s = TcpStream::connect(addr).map_err(|e| format!("cannot reach eon at {addr}: {e}"))?;
    write!(s, "POST /v1/sql HTTP/1.0\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let (head, json) = answer.split_once("\r\n\r\n").ok_or("malformed answer from eon")?;
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(json.to_string());
    }
    Ok(json.to_string())
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The first value of the first row of an answer (`"rows":[[value`), as
/// raw JSON.
fn first_value(json: &str) -> Option<String> {
    let start = json.find("\"rows\":[[")? + 9;
    let rest = &json[start..];
    let end = if rest.starts_with('"') { rest[1..].find('"')? + 2 } else { rest.find([',', ']'])? };
    Some(rest[..end].to_string())
}

fn handle(mut stream: TcpStream, rest: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/").to_string());
    let mut length = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).to_string();
    let (status, text) = match (method, path.as_str()) {
        (_, "/healthz") => (200, "ok\n".to_string()),
        ("GET", "/") => match sql(rest, "SELECT count(*) FROM kv", &[]) {
            Ok(j) => (200, format!("rust-kv: {} keys\n", first_value(&j).unwrap_or_default())),
            Err(e) => (503, format!("eon: {e}\n")),
        },
        ("GET", p) => match sql(rest, "SELECT v FROM kv WHERE k = $1", &[&p[1..]]) {
            Ok(j) => match first_value(&j) {
                Some(v) => (200, format!("{}\n", v.trim_matches('"'))),
                None => (404, "no such key\n".to_string()),
            },
            Err(e) => (503, format!("eon: {e}\n")),
        },
        ("PUT", p) => {
            let key = &p[1..];
            let r = sql(rest, "DELETE FROM kv WHERE k = $1", &[key])
                .and_then(|_| sql(rest, "INSERT INTO kv (k, v) VALUES ($1, $2)", &[key, body.trim()]));
            match r {
                Ok(_) => (200, "stored\n".to_string()),
                Err(e) => (503, format!("eon: {e}\n")),
            }
        }
        _ => (404, "not found\n".to_string()),
    };
    write!(stream, "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}", text.len())
}

fn main() {
    let port = std::env::var("PORT").expect("PORT is set by eon");
    let rest = std::env::var("EON_REST_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    for _ in 0..30 {
        if sql(&rest, "CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v text)", &[]).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("PORT is a number"))).expect("bind $PORT");
    for stream in listener.incoming().flatten() {
        let rest = rest.clone();
        std::thread::spawn(move || {
            let _ = handle(stream, &rest);
        });
    }
}
