package kwref

import (
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

// The references are anchored to the RFCs' published answers.
func TestAnchors(t *testing.T) {
	for _, c := range []struct {
		name string
		f    func() ([]byte, error)
		want string
	}{
		// RFC 3394 4.1: 128 bits of key data, 128-bit KEK.
		{"rfc3394-4.1", func() ([]byte, error) {
			return Wrap(lab.Unhex("000102030405060708090a0b0c0d0e0f"), IV, lab.Unhex("00112233445566778899aabbccddeeff"))
		}, "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5"},
		// RFC 3394 4.6: 256 bits of key data, 256-bit KEK.
		{"rfc3394-4.6", func() ([]byte, error) {
			return Wrap(lab.Unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"), IV,
				lab.Unhex("00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f"))
		}, "28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21"},
		// RFC 5649 6: 20 octets and 7 octets of key data.
		{"rfc5649-20", func() ([]byte, error) {
			return WrapPad(lab.Unhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"), lab.Unhex("c37b7e6492584340bed12207808941155068f738"))
		}, "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"rfc5649-7", func() ([]byte, error) {
			return WrapPad(lab.Unhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"), lab.Unhex("466f7250617369"))
		}, "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		got, err := c.f()
		require.NoError(t, err, c.name)
		assert.Equal(t, c.want, hex.EncodeToString(got), c.name)
	}
	// PKCS#7 padding of a 16-byte key is a whole 8-byte block.
	got, err := WrapPKCS7(lab.Unhex("000102030405060708090a0b0c0d0e0f"), lab.Unhex("00112233445566778899aabbccddeeff"))
	require.NoError(t, err)
	want, _ := Wrap(lab.Unhex("000102030405060708090a0b0c0d0e0f"), IV, lab.Unhex("00112233445566778899aabbccddeeff0808080808080808"))
	assert.Equal(t, want, got)
	assert.Len(t, got, 32)
	_, err = Wrap(make([]byte, 16), IV, make([]byte, 12))
	assert.Error(t, err)
}
