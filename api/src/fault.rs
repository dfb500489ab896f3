//! Crash points for the fault-tolerance scenarios. They exist only in builds with the
//! `fault-injection` feature, and even then fire only when `SMS_FAULT` names them.

/// With `SMS_FAULT=crash-before-publish`, aborts the process after a request was stored and
/// answered 202, before its events are published.
#[cfg(feature = "fault-injection")]
pub async fn maybe_crash_before_publish() {
    if std::env::var("SMS_FAULT").as_deref() == Ok("crash-before-publish") {
        // Let the 202 reach the client first: the scenario is "accepted, then lost the process".
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        tracing::error!("fault injection: aborting between persist and publish");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub async fn maybe_crash_before_publish() {}
