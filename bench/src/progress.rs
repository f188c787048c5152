//! Progress on long runs, on standard error, only where a person watches (a terminal) and not
//! under `--json`.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps, hidden under `--json` (indicatif hides it itself off a terminal).
pub fn bar(json: bool, len: u64, message: String) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let style =
        ProgressStyle::with_template("{msg:>20} [{bar:40}] {pos}/{len} tx ({per_sec}, {elapsed})")
            .expect("valid template")
            .progress_chars("=> ");
    ProgressBar::new(len).with_style(style).with_message(message)
}

/// A spinner for a step of unknown length.
pub fn spinner(json: bool, message: String) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner().with_message(message);
    spinner.enable_steady_tick(Duration::from_millis(200));
    spinner
}
