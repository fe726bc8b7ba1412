//! The few bytes of DNS the host side of the tests needs: an A query and the addresses of its
//! answer. Hand-written because the CLI crate has no DNS library among its dependencies and
//! the tests only ever ask one question of the test's own dnsmasq.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// What a server answered: the response code and the A records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: u8,
    pub addrs: Vec<Ipv4Addr>,
}

/// Asks `server` over UDP for the A records of `name`; `None` when nothing usable came back.
pub fn query_a(server: SocketAddr, name: &str, timeout: Duration) -> Option<Answer> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    let id: u16 = (std::process::id() as u16).wrapping_mul(31);
    socket.send_to(&packet(id, name), server).ok()?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).ok()?;
    parse(&buf[..n], id)
}

fn packet(id: u16, name: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(32 + name.len());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p
}

fn skip_name(data: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *data.get(pos)?;
        if len & 0xC0 == 0xC0 {
            return Some(pos + 2);
        }
        if len == 0 {
            return Some(pos + 1);
        }
        pos += usize::from(len) + 1;
    }
}

fn parse(data: &[u8], id: u16) -> Option<Answer> {
    if data.len() < 12 || data[..2] != id.to_be_bytes() {
        return None;
    }
    let rcode = data[3] & 0x0F;
    let questions = u16::from_be_bytes([data[4], data[5]]);
    let answers = u16::from_be_bytes([data[6], data[7]]);
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(data, pos)? + 4;
    }
    let mut addrs = Vec::new();
    for _ in 0..answers {
        pos = skip_name(data, pos)?;
        let head = data.get(pos..pos + 10)?;
        let rtype = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[8], head[9]]));
        pos += 10;
        let rdata = data.get(pos..pos + len)?;
        pos += len;
        if rtype == 1 && len == 4 {
            addrs.push(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
        }
    }
    Some(Answer { rcode, addrs })
}
