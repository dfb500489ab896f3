//! Progress bars, one per phase, drawn only when asked to (the binary asks when stdout is a
//! terminal); hidden bars cost nothing, so the phases update them unconditionally.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Bars drawn on stdout.
    pub fn visible() -> Self {
        Self {
            multi: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stdout())),
        }
    }

    /// No bars at all.
    pub fn hidden() -> Self {
        Self { multi: None }
    }

    /// A bar for a phase of `len` steps.
    pub fn bar(&self, phase: &str, len: u64) -> ProgressBar {
        let Some(multi) = &self.multi else {
            return ProgressBar::hidden();
        };
        let bar = multi.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>22} [{bar:32}] {pos:>7}/{len:7} {per_sec:>12} {elapsed_precise}",
            )
            .expect("valid progress template")
            .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_owned());
        bar
    }
}
