//! End to end in a real browser (placeholder until the WebDriver test lands).
