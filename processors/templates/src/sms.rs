//! SMS segment arithmetic (3GPP TS 23.038 / 23.040).
//!
//! A text that fits the GSM 03.38 alphabet is sent as 7-bit septets: 160 in one message,
//! 153 per part when concatenated (the header takes 7). Characters of the extension table
//! (`{ } [ ] ~ \ | ^ €` and form feed) take two septets, and a part never splits such a pair.
//! Anything else forces UCS-2: 70 UTF-16 units in one message, 67 per part, and a surrogate
//! pair is never split either.

/// The GSM 03.38 basic character set (without the escape code itself).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table: each costs an escape septet plus its own.
const GSM_EXTENSION: &str = "\u{0c}^{}\\[~]|€";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    /// Units in a single message, and per part of a concatenated one.
    fn capacity(self) -> (usize, usize) {
        match self {
            Encoding::Gsm7 => (160, 153),
            Encoding::Ucs2 => (70, 67),
        }
    }

    fn cost(self, c: char) -> usize {
        match self {
            Encoding::Gsm7 if GSM_EXTENSION.contains(c) => 2,
            Encoding::Gsm7 => 1,
            Encoding::Ucs2 => c.len_utf16(),
        }
    }
}

/// How a text goes over the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 units (UCS-2).
    pub units: usize,
    pub segments: usize,
}

pub fn encoding_of(text: &str) -> Encoding {
    if text
        .chars()
        .all(|c| GSM_BASIC.contains(c) || GSM_EXTENSION.contains(c))
    {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

pub fn segments(text: &str) -> Segments {
    let encoding = encoding_of(text);
    let units = text.chars().map(|c| encoding.cost(c)).sum();
    let (single, part) = encoding.capacity();
    let segments = if units <= single {
        1
    } else {
        // Greedy packing, because a two-unit character that does not fit moves whole to the
        // next part (so the count can exceed ceil(units / part)).
        let mut parts = 1;
        let mut used = 0;
        for c in text.chars() {
            let cost = encoding.cost(c);
            if used + cost > part {
                parts += 1;
                used = 0;
            }
            used += cost;
        }
        parts
    };
    Segments {
        encoding,
        units,
        segments,
    }
}

/// The longest prefix of `text` that fits in `max_segments` (at least one), in the encoding
/// of the whole text.
pub fn truncate(text: &str, max_segments: usize) -> &str {
    let max_segments = max_segments.max(1);
    if segments(text).segments <= max_segments {
        return text;
    }
    let encoding = encoding_of(text);
    let (single, part) = encoding.capacity();
    let mut parts = 1;
    let mut used = 0;
    let mut units = 0;
    for (at, c) in text.char_indices() {
        let cost = encoding.cost(c);
        if max_segments == 1 {
            if units + cost > single {
                return &text[..at];
            }
        } else if used + cost > part {
            if parts == max_segments {
                return &text[..at];
            }
            parts += 1;
            used = 0;
        }
        used += cost;
        units += cost;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_single_and_concatenated() {
        assert_eq!(segments(&"a".repeat(160)).segments, 1);
        assert_eq!(segments(&"a".repeat(161)).segments, 2);
        assert_eq!(segments(&"a".repeat(306)).segments, 2);
        assert_eq!(segments(&"a".repeat(307)).segments, 3);
        assert_eq!(segments("").segments, 1);
        assert_eq!(segments("Olá, é às 10h").encoding, Encoding::Ucs2); // á is not GSM
        assert_eq!(segments("Hallo Müller, Ñ").encoding, Encoding::Gsm7);
    }

    #[test]
    fn extension_characters_count_twice_and_are_not_split() {
        let s = segments(&"€".repeat(80));
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Gsm7, 160, 1));
        assert_eq!(segments(&"€".repeat(81)).segments, 2);
        let text = format!("{}€", "a".repeat(159));
        let s = segments(&text);
        assert_eq!((s.units, s.segments), (161, 2));
        // 152 septets then a two-septet character: it moves whole to the second part.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(segments(&text).units, 306);
        assert_eq!(segments(&text).segments, 3, "the pair is not split");
    }

    #[test]
    fn ucs2_single_and_concatenated() {
        assert_eq!(segments(&"ç".repeat(10)).encoding, Encoding::Ucs2); // only Ç is GSM
        let s = segments(&"ã".repeat(70));
        assert_eq!((s.encoding, s.segments), (Encoding::Ucs2, 1));
        assert_eq!(segments(&"ã".repeat(71)).segments, 2);
        assert_eq!(segments(&"ã".repeat(134)).segments, 2);
        assert_eq!(segments(&"ã".repeat(135)).segments, 3);
        // An emoji is a surrogate pair: two units.
        assert_eq!(segments(&"🙂".repeat(35)).units, 70);
        assert_eq!(segments(&"🙂".repeat(35)).segments, 1);
    }

    #[test]
    fn truncation_keeps_the_longest_prefix_that_fits() {
        let text = "a".repeat(500);
        assert_eq!(truncate(&text, 1).len(), 160);
        assert_eq!(truncate(&text, 2).len(), 306);
        assert_eq!(truncate("short", 1), "short");
        let uni = "ã".repeat(200);
        assert_eq!(truncate(&uni, 2).chars().count(), 134);
        for n in 1..4 {
            assert!(segments(truncate(&uni, n)).segments <= n);
            assert!(segments(truncate(&text, n)).segments <= n);
        }
    }
}
