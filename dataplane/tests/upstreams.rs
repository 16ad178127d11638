//! Every kind of upstream, each fed by a real producer on a real socket,
//! FIFO or process, and read through the proxy by a real HTTP client.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts the proxy on one upstream URL, waits for it to connect, and
/// checks that a client receives a clean stream of test packets.
async fn assert_proxy_streams(remote: String) -> Proxy {
    let proxy = Proxy::start(stream_config(&[remote]));
    proxy.wait_for_event("upstream-connect", 1).await;
    assert_client_streams(&proxy).await;
    proxy
}

async fn assert_client_streams(proxy: &Proxy) {
    // The upstream may be connected a moment before its first packet.
    let mut client = Client::get(&proxy.url("/stream")).await;
    assert_eq!(client.status, 200);
    let packets = decode(&client.read_for(Duration::from_millis(1500)).await);
    assert!(
        packets.len() > 200,
        "only {} packets in 1.5 s",
        packets.len()
    );
    assert_eq!(gaps(&packets), 0, "packets were lost on the way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    assert_proxy_streams(upstream.url()).await;
}

/// A minimal HTTP server: `/redirect` answers 302 to `/live`, `/live`
/// streams test packets with chunked transfer encoding.
async fn http_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = Vec::new();
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut buf = [0u8; 1024];
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                if request.starts_with(b"GET /redirect ") {
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 302 Found\r\nLocation: /live\r\nContent-Length: 0\r\n\r\n",
                        )
                        .await;
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n";
                socket.write_all(head.as_bytes()).await.unwrap();
                let mut source = PacketSource::new(0x100);
                loop {
                    let data = source.packets(10);
                    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                    chunk.extend_from_slice(&data);
                    chunk.extend_from_slice(b"\r\n");
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_with_chunked_body_and_redirect() {
    let server = http_upstream().await;
    assert_proxy_streams(format!("{server}/redirect")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_stream_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tv.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let producer = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        produce(socket, 0x100, 1000).await;
    });
    assert_proxy_streams(format!("unix://{}", path.display())).await;
    producer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_seqpacket_socket() {
    use socket2::{Domain, SockAddr, Socket, Type};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tv.sock");
    let listener = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    listener.bind(&SockAddr::unix(&path).unwrap()).unwrap();
    listener.listen(1).unwrap();
    std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let mut source = PacketSource::new(0x100);
        // One datagram of 7 packets every 5 ms, until the proxy goes.
        while socket.send(&source.packets(7)).is_ok() {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    assert_proxy_streams(format!("unixpacket://{}", path.display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_datagram_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tv.sock");
    let target = path.clone();
    let sender = tokio::net::UnixDatagram::unbound().unwrap();
    let producer = tokio::spawn(async move {
        let sender = &sender;
        let target = &target;
        produce_datagrams(
            |datagram| async move { sender.send_to(&datagram, target).await },
            0x100,
            1000,
        )
        .await;
    });
    assert_proxy_streams(format!("unixgram://{}", path.display())).await;
    producer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_unicast() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let producer = tokio::spawn(async move {
        let sender = &sender;
        produce_datagrams(
            |datagram| async move { sender.send_to(&datagram, ("127.0.0.1", port)).await },
            0x100,
            1000,
        )
        .await;
    });
    assert_proxy_streams(format!("udp://127.0.0.1:{port}")).await;
    producer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_multicast_joined_on_an_interface() {
    use std::net::Ipv4Addr;
    let group = Ipv4Addr::new(239, 255, 42, 42);
    let port = std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sender = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    sender.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    sender.set_multicast_loop_v4(true).unwrap();
    sender.set_nonblocking(true).unwrap();
    let sender = tokio::net::UdpSocket::from_std(sender.into()).unwrap();
    let producer = tokio::spawn(async move {
        let sender = &sender;
        produce_datagrams(
            |datagram| async move { sender.send_to(&datagram, (group, port)).await },
            0x100,
            1000,
        )
        .await;
    });
    let mut config = stream_config(&[format!("udp://{group}:{port}")]);
    config["resources"][0]["clientinterface"] = "lo".into();
    config["resources"][0]["mru"] = 1500.into();
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;
    assert_client_streams(&proxy).await;
    producer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tv.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let fifo = path.clone();
    std::thread::spawn(move || {
        // Opening for writing waits for the proxy to open it for reading.
        let mut writer = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
        let mut source = PacketSource::new(0x100);
        while writer.write_all(&source.packets(10)).is_ok() {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    assert_proxy_streams(format!("file://{}", path.display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_reads_the_commands_output_and_kills_it_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ten.ts");
    std::fs::write(&file, PacketSource::new(0x100).packets(10)).unwrap();
    // A shell loop that sends the same 10 packets every 10 ms; the marker
    // finds the process afterwards.
    let marker = format!("restreamer-fork-test-{}", std::process::id());
    let script = format!(
        "while true; do cat {}; sleep 0.01; done # {marker}",
        file.display()
    );
    let url = format!(
        "fork:///bin/sh?-c+{}",
        script
            .replace('%', "%25")
            .replace(' ', "%20")
            .replace('#', "%23")
    );

    let mut proxy = Proxy::start(stream_config(&[url]));
    proxy.wait_for_event("upstream-connect", 1).await;
    let mut client = Client::get(&proxy.url("/stream")).await;
    assert_eq!(client.status, 200);
    let packets = decode(&client.read_for(Duration::from_millis(1500)).await);
    assert!(
        packets.len() > 200,
        "only {} packets in 1.5 s",
        packets.len()
    );
    assert!(running_with(&marker), "the command is not running");

    proxy.terminate();
    assert!(!running_with(&marker), "the command outlived the proxy");
}

/// Whether a process whose command line contains `marker` is running.
fn running_with(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regular_file_is_read_again_after_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("short.ts");
    std::fs::write(&file, PacketSource::new(0x100).packets(300)).unwrap();
    let proxy = Proxy::start(stream_config(&[format!("file://{}", file.display())]));
    proxy.wait_for_event("upstream-loss", 1).await;
    proxy.wait_for_event("upstream-connect", 2).await;
}
