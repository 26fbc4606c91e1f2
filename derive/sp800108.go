package derive

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
	"github.com/p11derive/p11derive/mechanisms"
)

// PRF is the pseudorandom function of an [SP800108] key derivation.
type PRF uint8

// The PRFs of SP 800-108 that PKCS#11 tokens run. PKCS#11 v3.0 takes the
// full-width MAC mechanism as the PRF (CK_SP800_108_PRF_TYPE has no output
// width; see the "UNFIXED ERRATA" note in NSS's pkcs11t.h), so each PRF
// block is the whole MAC: KDFs that truncate every PRF block cannot be
// expressed.
const (
	HMACSHA256 PRF = iota + 1 // CKM_SHA256_HMAC, h = 32 bytes
	HMACSHA384                // CKM_SHA384_HMAC, h = 48 bytes
	HMACSHA512                // CKM_SHA512_HMAC, h = 64 bytes
	AESCMAC                   // CKM_AES_CMAC, h = 16 bytes; the base key is an AES key
	DES3CMAC                  // CKM_DES3_CMAC, h = 8 bytes; the base key is a DES2 or DES3 key
)

func (p PRF) String() string {
	switch p {
	case HMACSHA256:
		return "hmac-sha256"
	case HMACSHA384:
		return "hmac-sha384"
	case HMACSHA512:
		return "hmac-sha512"
	case AESCMAC:
		return "aes-cmac"
	case DES3CMAC:
		return "des3-cmac"
	}
	return fmt.Sprintf("prf(%d)", uint8(p))
}

// Size is the PRF's output length in bytes (h in SP 800-108), or 0 for an
// unknown PRF.
func (p PRF) Size() int {
	switch p {
	case HMACSHA256:
		return 32
	case HMACSHA384:
		return 48
	case HMACSHA512:
		return 64
	case AESCMAC:
		return 16
	case DES3CMAC:
		return 8
	}
	return 0
}

// mechanism is the PKCS#11 MAC mechanism that is the PRF (prfType).
func (p PRF) mechanism() uint {
	switch p {
	case HMACSHA256:
		return pkcs11.CKM_SHA256_HMAC
	case HMACSHA384:
		return pkcs11.CKM_SHA384_HMAC
	case HMACSHA512:
		return pkcs11.CKM_SHA512_HMAC
	case AESCMAC:
		return pkcs11.CKM_AES_CMAC
	case DES3CMAC:
		return pkcs11.CKM_DES3_CMAC
	}
	return 0
}

func prfByName(s string) (PRF, bool) {
	for _, p := range []PRF{HMACSHA256, HMACSHA384, HMACSHA512, AESCMAC, DES3CMAC} {
		if p.String() == s {
			return p, true
		}
	}
	return 0, false
}

// SP800108Mode is the iteration mode of an [SP800108] derivation.
type SP800108Mode uint8

// The SP 800-108 modes p11derive computes.
const (
	// SP800108Counter: K(i) = PRF(K, layout with [i]) for i = 1..n
	// (CKM_SP800_108_COUNTER_KDF).
	SP800108Counter SP800108Mode = iota + 1
	// SP800108Feedback: K(i) = PRF(K, layout with K(i-1)), K(0) = IV
	// (CKM_SP800_108_FEEDBACK_KDF).
	SP800108Feedback
)

func (m SP800108Mode) String() string {
	switch m {
	case SP800108Counter:
		return "counter"
	case SP800108Feedback:
		return "feedback"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// The default layouts: NIST SP 800-108's own arrangement, with the
// request's data standing for Label || 0x00 || Context. They are part of the
// function's definition and never change; profiles record the layout in
// full all the same.
const (
	// DefaultCounterLayout is [i]_32 || data || [L]_32.
	DefaultCounterLayout = "counter:32,data,dkm:32"
	// DefaultFeedbackLayout is K(i-1) || [i]_32 || data || [L]_32.
	DefaultFeedbackLayout = "chain,counter:32,data,dkm:32"
)

// SegmentKind is what a [Segment] of an SP 800-108 layout holds.
type SegmentKind uint8

// The segments of a layout, written as in [ParseLayout].
const (
	// SegCounter, "counter:W" or "counter:W:le": the iteration counter i
	// (1, 2, ...) in W bits, big-endian unless le. W is 8, 16, 24 or 32.
	// In counter mode it is the iteration variable and required once; in
	// feedback mode it is optional (at most once).
	SegCounter SegmentKind = iota + 1
	// SegChain, "chain": feedback mode's chaining value K(i-1), the IV for
	// i = 1 (empty when there is no IV). Required once in feedback mode,
	// refused in counter mode.
	SegChain
	// SegData, "data": the request's derivation data (typically
	// Label || 0x00 || Context). Empty data adds nothing.
	SegData
	// SegDKM, "dkm:W" or "dkm:W:le": L, the length of DK in bits, in W
	// bits (a multiple of 8, up to 64), big-endian unless le.
	SegDKM
	// SegBytes, "hex:0011...": literal bytes, at least one.
	SegBytes
)

// Segment is one element of an SP 800-108 PRF input layout.
type Segment struct {
	Kind SegmentKind
	// Bits is the width of a counter or DKM length.
	Bits int
	// LittleEndian encodes a counter or DKM length little-endian.
	LittleEndian bool
	// Bytes are the literal bytes of a SegBytes segment.
	Bytes []byte
}

// Layout is the caller-defined, ordered PRF input of an SP 800-108
// derivation: the segments concatenated make the PRF's message in each
// iteration.
type Layout []Segment

// ParseLayout reads a layout in its compact syntax: segments separated by
// commas, each one of
//
//	counter:W[:le]  the iteration counter, W bits (8, 16, 24, 32)
//	chain           feedback mode's K(i-1) (the IV in the first iteration)
//	data            the request's derivation data
//	dkm:W[:le]      L, the bit length of DK, in W bits (8 to 64, whole bytes)
//	hex:HEX         literal bytes
//
// Widths are big-endian unless ":le" follows (":be" is accepted too).
// Example: "counter:32,data,dkm:32" is NIST's [i]_32 || data || [L]_32.
// An empty string is an empty layout (nil); the rules that depend on the
// mode are checked when the function is validated.
func ParseLayout(s string) (Layout, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var l Layout
	for i, part := range strings.Split(s, ",") {
		seg, err := parseSegment(strings.ToLower(strings.TrimSpace(part)))
		if err != nil {
			return nil, inputErr("layout", "segment %d %q: %v", i+1, part, err)
		}
		l = append(l, seg)
	}
	return l, nil
}

func parseSegment(s string) (Segment, error) {
	kind, rest, _ := strings.Cut(s, ":")
	switch kind {
	case "chain", "data":
		if rest != "" {
			return Segment{}, fmt.Errorf("%s takes no argument", kind)
		}
		if kind == "chain" {
			return Segment{Kind: SegChain}, nil
		}
		return Segment{Kind: SegData}, nil
	case "hex":
		b, err := hex.DecodeString(rest)
		if err != nil {
			return Segment{}, fmt.Errorf("not hex: %v", err)
		}
		if len(b) == 0 {
			return Segment{}, fmt.Errorf("no bytes")
		}
		return Segment{Kind: SegBytes, Bytes: b}, nil
	case "counter", "dkm":
		w, order, _ := strings.Cut(rest, ":")
		bits, err := strconv.Atoi(w)
		if err != nil {
			return Segment{}, fmt.Errorf("%s needs a width in bits, as in %s:32", kind, kind)
		}
		seg := Segment{Kind: SegCounter, Bits: bits}
		if kind == "dkm" {
			seg.Kind = SegDKM
		}
		switch order {
		case "", "be":
		case "le":
			seg.LittleEndian = true
		default:
			return Segment{}, fmt.Errorf("byte order %q is neither be nor le", order)
		}
		return seg, nil
	}
	return Segment{}, fmt.Errorf("unknown segment %q (counter:W, chain, data, dkm:W, hex:HEX)", kind)
}

// String writes the layout in the syntax of ParseLayout, canonically.
func (l Layout) String() string {
	parts := make([]string, len(l))
	for i, s := range l {
		parts[i] = s.String()
	}
	return strings.Join(parts, ",")
}

func (s Segment) String() string {
	var name string
	switch s.Kind {
	case SegChain:
		return "chain"
	case SegData:
		return "data"
	case SegBytes:
		return "hex:" + hex.EncodeToString(s.Bytes)
	case SegCounter:
		name = "counter"
	case SegDKM:
		name = "dkm"
	default:
		return fmt.Sprintf("segment(%d)", uint8(s.Kind))
	}
	out := name + ":" + strconv.Itoa(s.Bits)
	if s.LittleEndian {
		out += ":le"
	}
	return out
}

// SP800108 is the NIST SP 800-108 key-based KDF in counter or feedback mode
// with a full-width PRF keyed with the base key: DK is the leading bytes of
// K(1) || K(2) || ..., each K(i) the PRF of the layout for iteration i.
// With the default layouts:
//
//	counter:  K(i) = PRF(K, [i]_32 || data || [L]_32)
//	feedback: K(i) = PRF(K, K(i-1) || [i]_32 || data || [L]_32), K(0) = IV
//
// where L is DK's length in bits (CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS).
// A single-block counter-mode layout reproduces many published CMAC KDFs
// (GlobalPlatform SCP03, NXP AN10922, TR-31 key-block keys).
//
// The token computes it with CKM_SP800_108_COUNTER_KDF or
// CKM_SP800_108_FEEDBACK_KDF (PKCS#11 v3.0) in one C_DeriveKey; DK's
// length comes from its template.
type SP800108 struct {
	Mode SP800108Mode
	PRF  PRF
	// Layout is the PRF input; nil means DefaultCounterLayout or
	// DefaultFeedbackLayout.
	Layout Layout
	// IV is feedback mode's K(0), any length, optional. It must be empty in
	// counter mode.
	IV []byte
}

// Name returns "sp800-108-counter" or "sp800-108-feedback".
func (f SP800108) Name() string { return "sp800-108-" + f.Mode.String() }

// layout is the layout in force: f.Layout or the mode's default.
func (f SP800108) layout() Layout {
	if f.Layout != nil {
		return f.Layout
	}
	def := DefaultCounterLayout
	if f.Mode == SP800108Feedback {
		def = DefaultFeedbackLayout
	}
	l, err := ParseLayout(def)
	if err != nil {
		panic(err) // the defaults are constants
	}
	return l
}

func (f SP800108) checkBase(base *Key) error {
	switch f.PRF {
	case AESCMAC:
		if base.Type == pkcs11.CKK_AES {
			return nil
		}
		return &KeyError{Key: base.name(), Reason: ErrKeyType,
			Problem: fmt.Sprintf("%s with aes-cmac needs an AES key, the base key has type %s", f.Name(), ckm.KeyType(base.Type))}
	case DES3CMAC:
		if base.Type == pkcs11.CKK_DES2 || base.Type == pkcs11.CKK_DES3 {
			return nil
		}
		return &KeyError{Key: base.name(), Reason: ErrKeyType,
			Problem: fmt.Sprintf("%s with des3-cmac needs a DES2 or DES3 key, the base key has type %s", f.Name(), ckm.KeyType(base.Type))}
	default:
		if hmacKeyType(base.Type) {
			return nil
		}
		return &KeyError{Key: base.name(), Reason: ErrKeyType,
			Problem: fmt.Sprintf("%s with %s needs a generic secret (or AES, or CKK_SHA*_HMAC) key, the base key has type %s", f.Name(), f.PRF, ckm.KeyType(base.Type))}
	}
}

// hmacKeyType reports whether an HMAC PRF may be keyed with a key of type
// ckk: tokens differ in what they take, these are the types some token
// takes.
func hmacKeyType(ckk uint) bool {
	switch ckk {
	case pkcs11.CKK_GENERIC_SECRET, pkcs11.CKK_AES,
		pkcs11.CKK_SHA256_HMAC, pkcs11.CKK_SHA384_HMAC, pkcs11.CKK_SHA512_HMAC:
		return true
	}
	return false
}

func (f SP800108) validate(data []byte, out KeyType) error {
	if f.Mode != SP800108Counter && f.Mode != SP800108Feedback {
		return inputErr("mode", "unknown SP 800-108 mode %v (counter or feedback)", f.Mode)
	}
	h := f.PRF.Size()
	if h == 0 {
		return inputErr("prf", "unknown PRF %v (hmac-sha256, hmac-sha384, hmac-sha512, aes-cmac, des3-cmac)", f.PRF)
	}
	if f.Mode == SP800108Counter && len(f.IV) != 0 {
		return inputErr("iv", "%s takes no IV (only feedback mode does), got %d bytes", f.Name(), len(f.IV))
	}
	if f.Layout != nil && len(f.Layout) == 0 {
		return inputErr("layout", "empty layout")
	}
	var counters, chains, datas int
	counterBits := 32 // SP 800-108's bound when feedback mode has no counter
	for i, s := range f.layout() {
		bad := func(format string, args ...any) error {
			return inputErr("layout", "segment %d %q: %s", i+1, s.String(), fmt.Sprintf(format, args...))
		}
		switch s.Kind {
		case SegCounter:
			counters++
			if s.Bits != 8 && s.Bits != 16 && s.Bits != 24 && s.Bits != 32 {
				return bad("a counter is 8, 16, 24 or 32 bits wide")
			}
			counterBits = s.Bits
		case SegDKM:
			if s.Bits <= 0 || s.Bits > 64 || s.Bits%8 != 0 {
				return bad("a DKM length is 8 to 64 bits wide, in whole bytes")
			}
			if s.Bits < 64 && uint64(out.Len())*8 >= 1<<s.Bits {
				return bad("L = %d bits does not fit in %d bits", out.Len()*8, s.Bits)
			}
		case SegChain:
			chains++
			if f.Mode == SP800108Counter {
				return bad("counter mode has no chaining value (feedback mode only)")
			}
		case SegData:
			datas++
		case SegBytes:
			if len(s.Bytes) == 0 {
				return bad("no bytes")
			}
		default:
			return bad("unknown segment kind")
		}
	}
	switch {
	case f.Mode == SP800108Counter && counters != 1:
		return inputErr("layout", "counter mode needs exactly one counter segment, the layout %q has %d", f.layout().String(), counters)
	case f.Mode == SP800108Feedback && chains != 1:
		return inputErr("layout", "feedback mode needs exactly one chain segment, the layout %q has %d", f.layout().String(), chains)
	case f.Mode == SP800108Feedback && counters > 1:
		return inputErr("layout", "feedback mode takes at most one counter segment, the layout %q has %d", f.layout().String(), counters)
	}
	if len(data) > 0 && datas == 0 {
		return inputErr("data", "the layout %q has no data segment: the %d bytes of data would be ignored", f.layout().String(), len(data))
	}
	// SP 800-108: n = ceil(L/h) iterations, n <= 2^r - 1.
	n := (uint64(out.Len()) + uint64(h) - 1) / uint64(h)
	if n > 1<<counterBits-1 {
		return inputErr("layout", "a %d-byte key takes %d iterations of %s, more than a %d-bit counter counts", out.Len(), n, f.PRF, counterBits)
	}
	return nil
}

func (f SP800108) profile(p *Profile) {
	p.set("prf", f.PRF.String())
	p.set("layout", f.layout().String())
	p.setHex("iv", f.IV)
}

func init() {
	register(parseSP800108, "sp800-108-counter", "sp800-108-feedback")
}

func parseSP800108(name string, m map[string]string) (Function, error) {
	p := newParams(name, m)
	f := SP800108{Mode: SP800108Counter, PRF: HMACSHA256}
	if name == "sp800-108-feedback" {
		f.Mode = SP800108Feedback
	}
	if s := strings.ToLower(strings.TrimSpace(p.str("prf"))); s != "" {
		prf, ok := prfByName(s)
		if !ok {
			return nil, inputErr("prf", "unknown PRF %q (hmac-sha256, hmac-sha384, hmac-sha512, aes-cmac, des3-cmac)", s)
		}
		f.PRF = prf
	}
	l, err := ParseLayout(p.str("layout"))
	if err != nil {
		return nil, err
	}
	// The default layout reads back as nil, so that a profile (which
	// writes the layout in full) gives back the function it came from.
	if l.String() != f.layout().String() {
		f.Layout = l
	}
	iv, err := p.hex("iv")
	if err != nil {
		return nil, err
	}
	if len(iv) > 0 {
		f.IV = iv
	}
	if err := p.done(); err != nil {
		return nil, err
	}
	return f, nil
}

// What the native strategy asks of SP800108 (native.go).

func (f SP800108) mechanism() uint {
	if f.Mode == SP800108Feedback {
		return mechanisms.CKM_SP800_108_FEEDBACK_KDF
	}
	return mechanisms.CKM_SP800_108_COUNTER_KDF
}

func (f SP800108) nativeMechanisms() []uint { return []uint{f.mechanism()} }

func (f SP800108) nativeCalls([]byte) int { return 1 }

// dataParams is the layout as CK_PRF_DATA_PARAMs. An empty data segment
// is left out (it adds nothing to the PRF input, and a byte array must not
// be empty).
func (f SP800108) dataParams(data []byte) []mechanisms.PRFDataParam {
	var dps []mechanisms.PRFDataParam
	for _, s := range f.layout() {
		switch s.Kind {
		case SegCounter:
			cf := mechanisms.CounterFormat{LittleEndian: s.LittleEndian, WidthInBits: uint(s.Bits)}
			if f.Mode == SP800108Counter {
				dps = append(dps, mechanisms.IterationVariable{Format: &cf})
			} else {
				dps = append(dps, mechanisms.OptionalCounter{Format: cf})
			}
		case SegChain:
			dps = append(dps, mechanisms.IterationVariable{})
		case SegData:
			if len(data) > 0 {
				dps = append(dps, mechanisms.ByteArray(data))
			}
		case SegDKM:
			dps = append(dps, mechanisms.DKMLength{Method: mechanisms.CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS,
				LittleEndian: s.LittleEndian, WidthInBits: uint(s.Bits)})
		case SegBytes:
			dps = append(dps, mechanisms.ByteArray(s.Bytes))
		}
	}
	return dps
}

func (f SP800108) nativeParams(data []byte) mechanisms.Params {
	if f.Mode == SP800108Feedback {
		return &mechanisms.SP800108FeedbackKDFParams{PRFType: f.PRF.mechanism(), DataParams: f.dataParams(data), IV: f.IV}
	}
	return &mechanisms.SP800108KDFParams{PRFType: f.PRF.mechanism(), DataParams: f.dataParams(data)}
}
