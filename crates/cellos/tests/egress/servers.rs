//! The test internet's own servers, run on threads of the test process whose sockets live in
//! the internet's namespace: plain HTTP, a TLS front that records each ClientHello and hands
//! the connection to a real TLS server (`openssl s_server`), and a UDP echo service.
//!
//! Each records what it received, so a test can prove a denied attempt never arrived, and
//! that an allowed one arrived with the name it was allowed for.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a server waits on a silent peer before giving up on it.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often accept loops look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// Which kind of server saw a connection or datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Http,
    Tls,
    Udp,
}

/// One connection or datagram a server received, with its first bytes (the HTTP request head,
/// the TLS ClientHello, the datagram).
#[derive(Debug, Clone)]
pub struct Hit {
    pub service: Service,
    pub local: SocketAddr,
    pub head: Vec<u8>,
}

impl Hit {
    /// Does the first flight name `name` (HTTP `Host`, TLS SNI: both travel in clear text)?
    pub fn names(&self, name: &str) -> bool {
        let needle = name.as_bytes();
        self.head.windows(needle.len()).any(|w| w == needle)
    }

    /// The HTTP `Host` header, for HTTP hits.
    pub fn host_header(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.head);
        text.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.eq_ignore_ascii_case("host")
                .then(|| value.trim().to_string())
        })
    }
}

/// Everything the servers of one internet received.
#[derive(Debug, Default)]
pub struct Record {
    hits: Mutex<Vec<Hit>>,
}

impl Record {
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connections (HTTP or TLS) accepted on `local`.
    pub fn tcp_hits_on(&self, local: SocketAddr) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.service != Service::Udp && h.local == local)
            .collect()
    }

    /// Datagrams received on `local`.
    pub fn udp_hits_on(&self, local: SocketAddr) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.service == Service::Udp && h.local == local)
            .collect()
    }

    fn push(&self, hit: Hit) {
        self.hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hit);
    }
}

/// Where each server listens.
pub struct Layout {
    pub http: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    /// The TLS server the fronts hand connections to (inside the namespace).
    pub tls_backend: SocketAddr,
    pub udp: Vec<SocketAddr>,
}

/// Running servers; dropping them stops their loops and closes their listeners.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub record: Arc<Record>,
}

impl Servers {
    /// Binds every listener inside the namespace at `netns` and starts serving. Threads
    /// inherit the namespace of the thread that spawns them, so all server threads (and the
    /// fronts' connections to the TLS backend) live in the internet.
    pub fn start(netns: &str, layout: Layout) -> Self {
        let ns = File::open(netns).unwrap_or_else(|e| panic!("open {netns}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Record::default());
        let (s, r) = (stop.clone(), record.clone());
        let threads = std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("join the internet namespace");
            let mut threads = Vec::new();
            for addr in layout.http {
                threads.push(accept_loop(addr, &s, &r, move |stream, record| {
                    serve_http(stream, record)
                }));
            }
            for addr in layout.tls {
                let backend = layout.tls_backend;
                threads.push(accept_loop(addr, &s, &r, move |stream, record| {
                    serve_tls_front(stream, backend, record)
                }));
            }
            for addr in layout.udp {
                threads.push(udp_echo(addr, &s, &r));
            }
            threads
        })
        .join()
        .expect("servers start");
        Self {
            stop,
            threads,
            record,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    record: &Arc<Record>,
    serve: impl Fn(TcpStream, &Record) + Send + Clone + 'static,
) -> JoinHandle<()> {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let (stop, record) = (stop.clone(), record.clone());
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let (serve, record) = (serve.clone(), record.clone());
                    std::thread::spawn(move || {
                        if stream.set_nonblocking(false).is_ok()
                            && stream.set_read_timeout(Some(PEER_TIMEOUT)).is_ok()
                        {
                            serve(stream, &record);
                        }
                    });
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    })
}

/// Reads an HTTP request head, records it and answers with where it arrived and for which
/// host.
fn serve_http(mut stream: TcpStream, record: &Record) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let hit = Hit {
        service: Service::Http,
        local,
        head,
    };
    let body = format!(
        "served by {local} for host {}\n",
        hit.host_header().unwrap_or_default()
    );
    record.push(hit);
    let _ = write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// Records the ClientHello, then relays the connection to the real TLS server untouched.
fn serve_tls_front(mut client: TcpStream, backend: SocketAddr, record: &Record) {
    let Ok(local) = client.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    let n = client.read(&mut buf).unwrap_or(0);
    record.push(Hit {
        service: Service::Tls,
        local,
        head: buf[..n].to_vec(),
    });
    if n == 0 {
        return;
    }
    let Ok(mut server) = TcpStream::connect_timeout(&backend, PEER_TIMEOUT) else {
        return;
    };
    if server.write_all(&buf[..n]).is_err() {
        return;
    }
    let (Ok(mut client_r), Ok(mut server_w)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut server_w);
        let _ = server_w.shutdown(Shutdown::Write);
    });
    let _ = server.set_read_timeout(Some(PEER_TIMEOUT));
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.join();
}

/// Echoes every datagram back to its sender.
fn udp_echo(addr: SocketAddr, stop: &Arc<AtomicBool>, record: &Arc<Record>) -> JoinHandle<()> {
    let socket = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
    socket
        .set_read_timeout(Some(POLL))
        .expect("udp read timeout");
    let (stop, record) = (stop.clone(), record.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                record.push(Hit {
                    service: Service::Udp,
                    local: addr,
                    head: buf[..n].to_vec(),
                });
                let _ = socket.send_to(&buf[..n], peer);
            }
        }
    })
}
