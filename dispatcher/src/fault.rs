//! Crash points for the fault-tolerance scenarios. They exist only in builds with the
//! `fault-injection` feature, and even then fire only when `SMS_FAULT` names them.

/// With `SMS_FAULT=crash-before-ack`, aborts the process after a message was staged and before
/// its delivery is acknowledged.
#[cfg(feature = "fault-injection")]
pub fn maybe_crash_before_ack() {
    if std::env::var("SMS_FAULT").as_deref() == Ok("crash-before-ack") {
        tracing::error!("fault injection: aborting between stage and ack");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn maybe_crash_before_ack() {}
