//! A TCP proxy on loopback that a test can cut and restore, to partition one client from one
//! server while both keep running (killing or pausing the server would partition everyone).
//!
//! Cutting closes every open connection and refuses new ones (accepted, then closed at once), as a
//! network that drops a link looks to both ends once their connections notice; restoring lets new
//! connections through again. Clients reconnect on their own, as they would after a real
//! partition heals.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::HarnessError;

/// One proxy from a free loopback port to `upstream`; stops when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    /// `true` while the link is cut.
    cut: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<TcpProxy, HarnessError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (cut, cut_rx) = watch::channel(false);
        let accept_loop = tokio::spawn(accept(listener, upstream, cut_rx));
        Ok(TcpProxy {
            port,
            cut,
            accept_loop,
        })
    }

    /// The port clients connect to instead of the server's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every connection through the proxy and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        let _ = self.cut.send(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // The accept loop owns the listener; each connection task ends with its streams.
        self.accept_loop.abort();
        let _ = self.cut.send(true);
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, cut: watch::Receiver<bool>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *cut.borrow() {
            drop(client);
            continue;
        }
        tokio::spawn(forward(client, upstream, cut.clone()));
    }
}

/// Copies both ways until either side closes or the link is cut.
async fn forward(mut client: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server on loopback: what the proxy forwards comes back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(port: u16) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn forwards_until_cut_and_again_once_restored() {
        let proxy = TcpProxy::start(echo_server().await).await.expect("proxy");
        assert_eq!(round_trip(proxy.port()).await.expect("through"), b"ping");

        let mut open = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("open");
        proxy.cut();
        let mut buf = [0u8; 1];
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(5), open.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "an open connection is closed: {closed:?}"
        );
        assert!(
            round_trip(proxy.port()).await.is_err(),
            "no new connection gets through"
        );

        proxy.restore();
        assert_eq!(
            round_trip(proxy.port()).await.expect("through again"),
            b"ping"
        );
    }
}
