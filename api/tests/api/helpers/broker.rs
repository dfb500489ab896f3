//! A relay in front of the machine's RabbitMQ, to cut one app off the broker.

/// A TCP relay in front of the local RabbitMQ that refuses connections until switched on, to
/// keep the broker away from one app without stopping the shared broker.
pub struct BrokerRelay {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BrokerRelay {
    pub async fn start(up: bool) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(up));
        let f = flag.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !f.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5672").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { port, up: flag }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
