package server

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// The limits of text fields, after NFC normalization (docs/openapi.yaml).
const (
	maxNameRunes  = 64  // a participant's name, in code points
	maxTitleRunes = 200 // a meeting's title, in code points
	maxUserIDLen  = 128 // a user id, in bytes
)

// invisibleLetters are letters that draw nothing, which the categories
// refused below do not catch.
var invisibleLetters = []rune{'\u115F', '\u1160', '\u3164', '\uFFA0', '\u2800'}

// refusedRune reports whether r may not appear in a name, title or user
// id: controls (Cc), format characters (Cf: bidi controls and overrides,
// zero-width characters, the BOM, soft hyphens), line and paragraph
// separators (Zl, Zp), private use (Co), and letters that draw nothing.
// They let one name pass for another, or reverse the text around it.
func refusedRune(r rune) bool {
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Co) ||
		strings.ContainsRune(string(invisibleLetters), r)
}

// cleanText returns v, NFC-normalized and trimmed of surrounding spaces, if
// it is 1 to maxRunes code points (maxBytes bytes, if not 0) of valid UTF-8
// without a refused character; otherwise a BAD_REQUEST naming field.
func cleanText(field, v string, maxRunes, maxBytes int) (string, error) {
	if !utf8.ValidString(v) {
		return "", badRequest(field + " is not valid UTF-8")
	}
	v = strings.TrimSpace(norm.NFC.String(v))
	if v == "" {
		return "", badRequest(field + " is required")
	}
	if maxRunes > 0 && utf8.RuneCountInString(v) > maxRunes {
		return "", badRequest(field + " must be at most " + strconv.Itoa(maxRunes) + " characters")
	}
	if maxBytes > 0 && len(v) > maxBytes {
		return "", badRequest(field + " must be at most " + strconv.Itoa(maxBytes) + " bytes of UTF-8")
	}
	for i, r := range v {
		if refusedRune(r) {
			return "", badRequest(field + " holds a control, format or invisible character (" +
				strconv.QuoteRuneToASCII(r) + " at byte " + strconv.Itoa(i) + ")")
		}
	}
	return v, nil
}
