//! Ports on 127.0.0.1.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago (bind :0, read, close).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A port on 127.0.0.1 nobody listens on (for "collector down" tests).
pub fn closed_port() -> u16 {
    for _ in 0..50 {
        let p = free_port();
        if TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], p)), Duration::from_millis(200)).is_err() {
            return p;
        }
    }
    panic!("could not find a closed port");
}

/// Waits until a socket LISTENs on 127.0.0.1:port (or 0.0.0.0 / [::]), read from /proc/net/tcp{,6}
/// so that no probe connection is made (a traced target would see it).
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if is_listening(port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether some socket of this network namespace listens on TCP `port`.
pub fn is_listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).unwrap_or_default().lines().skip(1).any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
        })
    })
}
