//! The 6-digit one-time code: uniform generation (no modulo bias), input normalisation, and a type
//! that never prints its digits.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{CoreError, Result};

pub const CODE_DIGITS: usize = 6;
const CODE_SPACE: u32 = 1_000_000;
/// Largest multiple of 10^6 that fits in a u32: draws at or above it are rejected, so every code is
/// equally likely.
const UNBIASED_LIMIT: u32 = (u32::MAX / CODE_SPACE) * CODE_SPACE;

/// A one-time code as six ASCII digits. Zeroized on drop; `Debug` shows `******`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Code([u8; CODE_DIGITS]);

impl Code {
    /// A uniformly random code from the system CSPRNG.
    pub fn generate() -> Result<Code> {
        loop {
            let draw = u32::from_be_bytes(super::random_bytes::<4>()?);
            if draw < UNBIASED_LIMIT {
                return Ok(Code::from_number(draw % CODE_SPACE));
            }
        }
    }

    fn from_number(mut n: u32) -> Code {
        let mut digits = [b'0'; CODE_DIGITS];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        n.zeroize();
        Code(digits)
    }

    /// Parses what the driver typed or the recipient said: spaces, tabs and hyphens are ignored;
    /// anything else must be exactly six ASCII digits.
    pub fn parse(input: &str) -> Result<Code> {
        let mut digits = [0u8; CODE_DIGITS];
        let mut n = 0usize;
        for ch in input.chars() {
            match ch {
                ' ' | '\t' | '-' | '\u{00A0}' | '\u{2010}' | '\u{2011}' | '\u{2013}' => {}
                '0'..='9' if n < CODE_DIGITS => {
                    digits[n] = ch as u8;
                    n += 1;
                }
                _ => {
                    digits.zeroize();
                    return Err(CoreError::MalformedCode);
                }
            }
        }
        if n != CODE_DIGITS {
            digits.zeroize();
            return Err(CoreError::MalformedCode);
        }
        Ok(Code(digits))
    }

    /// The digits, for the one place that must show them: dispatch's message to the customer.
    pub fn reveal(&self) -> &str {
        // Always ASCII digits by construction.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(******)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ignores_spaces_and_hyphens() {
        assert_eq!(Code::parse(" 123-456 ").unwrap().reveal(), "123456");
        assert_eq!(Code::parse("12 34 56").unwrap().reveal(), "123456");
        assert_eq!(Code::parse("000000").unwrap().reveal(), "000000");
    }

    #[test]
    fn parse_rejects_everything_else() {
        for bad in ["", "12345", "1234567", "12345a", "１２３４５６", "12.3456", "123456\n7", "+123456"] {
            assert!(matches!(Code::parse(bad), Err(CoreError::MalformedCode)), "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_digits() {
        let code = Code::parse("987654").unwrap();
        assert_eq!(format!("{code:?}"), "Code(******)");
    }

    // The rejection bound is the largest multiple of 10^6 below 2^32: checked at compile time.
    const _: () = assert!(UNBIASED_LIMIT % CODE_SPACE == 0 && u32::MAX - UNBIASED_LIMIT < CODE_SPACE);

    #[test]
    fn generated_codes_are_six_digits_and_spread_out() {
        let mut first_digit = [0u32; 10];
        for _ in 0..5000 {
            let code = Code::generate().unwrap();
            assert_eq!(code.reveal().len(), 6);
            first_digit[(code.as_bytes()[0] - b'0') as usize] += 1;
        }
        // Each leading digit expected 500 times; 300 is > 9 sigma away.
        assert!(first_digit.iter().all(|&n| n > 300), "{first_digit:?}");
    }

    #[test]
    fn from_number_pads_with_zeros() {
        assert_eq!(Code::from_number(42).reveal(), "000042");
        assert_eq!(Code::from_number(999_999).reveal(), "999999");
    }
}
