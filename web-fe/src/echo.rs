//! Request input that is echoed in an answer or written to the log is cut short, so an
//! 8 KiB path or a 5,000-digit parameter never comes back whole.

/// The first `max_chars` characters of `text`.
pub fn clip(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// At most 80 characters of `text`, with an ellipsis when something was cut.
pub fn shorten(text: &str) -> String {
    let clipped = clip(text, 80);
    if clipped.len() < text.len() {
        format!("{clipped}…")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clip_counts_characters_not_bytes() {
        assert_eq!(clip("é漢xyz", 2), "é漢");
        assert_eq!(clip("/short", 80), "/short");
        assert_eq!(clip("", 3), "");
    }
}
