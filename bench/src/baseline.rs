//! The baseline: the least a fan-out server can do. One thread reads the
//! source; every `chunk` interval another writes what arrived, from memory,
//! to every client socket with one non-blocking `write` each. No HTTP
//! library, no per-packet work, no allocation in the common case. Its cost
//! is what the kernel charges for moving the bytes; no proxy can beat it,
//! and the ratio to it is a proxy's distance from that limit.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ts::PACKET;

/// A client, and what it has not been able to take yet.
struct Client {
    socket: TcpStream,
    pending: Vec<u8>,
}

/// Runs the baseline server until killed.
pub fn run(
    listen: &str,
    source: &str,
    chunk: Duration,
    queue_packets: usize,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)?;
    let clients: Arc<Mutex<Vec<Client>>> = Arc::default();
    let arrived: Arc<Mutex<Vec<u8>>> = Arc::default();

    let accepted = Arc::clone(&clients);
    std::thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            if let Ok(client) = greet(socket) {
                accepted.lock().unwrap().push(client);
            }
        }
    });

    let mut upstream = TcpStream::connect(source)?;
    let incoming = Arc::clone(&arrived);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = upstream.read(&mut buf) {
            if n == 0 {
                break;
            }
            incoming.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        std::process::exit(1);
    });

    let limit = queue_packets * PACKET;
    let mut next = Instant::now();
    loop {
        next += chunk;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        // Whole packets only; a partial one waits for the next tick.
        let data: Vec<u8> = {
            let mut arrived = arrived.lock().unwrap();
            let whole = arrived.len() / PACKET * PACKET;
            arrived.drain(..whole).collect()
        };
        if data.is_empty() {
            continue;
        }
        let mut clients = clients.lock().unwrap();
        clients.retain_mut(|client| send(client, &data, limit));
    }
}

/// Reads the request head and answers with the stream's headers.
fn greet(mut socket: TcpStream) -> std::io::Result<Client> {
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    socket.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: video/mpeg\r\n\r\n")?;
    socket.set_nonblocking(true)?;
    Ok(Client {
        socket,
        pending: Vec::new(),
    })
}

/// Writes `data` to a client, queueing what it cannot take (up to `limit`
/// bytes; beyond that whole chunks are dropped). False: the client is gone.
fn send(client: &mut Client, data: &[u8], limit: usize) -> bool {
    let write = |socket: &mut TcpStream, bytes: &[u8]| match socket.write(bytes) {
        Ok(n) => Some(n),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Some(0),
        Err(_) => None,
    };
    if client.pending.is_empty() {
        let Some(n) = write(&mut client.socket, data) else {
            return false;
        };
        client.pending.extend_from_slice(&data[n..]);
        return true;
    }
    if client.pending.len() + data.len() <= limit {
        client.pending.extend_from_slice(data);
    }
    let Some(n) = write(&mut client.socket, &client.pending) else {
        return false;
    };
    client.pending.drain(..n);
    true
}
