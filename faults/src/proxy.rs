//! A TCP front for API replicas, as a load balancer in front of them would be: each new
//! connection goes to the first replica that accepts it, so once a replica dies, its clients'
//! next requests reach the next one. Connections open to the replica that died break with it.

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The front, listening until dropped.
pub struct Proxy {
    port: u16,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port and forwards each connection to the first of `upstreams` (ports
    /// on 127.0.0.1) that accepts it; a connection none accepts is closed.
    pub async fn start(upstreams: Vec<u16>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let port = listener.local_addr()?.port();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstreams = upstreams.clone();
                tokio::spawn(async move {
                    for upstream in upstreams {
                        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self { port, accept })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
