//! SMS segment counting: GSM 03.38 7-bit when every character fits, else UCS-2.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    #[serde(rename = "GSM-7")]
    Gsm7,
    #[serde(rename = "UCS-2")]
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }
}

const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// How a text is encoded and how many SMS parts it takes.
pub fn count(text: &str) -> (Encoding, u32) {
    let mut septets = 0usize;
    let mut gsm = true;
    for c in text.chars() {
        if GSM_BASIC.contains(c) {
            septets += 1;
        } else if GSM_EXTENDED.contains(c) {
            septets += 2;
        } else {
            gsm = false;
            break;
        }
    }
    if gsm {
        (Encoding::Gsm7, parts(septets, 160, 153))
    } else {
        (Encoding::Ucs2, parts(text.encode_utf16().count(), 70, 67))
    }
}

fn parts(units: usize, single: usize, multi: usize) -> u32 {
    if units <= single {
        1
    } else {
        units.div_ceil(multi) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm_boundaries() {
        assert_eq!(count(""), (Encoding::Gsm7, 1));
        assert_eq!(count(&"a".repeat(160)), (Encoding::Gsm7, 1));
        assert_eq!(count(&"a".repeat(161)), (Encoding::Gsm7, 2));
        assert_eq!(count(&"a".repeat(306)), (Encoding::Gsm7, 2));
        assert_eq!(count(&"a".repeat(307)), (Encoding::Gsm7, 3));
    }

    #[test]
    fn extended_characters_take_two_septets() {
        assert_eq!(count(&"€".repeat(80)), (Encoding::Gsm7, 1));
        assert_eq!(count(&"€".repeat(81)), (Encoding::Gsm7, 2));
    }

    #[test]
    fn vietnamese_diacritics_need_ucs2() {
        assert_eq!(count("Mã OTP của bạn là 123456"), (Encoding::Ucs2, 1));
        assert_eq!(count(&"ệ".repeat(70)), (Encoding::Ucs2, 1));
        assert_eq!(count(&"ệ".repeat(71)), (Encoding::Ucs2, 2));
        assert_eq!(count(&"ệ".repeat(134)), (Encoding::Ucs2, 2));
        assert_eq!(count(&"ệ".repeat(135)), (Encoding::Ucs2, 3));
    }

    #[test]
    fn plain_ascii_otp_is_gsm() {
        assert_eq!(count("Ma OTP 123456"), (Encoding::Gsm7, 1));
    }
}
