//! Text as fiscal devices print it: printable ASCII and Cyrillic, code page 1251.

/// Encodes `s` in Windows-1251, or `None` if a character has no place there
/// or is a control character.
pub(crate) fn encode_cp1251(s: &str) -> Option<Vec<u8>> {
    s.chars().map(encode_char).collect()
}

pub(crate) fn encode_char(c: char) -> Option<u8> {
    match c {
        ' '..='~' => Some(c as u8),
        '\u{0410}'..='\u{044F}' => Some((c as u32 - 0x0410 + 0xC0) as u8),
        'Ё' => Some(0xA8),
        'ё' => Some(0xB8),
        '№' => Some(0xB9),
        _ => None,
    }
}

/// Decodes Windows-1251 bytes; bytes outside the supported set become `?`.
pub(crate) fn decode_cp1251(b: &[u8]) -> String {
    b.iter()
        .map(|&x| match x {
            0x20..=0x7E | b'\t' | b'\n' => x as char,
            0xC0..=0xFF => char::from_u32(u32::from(x) - 0xC0 + 0x0410).unwrap_or('?'),
            0xA8 => 'Ё',
            0xB8 => 'ё',
            0xB9 => '№',
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cyrillic_round_trip() {
        let s = "Кафе Ёж №1 - tea";
        let b = encode_cp1251(s).unwrap();
        assert_eq!(decode_cp1251(&b), s);
        assert_eq!(encode_cp1251("tab\there"), None);
        assert_eq!(encode_cp1251("€"), None);
    }
}
