//! A TCP front for API replicas, as a load balancer in front of them would be: each new
//! connection goes to the first replica that accepts it, so once a replica dies, its clients'
//! next requests reach the next one. Connections open to the replica that died break with it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The front, listening until dropped.
pub struct Proxy {
    port: u16,
    accept: JoinHandle<()>,
    /// Connections forwarded to each upstream, in their order.
    routed: Arc<Vec<AtomicUsize>>,
}

impl Proxy {
    /// Listens on a free port and forwards each connection to the first of `upstreams` (ports
    /// on 127.0.0.1) that accepts it; a connection none accepts is closed.
    pub async fn start(upstreams: Vec<u16>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let port = listener.local_addr()?.port();
        let routed: Arc<Vec<AtomicUsize>> =
            Arc::new(upstreams.iter().map(|_| AtomicUsize::new(0)).collect());
        let counts = routed.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (upstreams, counts) = (upstreams.clone(), counts.clone());
                tokio::spawn(async move {
                    for (i, upstream) in upstreams.into_iter().enumerate() {
                        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await
                        {
                            counts[i].fetch_add(1, Ordering::Relaxed);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self {
            port,
            accept,
            routed,
        })
    }

    /// How many connections went to each upstream so far, in their order.
    pub fn routed(&self) -> Vec<usize> {
        self.routed
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
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
