package pki

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzParseToken feeds arbitrary text to ParseToken, as `shoald --join`
// and `shoal remote add --token` do with what users paste. Properties: no
// panic; a refusal wraps ErrBadToken; an accepted token encodes to text
// that parses to the same token, and encoding is stable.
func FuzzParseToken(f *testing.F) {
	ca, err := NewCA("prod", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	tok, err := NewToken("n2", ca, []string{"10.0.0.1:8443", "[fd00::1]:8443"}, time.Hour, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	enc := tok.Encode()
	for _, s := range []string{enc, enc + "==", " " + enc + "\n", enc[:len(enc)/2], strings.ToUpper(enc), "", "e30", "eyJ2IjoxfQ",
		"eyJ2IjoyfQ", "eyJ2IjoxLCJ4IjoxfQ", "!!!"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("ParseToken(%q) = %v, not ErrBadToken", s, err)
			}
			return
		}
		e := got.Encode()
		again, err := ParseToken(e)
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("ParseToken(%q) = %+v; its encoding %q parses to %+v, %v", s, got, e, again, err)
		}
		if again.Encode() != e {
			t.Fatalf("encoding of %+v is not stable", got)
		}
	})
}
